"""Device placement and the few array operations the trainer does.

The only trainer module that touches array data. It works for arrays of any
Array API library through xpnet.backend's seam (`namespace`, `to_device`,
`asnumpy`, ...) and standard functions only. It must never branch on the array
library and never call array methods (``a.sum()``, ``a.astype()``: array_api_strict
arrays have none).
"""

from ..backend import asnumpy, device_of, dtype_name, namespace, to_device

__all__ = ["network_device", "network_dtype", "device_name", "default_log_every", "place",
           "indices_for", "take_batch", "read_back", "all_finite", "host_copy",
           "load_params"]

_ACCELERATOR_LOG_EVERY = 50   # each read-back is a device sync; batch them off the host
_DEVICE_DATA_LIMIT = 1 << 30  # copy data sets up to 1 GiB to the device once


def network_device(net):
    """The device of `net`: its own ``device`` (xpnet's nets) or its first parameter's."""
    return getattr(net, "device", None) or device_of(next(iter(net.params.values())))


def network_dtype(net):
    """The name ('float32', ...) of `net`'s dtype: its own ``dtype`` (xpnet's nets) or its
    first parameter's."""
    dt = getattr(net, "dtype", None)
    return dtype_name(dt if dt is not None else next(iter(net.params.values())).dtype)


def device_name(device):
    return getattr(device, "name", None) or str(device)


def _on_host(device):
    # Host memory (NumPy, torch:cpu, array_api_strict): reading a loss back is free.
    return getattr(device, "type", None) == "cpu"


def default_log_every(device):
    """Read losses back every step on the host (free), every 50 steps elsewhere."""
    return 1 if _on_host(device) else _ACCELERATOR_LOG_EVERY


def place(data, device, choice=None):
    """``(moved, data)``: the data sets copied to `device` once, or left where they are.
    Never on the host; by default when they total at most 1 GiB."""
    if _on_host(device):
        return False, tuple(data)
    if choice is None:
        choice = sum(getattr(a, "nbytes", 0) for a in data) <= _DEVICE_DATA_LIMIT
    if not choice:
        return False, tuple(data)
    return True, tuple(to_device(a, device) for a in data)


def indices_for(perm, data):
    """The host permutation `perm`, moved once per epoch to where each of `data` lives."""
    return tuple(to_device(perm, device_of(a)) for a in data)


def take_batch(data, indices, lo, hi, device):
    """Rows ``idx[lo:hi]`` of each of `data`, gathered where it lives, sent to `device`."""
    out = []
    for a, idx in zip(data, indices):
        xp = namespace(a)
        out.append(to_device(xp.take(a, idx[lo:hi], axis=0), device))
    return tuple(out)


def read_back(values):
    """Python floats from losses (numbers or 0-d arrays), with one transfer for all."""
    if all(isinstance(v, (int, float)) for v in values):
        return [float(v) for v in values]
    arrays = [v for v in values if not isinstance(v, (int, float))]
    xp = namespace(*arrays)
    stacked = xp.stack([xp.asarray(v) for v in values])
    return [float(v) for v in asnumpy(stacked)]


def all_finite(arrays):
    for a in arrays:
        xp = namespace(a)
        if not bool(xp.all(xp.isfinite(a))):
            return False
    return True


def host_copy(params):
    """Host NumPy copies of a dict of arrays (a book-style net's checkpoint state)."""
    return {k: asnumpy(v).copy() for k, v in params.items()}


def load_params(params, host_arrays, device):
    """Copy host arrays into a net's parameters in place (a book-style net's layers hold
    these very arrays), cast to each parameter's dtype. Checks names and shapes first."""
    if set(host_arrays) != set(params.keys()):
        raise ValueError("parameters %s in the file, %s in the network"
                         % (sorted(host_arrays), sorted(params.keys())))
    for k, a in host_arrays.items():
        if tuple(a.shape) != tuple(params[k].shape):
            raise ValueError("parameter %r: file has shape %s, the network %s"
                             % (k, tuple(a.shape), tuple(params[k].shape)))
    for k, a in host_arrays.items():
        p = params[k]
        xp = namespace(p)
        p[...] = xp.astype(to_device(a, device), p.dtype, copy=False)
