"""Device placement and the few array operations the trainer does.

The only trainer module that touches array data. It works for arrays of any
Array API library through xpnet.backend's seam (`namespace`, `to_device`,
`asnumpy`, ...) and standard functions only. It must never branch on the array
library and never call array methods (``a.sum()``, ``a.astype()``: array_api_strict
arrays have none).
"""

import inspect

from ..nets import Sequential
from ..backend import asnumpy, device_of, dtype_name, is_floating, namespace, to_device

__all__ = ["network_device", "network_dtype", "device_name", "default_log_every", "place",
           "indices_for", "take_batch", "read_back", "all_finite", "first_non_finite", "host_copy",
           "load_params", "output_size", "label_problem", "stored_array_problem",
           "permutation_problem", "host_int_array"]

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


def first_non_finite(named):
    """The name of the first array in the dict `named` holding a NaN or an infinity, or None."""
    for k, a in named.items():
        if not all_finite([a]):
            return k
    return None


def host_copy(params):
    """Host NumPy copies of a dict of arrays (a book-style net's checkpoint state)."""
    return {k: asnumpy(v).copy() for k, v in params.items()}


def load_params(params, host_arrays, device):
    """Copy host arrays into a net's parameters (see `_store`), cast to each
    parameter's dtype. Checks names and shapes first."""
    if set(host_arrays) != set(params.keys()):
        raise ValueError("parameters %s in the file, %s in the network"
                         % (sorted(host_arrays), sorted(params.keys())))
    for k, a in host_arrays.items():
        if tuple(a.shape) != tuple(params[k].shape):
            raise ValueError("parameter %r: file has shape %s, the network %s"
                             % (k, tuple(a.shape), tuple(params[k].shape)))
    for k, a in host_arrays.items():
        p = params[k]
        _store(params, k, namespace(p).astype(to_device(a, device), p.dtype))


def _store(params, k, value):
    """``params[k] = value``. A plain dict (a book-style net) is written in place where
    its arrays allow it, because the net's layers hold these very arrays; an xpnet net's
    ``params`` rebinds its layers' arrays, which immutable arrays (JAX) need."""
    p = params[k]
    if isinstance(params, dict) and device_of(p).mutable:
        p[...] = value
    else:
        params[k] = value


# ------------------------------------------------------------------ checks on data
# Each returns None, or what is wrong as text for the caller's error message.

def output_size(net, x_sample):
    """The number of classes `net` predicts: its ``config['output_size']`` (xpnet's nets),
    else the width of ``net.predict`` on one sample, else None (not known)."""
    n = (getattr(net, "config", None) or {}).get("output_size")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    predict = getattr(net, "predict", None)
    if predict is None:
        return None
    try:
        y = predict(x_sample)
    except Exception:       # a book-style net with its own idea of predict: don't guess
        return None
    shape = tuple(getattr(y, "shape", ()))
    return int(shape[-1]) if len(shape) == 2 else None


