"""ndarray of the CuPy stand-in: a NumPy array that behaves as a device array.

Like a cupy.ndarray it lives on one device (``.device``), refuses implicit
conversion to NumPy (``numpy.asarray(x)`` raises; ``.get()`` copies to the
host), refuses NumPy arrays as operands, and refuses operands on another device.
"""
import contextlib
import operator
import weakref

import numpy

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


def _current():
    from . import cuda
    return cuda.Device().id


def wrap(a, dev=None):
    """A stand-in array of host data `a` (NumPy arrays and scalars), without copying."""
    if isinstance(a, numpy.generic):
        a = numpy.asarray(a)
    if isinstance(a, numpy.ndarray):
        if a.dtype == object:
            raise TypeError("the CuPy stand-in (like CuPy) has no object arrays")
        return ndarray._new(a, _current() if dev is None else dev)
    if isinstance(a, tuple):
        return tuple(wrap(v, dev) for v in a)
    if isinstance(a, list):
        return [wrap(v, dev) for v in a]
    return a


def unwrap(v, devs, allow_host=False, what="operand"):
    """The NumPy value of an operand; stand-in arrays record their device in `devs`.
    A NumPy array is refused as CuPy refuses it (unless `allow_host`)."""
    if isinstance(v, ndarray):
        devs.add(v._dev)
        return v._a
    if isinstance(v, numpy.ndarray) and not allow_host:
        raise TypeError("Unsupported type <class 'numpy.ndarray'> (%s): the CuPy stand-in, "
                        "like CuPy, takes no host arrays; move them with cupy.asarray" % what)
    if isinstance(v, (tuple, list)):
        return type(v)(unwrap(u, devs, allow_host, what) for u in v)
    if isinstance(v, slice):
        return slice(*(unwrap(u, devs, allow_host, what) for u in (v.start, v.stop, v.step)))
    return v


@contextlib.contextmanager
def cupy_would_wrap():
    """NumPy's IndexError for an out-of-bounds integer index, saying what CuPy does."""
    try:
        yield
    except IndexError as e:
        raise IndexError("%s (CuPy raises nothing here: it wraps out-of-bounds integer array "
                         "indices, a silently wrong answer on a GPU)" % e) from None


def one_device(devs, what):
    if len(devs) > 1:
        raise ValueError("%s: arrays on devices %s; the CuPy stand-in, like CuPy without peer "
                         "access, refuses to mix devices" % (what, sorted(devs)))
    return devs.pop() if devs else _current()


class _Flags:
    def __init__(self, a):
        self._f = a.flags

    @property
    def c_contiguous(self):
        return self._f.c_contiguous

    @property
    def f_contiguous(self):
        return self._f.f_contiguous

    @property
    def owndata(self):
        return self._f.owndata

    def __getitem__(self, k):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[k]


class _Pointer:
    def __init__(self, a, dev):
        self.ptr, self.device_id = a.ctypes.data, dev


def _binary(op, reflected=False):
    def method(self, other):
        devs = {self._dev}
        o = unwrap(other, devs)
        dev = one_device(devs, op.__name__)
        r = op(o, self._a) if reflected else op(self._a, o)
        return wrap(r, dev)
    return method


def _inplace(op):
    def method(self, other):
        devs = {self._dev}
        o = unwrap(other, devs)
        one_device(devs, op.__name__)
        op(self._a, o)
        return self
    return method


def _unary(op):
    def method(self):
        return wrap(op(self._a), self._dev)
    return method


