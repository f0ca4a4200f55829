"""Arrays of any Array API library: which kind an array is, its namespace, moving it.

`device_of` is the one way xpnet asks "which kind?"; everything else takes the
namespace from its input (`namespace(x)`) and uses standard calls only. Arrays
cross devices through the host (`asnumpy`, DLPack where the library has it).
"""
import array_api_compat as _compat
import numpy

from . import devices as _devices
from .devices import CPU, Device, _parse, load_library

__all__ = ["namespace", "get_array_module", "kind_of", "device_of", "is_array", "asnumpy",
           "to_device", "synchronize", "dtype_name", "is_floating", "is_numeric", "native_device", "placement",
           "host_zeros", "on_host"]


_KINDS = {numpy.ndarray: "numpy"}      # array type -> library (cached: asked every layer call)
_LIBRARY_OF_MODULE = {"numpy": "numpy", "cupy": "cupy", "torch": "torch",
                      "array_api_strict": "array_api_strict"}


def _kind(x):
    t = type(x)
    k = _KINDS.get(t)
    if k is None and t not in _KINDS:
        k = _LIBRARY_OF_MODULE.get(t.__module__.partition(".")[0])
        if k == "numpy" and not isinstance(x, numpy.ndarray):
            k = None                     # NumPy scalars are values, not arrays
        if k == "torch" and not _compat.is_torch_array(x):
            k = None
        _KINDS[t] = k
    return k


def kind_of(x):
    """The library holding `x`: ``'numpy'``, ``'cupy'``, ``'torch'`` or
    ``'array_api_strict'`` (anything else, such as a list, counts as host data: 'numpy')."""
    return _kind(x) or "numpy"


def is_array(x):
    """True for an array of a library xpnet knows (NumPy, CuPy, PyTorch, array_api_strict)."""
    return _kind(x) is not None


def namespace(*arrays):
    """The Array API namespace of `arrays` (array-api-compat's wrapper for NumPy, CuPy
    and PyTorch; array_api_strict itself). Non-arrays (lists, scalars) are ignored;
    none at all gives NumPy's."""
    types = {type(a) for a in arrays if is_array(a)}
    if len(types) == 1:                   # the usual case, asked on every layer call
        t = types.pop()
        ns = _NAMESPACES.get(t)
        if ns is None:
            ns = _NAMESPACES[t] = _compat.array_namespace(*[a for a in arrays if is_array(a)])
        return ns
    if not types:
        return _compat.array_namespace(numpy.empty(0))
    return _compat.array_namespace(*[a for a in arrays if is_array(a)])


_NAMESPACES = {}


get_array_module = namespace


def _reference_flag(library):
    stack = getattr(_devices._local, "stack", None)
    dev = stack[-1] if stack else _devices._default
    return bool(dev is not None and dev.library == library and dev.reference)


def device_of(x):
    """The `Device` an array lives on (a reference device if the current one is the
    reference device of the same library)."""
    lib = kind_of(x)
    if lib == "numpy":
        return Device("cpu", reference=True) if _reference_flag("numpy") else CPU
    if lib == "cupy":
        return Device("gpu", x.device.id, _reference_flag("cupy"))
    if lib == "torch":
        d = x.device
        return Device("torch", d.index or 0, _reference_flag("torch"), type=d.type)
    return Device("array-api-strict", reference=_reference_flag("array_api_strict"))


def placement(x):
    """`x`'s device as its own library names it (for ``device=`` arguments)."""
    return _compat.device(x)


def native_device(dev):
    """What `dev` is called by its own library (for ``device=`` arguments)."""
    if dev.library == "cupy":
        return load_library("cupy").cuda.Device(dev.id)
    if dev.library == "torch":
        return load_library("torch").device(dev.type, dev.id) if dev.type == "cuda" \
            else load_library("torch").device(dev.type)
    if dev.library == "array_api_strict":
        return None
    return "cpu"


def asnumpy(x):
    """A host NumPy array of `x` (`x` itself when it already is one; may share memory)."""
    if isinstance(x, numpy.ndarray):
        return x
    lib = kind_of(x)
    if lib == "cupy":
        return x.get()
    if lib == "torch":
        return x.detach().cpu().numpy()
    if lib == "array_api_strict":
        return numpy.from_dlpack(x)
    return numpy.asarray(x)


def to_device(x, device=None):
    """Move an array, a dict/list/tuple of arrays, or anything with ``.to(device)``
    (nets, optimizers) to `device`. Arrays already there are returned as they are."""
    dev = _parse(device)
    if not is_array(x) and hasattr(x, "to") and callable(x.to):
        return x.to(dev)
    if isinstance(x, dict):
        return {k: to_device(v, dev) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if any(is_array(v) or isinstance(v, dict) or hasattr(v, "to") for v in x):
            return type(x)(to_device(v, dev) for v in x)
        x = numpy.asarray(x)        # plain numbers: one array
    lib = kind_of(x)
    if lib == dev.library and _same_place(x, dev):
        return x
    host = asnumpy(x)
    if dev.library == "numpy":
        return host
    if dev.library == "cupy":
        cp = load_library("cupy")
        with cp.cuda.Device(dev.id):
            return cp.asarray(host)
    if dev.library == "torch":
        torch = load_library("torch")
        return torch.as_tensor(host, device=native_device(dev))
    return load_library("array_api_strict").asarray(host)


def _same_place(x, dev):
    if dev.library == "cupy":
        return x.device.id == dev.id
    if dev.library == "torch":
        return x.device.type == dev.type and (dev.type != "cuda" or x.device.index == dev.id)
    return True


def synchronize(where=None):
    """Wait for queued device work (`where`: a Device, an array or None for every
    GPU library in use); a no-op on the CPU."""
    if isinstance(where, Device):
        libs = [where.library]
    elif is_array(where):
        libs = [kind_of(where)]
    elif where is not None and hasattr(where, "__name__"):   # a module such as cupy
        libs = [where.__name__.rsplit(".", 1)[-1]]
    else:
        libs = ["cupy", "torch"]
    for lib in libs:
        mod = _devices._loaded.get(lib)    # never imports a library just to wait on it
        if lib == "cupy" and mod is not None and _devices.gpu_available()[0]:
            mod.cuda.get_current_stream().synchronize()
        elif lib == "torch" and mod is not None and mod.cuda.is_initialized():
            mod.cuda.synchronize()


def dtype_name(dtype):
    """``'float32'``, ``'int64'`` ... for a dtype of any library."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str) and not name.startswith("torch"):
        return name
    return str(dtype).rsplit(".", 1)[-1]


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
    """True when `x`'s memory is the host's (NumPy, torch on the CPU, array_api_strict):
    reading its values costs no device synchronisation."""
    return not is_array(x) or device_of(x).type == "cpu"
