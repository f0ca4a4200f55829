"""Arrays of any Array API library: which library an array belongs to, its namespace,
moving it.

`backend_of` matches an array to its registered `Backend` class (latest registered
first; the answer is cached per array type). An array of a library with no class,
whose namespace array-api-compat knows, runs through a `GenericBackend` on the
reference kernels when it speaks DLPack, and is refused with a DeviceError
otherwise: nothing is ever turned into NumPy without a word. `device_of` is the one
way xpnet asks "where?"; everything else takes the namespace from its input
(`namespace(x)`) and uses standard calls only. Arrays cross devices through the host.
"""
import array_api_compat as _compat
import numpy

from . import devices as _devices
from .base import GenericBackend, RefusedBackend
from .devices import Device, DeviceError, _parse

__all__ = ["namespace", "get_array_module", "kind_of", "device_of", "is_array", "asnumpy",
           "to_device", "synchronize", "dtype_name", "is_floating", "is_numeric", "native_device",
           "placement", "host_zeros", "on_host", "backend_of"]

_BY_TYPE = {}       # array type -> Backend, or None for non-arrays (asked every layer call)
_NAMESPACES = {}


def _clear():
    _BY_TYPE.clear()
    _NAMESPACES.clear()
    _devices._generic.clear()


_devices._on_change.append(_clear)


def _classify(x):
    for b in _devices.registered():
        if b.owns(x):
            return b
    if isinstance(x, (numpy.generic, bool, int, float, complex, str, bytes, list, tuple, dict)):
        return None
    try:
        ns = _compat.array_namespace(x)
    except TypeError:
        return None                  # not an array
    mod = type(x).__module__.partition(".")[0]
    supported = ", ".join(b.name for b in _devices.registered()[::-1])
    if not hasattr(x, "__dlpack__"):
        b = RefusedBackend(mod, ns, type(x).__name__, "it has no DLPack (__dlpack__) to reach "
                           "the host by", supported)
    else:
        b = GenericBackend(mod, ns)
    return _devices._generic.setdefault(mod, b)


def backend_of(x):
    """The `Backend` of array `x`, or None when `x` is not an array (lists, numbers)."""
    t = type(x)
    try:
        return _BY_TYPE[t]
    except KeyError:
        b = _BY_TYPE[t] = _classify(x)
        return b


def kind_of(x):
    """The library holding `x` (its backend's name: ``'numpy'``, ``'cupy'``, ``'torch'``,
    ``'array_api_strict'``, ``'jax'`` ...); anything that is not an array, such as a list,
    counts as host data: ``'numpy'``."""
    b = backend_of(x)
    return (b or _devices.CPU.backend).name


def is_array(x):
    """True for an array of any library (one that xpnet refuses included)."""
    return backend_of(x) is not None


def namespace(*arrays):
    """The Array API namespace of `arrays` (array-api-compat's wrapper for NumPy, CuPy
    and PyTorch; array_api_strict and jax.numpy themselves). Non-arrays (lists, scalars)
    are ignored; none at all gives NumPy's."""
    types = {type(a) for a in arrays if is_array(a)}
    if len(types) == 1:                   # the usual case, asked on every layer call
        t = types.pop()
        ns = _NAMESPACES.get(t)
        if ns is None:
            ns = _NAMESPACES[t] = backend_of(next(a for a in arrays if is_array(a))).namespace()
        return ns
    if not types:
        return _devices.CPU.namespace
    for a in arrays:
        if is_array(a):
            backend_of(a).namespace()       # a refused library says so
    return _compat.array_namespace(*[a for a in arrays if is_array(a)])


get_array_module = namespace


def _reference_flag(dev):
    stack = getattr(_devices._local, "stack", None)
    cur = stack[-1] if stack else _devices._default
    return bool(cur is not None and cur.reference and cur._key()[:3] == dev._key()[:3])