class ndarray:
    """A device array of the CuPy stand-in (host memory, device semantics)."""
    __slots__ = ("_a", "_dev", "__weakref__")
    __array_ufunc__ = None          # numpy ufuncs defer to (and so refuse) stand-in arrays
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = numpy.empty(shape, dtype=dtype, order=order)
        self._dev = _current()
        from .cuda import pool
        pool._alloc(self._a.nbytes)
        weakref.finalize(self, pool._free, self._a.nbytes)

    @classmethod
    def _new(cls, a, dev):
        obj = cls.__new__(cls)
        obj._a, obj._dev = a, dev
        if a.base is None and a.nbytes:          # owns its memory: the pool counts it
            from .cuda import pool
            pool._alloc(a.nbytes)
            weakref.finalize(obj, pool._free, a.nbytes)
        return obj

    # -- what CuPy adds to NumPy's array
    @property
    def device(self):
        from . import cuda
        return cuda.Device(self._dev)

    def get(self, stream=None, order="C", out=None):
        """A host copy (``cupy.ndarray.get``)."""
        if out is not None:
            out[...] = self._a
            return out
        return numpy.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        self._a[...] = arr

    @property
    def data(self):
        return _Pointer(self._a, self._dev)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_namespace__(self, api_version=None):
        from .array_api import namespace
        return namespace

    def to_device(self, device, stream=None):
        from . import cuda
        if not isinstance(device, cuda.Device):
            raise ValueError("the CuPy stand-in moves arrays between its devices only, got %r"
                             % (device,))
        return self if device.id == self._dev else wrap(self._a.copy(), device.id)

    def __dlpack__(self, **kw):
        raise BufferError("the CuPy stand-in has no DLPack export; use .get()")

    def __dlpack_device__(self):
        return (2, self._dev)          # kDLCUDA

    # -- NumPy's array attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: wrap(self._a.T, self._dev))
    mT = property(lambda self: wrap(numpy.swapaxes(self._a, -1, -2), self._dev))
    base = property(lambda self: None if self._a.base is None else wrap(self._a.base, self._dev))

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return "standin_array(%s, device=%d)" % (numpy.array2string(self._a), self._dev)

    __str__ = __repr__

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key):
        devs = {self._dev}
        k = unwrap(key, devs, what="index")
        one_device(devs, "__getitem__")
        with cupy_would_wrap():
            return wrap(self._a[k], self._dev)

    def __setitem__(self, key, value):
        devs = {self._dev}
        k = unwrap(key, devs, what="index")
        v = unwrap(value, devs, allow_host=True)
        one_device(devs, "__setitem__")
        self._a[k] = v

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return operator.index(self._a)

    def __complex__(self):
        return complex(self._a)

    def item(self, *args):
        return self._a.item(*args)

    def tolist(self):
        return self._a.tolist()

    def __hash__(self):
        raise TypeError("unhashable type: 'ndarray'")

    def __getattr__(self, name):
        """NumPy's array methods (reshape, astype, sum, copy, ...), results on this device."""
        if name.startswith("__") or name in ("ctypes", "tobytes", "tofile", "dump", "dumps",
                                             "__array_interface__"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return wrap(attr, self._dev)

        def method(*args, **kwargs):
            devs = {self._dev}
            out = kwargs.get("out")
            a = unwrap(args, devs, what="argument of ndarray.%s" % name)
            kw = {k: unwrap(v, devs, what="argument of ndarray.%s" % name)
                  for k, v in kwargs.items()}
            dev = one_device(devs, "ndarray." + name)
            r = attr(*a, **kw)
            return out if out is not None else wrap(r, dev)
        return method

    def __copy__(self):
        return wrap(self._a.copy(), self._dev)

    def __deepcopy__(self, memo):
        return wrap(self._a.copy(), self._dev)

    def __reduce__(self):
        raise TypeError("the CuPy stand-in's arrays are not pickled here (a device array "
                        "would be copied to the host first)")

    # -- operators
    __add__, __radd__ = _binary(operator.add), _binary(operator.add, True)
    __sub__, __rsub__ = _binary(operator.sub), _binary(operator.sub, True)
    __mul__, __rmul__ = _binary(operator.mul), _binary(operator.mul, True)
    __truediv__, __rtruediv__ = _binary(operator.truediv), _binary(operator.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv), _binary(operator.floordiv, True)
    __mod__, __rmod__ = _binary(operator.mod), _binary(operator.mod, True)
    __pow__, __rpow__ = _binary(operator.pow), _binary(operator.pow, True)
    __matmul__, __rmatmul__ = _binary(operator.matmul), _binary(operator.matmul, True)
    __and__, __rand__ = _binary(operator.and_), _binary(operator.and_, True)
    __or__, __ror__ = _binary(operator.or_), _binary(operator.or_, True)
    __xor__, __rxor__ = _binary(operator.xor), _binary(operator.xor, True)
    __lshift__, __rlshift__ = _binary(operator.lshift), _binary(operator.lshift, True)
    __rshift__, __rrshift__ = _binary(operator.rshift), _binary(operator.rshift, True)
    __lt__, __le__ = _binary(operator.lt), _binary(operator.le)
    __gt__, __ge__ = _binary(operator.gt), _binary(operator.ge)
    __eq__, __ne__ = _binary(operator.eq), _binary(operator.ne)
    __iadd__, __isub__ = _inplace(operator.iadd), _inplace(operator.isub)
    __imul__, __itruediv__ = _inplace(operator.imul), _inplace(operator.itruediv)
    __ifloordiv__, __imod__ = _inplace(operator.ifloordiv), _inplace(operator.imod)
    __ipow__, __imatmul__ = _inplace(operator.ipow), _inplace(operator.imatmul)
    __iand__, __ior__, __ixor__ = (_inplace(operator.iand), _inplace(operator.ior),
                                   _inplace(operator.ixor))
    __neg__, __pos__ = _unary(operator.neg), _unary(operator.pos)
    __abs__, __invert__ = _unary(operator.abs), _unary(operator.invert)
