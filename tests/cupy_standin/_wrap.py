"""NumPy functions turned into the stand-in's: device arrays in, device arrays out."""
import functools
import types

import numpy

from ._array import cupy_would_wrap, ndarray, one_device, unwrap, wrap

# functions that copy host data to the device (CuPy takes NumPy arrays here only)
HOST_OK = {"asarray", "array", "asanyarray", "ascontiguousarray", "from_dlpack"}


def _device_kw(kwargs):
    from . import cuda
    if "device" not in kwargs:
        return None
    d = kwargs.pop("device")
    if d is None:
        return None
    if isinstance(d, cuda.Device):
        return d.id
    raise ValueError("the CuPy stand-in's device= must be one of its cupy.cuda.Device "
                     "objects, got %r" % (d,))


def function(fn, name):
    """`fn` (a NumPy or array-api-compat function) on stand-in arrays."""
    host_ok = name in HOST_OK

    @functools.wraps(fn)
    def call(*args, **kwargs):
        devs = set()
        dev = _device_kw(kwargs)
        out = kwargs.get("out")
        what = "argument of %s" % name
        host = [x for x in args if isinstance(x, numpy.ndarray)]
        a = unwrap(args, devs, host_ok, what)
        kw = {k: unwrap(v, devs, host_ok, what) for k, v in kwargs.items()}
        moved = dev is not None and bool(devs) and devs != {dev}
        if dev is None:
            dev = one_device(devs, name)
        with cupy_would_wrap():
            r = fn(*a, **kw)
        if out is not None:
            return out
        if isinstance(r, numpy.ndarray) and (moved or any(numpy.shares_memory(r, h)
                                                          for h in host)):
            r = r.copy()          # a copy to the device never aliases its source
        return wrap(r, dev)
    return call


class Namespace(types.ModuleType):
    """A module-like namespace whose functions are `base`'s, wrapped."""

    def __init__(self, name, base, extra=None):
        super().__init__(name)
        self._base = base
        self._cache = {}
        for k, v in (extra or {}).items():
            setattr(self, k, v)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        c = self._cache.get(name)
        if c is not None:
            return c
        attr = getattr(self._base, name)
        if isinstance(attr, types.ModuleType):
            c = Namespace(self.__name__ + "." + name, attr)
        elif isinstance(attr, type) or not callable(attr):
            c = attr               # dtypes, constants, classes
        else:
            c = function(attr, name)
        self._cache[name] = c
        return c


def is_standin(x):
    return isinstance(x, ndarray)