def _index(i, shape):
    """Flat index `i` as ``[r]`` or ``[r, c]``."""
    if len(shape) == 1:
        return "[%d]" % i
    return "[%d, %d]" % (i // shape[1], i % shape[1])


def _first(xp, bad):
    """The flat index of the first True in `bad` (one read-back), or None."""
    flat = xp.reshape(bad, (-1,))
    if not bool(xp.any(flat)):
        return None
    return int(xp.argmax(xp.astype(flat, xp.int8)))


def label_problem(t, n_classes, name):
    """Checks labels once, where they are: integer class indices in ``[0, n_classes)``
    (`n_classes` None: only >= 0), or one-hot/soft rows of `n_classes` values in [0, 1]."""
    xp = namespace(t)
    shape = tuple(t.shape)
    if len(shape) == 1:
        if not xp.isdtype(t.dtype, "integral"):
            return ("%s must hold integer class labels (or one-hot rows), got dtype %s"
                    % (name, dtype_name(t.dtype)))
        bad = t < 0 if n_classes is None else (t < 0) | (t >= n_classes)
        i = _first(xp, bad)
        if i is not None:
            flat = xp.reshape(t, (-1,))
            return ("%s%s = %d is not a class label: labels must be in [0, %s)%s"
                    % (name, _index(i, shape), int(flat[i]),
                       "n_classes" if n_classes is None else n_classes,
                       "" if n_classes is None else " (the network has %d outputs)" % n_classes))
        return None
    if len(shape) == 2:
        if n_classes is not None and shape[1] != n_classes:
            return ("%s has one-hot rows of %d values, but the network has %d outputs"
                    % (name, shape[1], n_classes))
        if not xp.isdtype(t.dtype, ("integral", "real floating")):
            return ("%s must hold one-hot or soft targets (real numbers), got dtype %s"
                    % (name, dtype_name(t.dtype)))
        i = _first(xp, ~((t >= 0) & (t <= 1)))      # NaN fails both comparisons
        if i is not None:
            flat = xp.reshape(t, (-1,))
            return ("%s%s = %r is not a one-hot or soft target value: they must be in [0, 1]"
                    % (name, _index(i, shape), float(flat[i])))
        return None
    return ("%s must be 1-D class labels or 2-D one-hot rows, got shape %s"
            % (name, shape))


def stored_array_problem(a, shape=None):
    """A floating-point array loaded from a checkpoint: dtype, shape, finiteness."""
    if not is_floating(a):
        return "has dtype %s; expected floating-point numbers" % dtype_name(a.dtype)
    if shape is not None and tuple(a.shape) != tuple(shape):
        return "has shape %s; expected %s" % (tuple(a.shape), tuple(shape))
    if not all_finite([a]):
        return "holds NaN or infinite values"
    return None


def permutation_problem(perm, n):
    """`perm` must hold each of ``0..n-1`` exactly once (a shuffled epoch's order)."""
    shape = tuple(getattr(perm, "shape", ()))
    xp = namespace(perm)
    if len(shape) != 1 or not xp.isdtype(perm.dtype, "integral"):
        return ("must be a 1-D integer array, got dtype %s and shape %s"
                % (dtype_name(perm.dtype), shape))
    if shape[0] != n:
        return "has %d entries; expected %d (train_size)" % (shape[0], n)
    i = _first(xp, (perm < 0) | (perm >= n))
    if i is not None:
        return "holds %d at index %d, outside [0, %d)" % (int(perm[i]), i, n)
    s = xp.sort(perm)
    i = _first(xp, s != xp.arange(n, dtype=s.dtype))
    if i is not None:
        # s[:i] is 0..i-1, so s[i] is either i-1 again (a repeat) or past a missing i
        v = int(s[i])
        if v < i:
            return ("is not a permutation of 0..%d: %d appears %d times"
                    % (n - 1, v, int(xp.sum(xp.astype(perm == v, xp.int64)))))
        return "is not a permutation of 0..%d: %d is missing" % (n - 1, i)
    return None


def host_int_array(a):
    """A host NumPy int64 copy of a checked permutation."""
    return asnumpy(a).astype("int64", copy=True)


def accuracy_function(network):
    """``f(x, t, batch_size) -> fraction correct`` for `network`, chosen once, up front.

    Nets with a ``predict`` are measured here, in batches with the remainder included:
    the book's convnets' own ``accuracy`` drops a last partial batch (a 999-image test
    set scores as if it had 900), and its TwoLayerNet's takes no ``batch_size``. A net
    with only an ``accuracy`` is called with ``batch_size`` if its signature has one.
    xpnet's own nets count every image in their ``accuracy``, which is used as it is."""
    if isinstance(network, Sequential):
        return lambda x, t, batch_size: network.accuracy(x, t, batch_size=batch_size)
    predict = getattr(network, "predict", None)
    if callable(predict):
        return lambda x, t, batch_size: _accuracy_by_predict(predict, x, t, batch_size)
    acc = getattr(network, "accuracy", None)
    if not callable(acc):
        raise TypeError("Trainer: the network needs a predict(x) or an accuracy(x, t) method; "
                        "%s has neither" % type(network).__name__)
    try:
        takes_batch = "batch_size" in inspect.signature(acc).parameters
    except (TypeError, ValueError):
        takes_batch = False
    if takes_batch:
        return lambda x, t, batch_size: float(acc(x, t, batch_size=batch_size))
    return lambda x, t, batch_size: float(acc(x, t))


def _accuracy_by_predict(predict, x, t, batch_size):
    n = int(x.shape[0])
    correct = 0
    for i in range(0, n, batch_size):
        e = min(i + batch_size, n)
        y = predict(x[i:e, ...])
        xp = namespace(y)
        tt = to_device(t[i:e, ...], device_of(y))
        if tt.ndim != 1:
            tt = namespace(tt).argmax(tt, axis=1)
        hit = xp.argmax(y, axis=1) == xp.astype(tt, xp.int64)
        correct += int(xp.sum(xp.astype(hit, xp.int64)))
    return correct / n