def device_of(x):
    """The `Device` an array lives on (a reference device if the current one is the
    reference device of the same place). Non-arrays are host data: the CPU."""
    b = backend_of(x)
    dev = b.device_of(x) if b is not None else _devices.CPU
    if _reference_flag(dev):
        dev = Device(dev.kind, dev.id, True, type=dev.type)
    return dev


def placement(x):
    """`x`'s device as its own library names it (for ``device=`` arguments)."""
    return _compat.device(x)


def native_device(dev):
    """What `dev` is called by its own library (for ``device=`` arguments)."""
    return dev.backend.native(dev)


def asnumpy(x):
    """A host NumPy array of `x` (`x` itself when it already is one; may share memory).
    Lists and numbers become arrays; an array of a refused library raises DeviceError."""
    if isinstance(x, numpy.ndarray):
        return x
    b = backend_of(x)
    return numpy.asarray(x) if b is None else b.to_host(x)


def to_device(x, device=None):
    """Move an array, a dict/list/tuple of arrays, or anything with ``.to(device)``
    (nets, optimizers) to `device`. Arrays already there are returned as they are.
    float64 data for a device without float64 is a DeviceError that says what to do."""
    dev = _parse(device)
    if not is_array(x) and hasattr(x, "to") and callable(x.to):
        return x.to(dev)
    if isinstance(x, dict):
        return {k: to_device(v, dev) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if any(is_array(v) or isinstance(v, dict) or hasattr(v, "to") for v in x):
            return type(x)(to_device(v, dev) for v in x)
        x = numpy.asarray(x)        # plain numbers: one array
    src = backend_of(x)
    target = dev.backend
    if src is None:
        x, src = numpy.asarray(x), _devices.CPU.backend
    if src is target and src.same_place(x, dev):
        return x
    host = src.to_host(x)
    if host.dtype == numpy.float64 and "float64" not in dev.dtypes:
        raise DeviceError(
            "%s. It can't hold this float64 array: use float32 on it (build the net with "
            "dtype='float32', or call net.astype('float32') before net.to(%r), and give it "
            "float32 data); checking gradients needs float64: run numerical_gradient and "
            "gradient checks on a device with float64, such as cpu"
            % (target.no_float64(dev), dev.name))
    return target.from_host(host, dev)


def synchronize(where=None):
    """Wait for queued device work (`where`: a Device, an array, a library module, or None
    for every library in use); a no-op on the CPU. Never imports a library to wait on it."""
    if isinstance(where, Device):
        where.backend.synchronize(where)
    elif is_array(where):
        backend_of(where).synchronize(device_of(where), where)
    else:
        mod = getattr(where, "__name__", None)
        for b in _devices.registered():
            if where is None or mod in (b.module, b.name):
                b.synchronize(None)


def dtype_name(dtype):
    """``'float32'``, ``'int64'`` ... for a dtype of any library."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str) and "." not in name:
        return name
    return str(dtype).rsplit(".", 1)[-1]          # 'torch.float32', 'array_api_strict.int64'


def is_floating(x):
    """True when `x` holds real floating-point numbers."""
    key = (type(x), x.dtype)
    f = _FLOATING.get(key)
    if f is None:
        f = _FLOATING[key] = bool(namespace(x).isdtype(x.dtype, "real floating"))
    return f


_FLOATING = {}


def is_numeric(x):
    """True when `x` holds real numbers (integers or floats; not bool, complex, str)."""
    if isinstance(x, numpy.ndarray):      # NumPy also has str and object arrays
        return x.dtype.kind in "iuf"
    return namespace(x).isdtype(x.dtype, ("integral", "real floating"))


def host_zeros(shape, dtype="float64"):
    """A host NumPy array of zeros (for building parameters before they are moved)."""
    return numpy.zeros(shape, dtype=dtype)


def on_host(x):
    """True when `x`'s memory is the host's (NumPy, torch on the CPU, array_api_strict,
    JAX on the CPU): reading its values costs no device synchronisation."""
    return not is_array(x) or device_of(x).type == "cpu"
