"""The book's pickled parameter files (``deep_convnet_params.pkl``, ``params.pkl``), read
without running pickle's code.

The book saves a net's ``params`` dict with `pickle`. A pickle can call any function while it
loads, so xpnet never hands one to `pickle.load` as it is: this module's unpickler resolves
only the few names a pickled dict of NumPy arrays needs (the array and dtype rebuilders) and
refuses every other global, before anything is called. What comes out is checked too: a
dict of str -> real-number arrays, nothing else. Convert such a file once with
``xpnet convert old.pkl new.npz``, and keep the ``.npz``.
"""
import io
import os
import pickle

from . import backend
from .files import open_regular

__all__ = ["load_book_params", "is_pickle", "fold_book_dropout", "BOOK_PICKLE_MAX_BYTES"]

BOOK_PICKLE_MAX_BYTES = 1 << 30     # the book's largest file is 3.5 MB

np = backend.load_library("numpy")

# (module, name) -> the callable used instead; anything else is refused.
_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


class _NdarrayName:
    """What the pickle's ``numpy.ndarray`` resolves to: a name to pass to _reconstruct,
    never a callable (``ndarray((10**10,))`` would allocate whatever it is told)."""


def _rebuild_array(cls, shape, typecode):
    if cls is not _NdarrayName:
        raise pickle.UnpicklingError("only plain NumPy arrays are accepted, not %r" % (cls,))
    if tuple(shape) != (0,):     # NumPy pickles start empty; the data comes with its size
        raise pickle.UnpicklingError("unexpected array shell of shape %r" % (shape,))
    return np.ndarray.__new__(np.ndarray, (0,), typecode)


def _make_dtype(spec, align=False, copy=False):
    dt = np.dtype(spec)
    if dt.kind not in "biuf":
        raise pickle.UnpicklingError("dtype %s is refused: only real numbers are loaded" % dt)
    return dt


def _from_buffer(buf, dtype, shape, order="C"):
    # protocol 5 writes arrays as numpy's _frombuffer(bytes, dtype, shape, order). Only
    # bytes that came from the file are taken: bytes(n) of an int n would allocate n.
    if not isinstance(buf, (bytes, bytearray)):
        raise pickle.UnpicklingError("_frombuffer needs the array's bytes, got %s"
                                     % type(buf).__name__)
    dt = _make_dtype(dtype)
    try:
        return np.frombuffer(buf, dtype=dt).reshape(shape, order=order).copy()
    except (ValueError, TypeError) as e:
        raise pickle.UnpicklingError("_frombuffer: %d bytes don't make a %s array of shape "
                                     "%r (%s)" % (len(buf), dt, shape, e)) from None


def _latin1_bytes(text, encoding="latin1"):
    # protocol 2 writes bytes as _codecs.encode(text, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode(%r, %r)" % (type(text), encoding))
    return text.encode("latin1")


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _RECONSTRUCT:
            return _rebuild_array
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) in _FROMBUFFER:
            return _from_buffer
        if module == "numpy" and name == "ndarray":
            return _NdarrayName
        if module == "numpy" and name == "dtype":
            return _make_dtype
        raise pickle.UnpicklingError(
            "refusing %s.%s: a parameter file may hold NumPy arrays, dicts, lists and numbers "
            "only (this pickle would run code)" % (module, name))


# The first byte of a pickled dict: PROTO (protocol 2 and later), EMPTY_DICT
# (protocol 1) or MARK before DICT (protocol 0).
_PICKLE_STARTS = (b"\x80", b"}", b"(")


def is_pickle(path):
    """True when the file starts like a pickled dict (any protocol, 0 to 5). A file
    that is not a regular file is a ValueError (a FIFO would block)."""
    with open_regular(path, "parameter file") as f:
        return f.read(1) in _PICKLE_STARTS


def load_book_params(path):
    """``{name: host array}`` from a pickled dict of NumPy arrays, as the book writes them.
    Anything else, and any file that would run code while loading, is a ValueError."""
    path = os.fspath(path)
    with open_regular(path, "parameter pickle") as f:
        size = os.fstat(f.fileno()).st_size
        if size > BOOK_PICKLE_MAX_BYTES:
            raise ValueError("%s: %d bytes is more than a parameter pickle may be (%d)"
                             % (path, size, BOOK_PICKLE_MAX_BYTES))
        data = f.read(size + 1)        # read(n) sets aside n bytes first
    try:
        obj = _ArraysOnly(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise ValueError("%s: %s" % (path, e)) from None
    except Exception as e:        # truncated or malformed: never a traceback from pickle
        raise ValueError("%s is not a readable parameter pickle (%s: %s)"
                         % (path, type(e).__name__, e)) from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError("%s: expected a dict of name -> array, got %s" % (path, type(obj).__name__))
    out = {}
    for k, v in obj.items():
        if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf":
            raise ValueError("%s: %r is %s, not an array of real numbers"
                             % (path, k, type(v).__name__ if not isinstance(v, np.ndarray)
                                else "an array of dtype %s" % v.dtype))
        out[k] = v
    return out


def fold_book_dropout(net, arrays):
    """The book's Dropout multiplies by ``1 - ratio`` at test time; xpnet's divides by it in
    training and is the identity in evaluation. Parameters trained by the book's code are
    made to give the book's outputs here by folding that factor into the next Affine's
    weights (or, for a Dropout that ends the net, into the previous Affine's weight and bias).
    Returns a new dict; `arrays` is not changed."""
    out = dict(arrays)
    names = {id(layer): local_names for layer, local_names in _weight_names(net)}
    layers = list(net.layers)
    for i, layer in enumerate(layers):
        ratio = getattr(layer, "dropout_ratio", None)
        if not ratio:
            continue
        keep = 1.0 - ratio
        nxt = next((lay for lay in layers[i + 1:] if id(lay) in names), None)
        if nxt is not None:
            w = names[id(nxt)]["W"]
            out[w] = out[w] * keep
            continue
        prev = next((lay for lay in reversed(layers[:i]) if id(lay) in names), None)
        if prev is not None:
            for local in ("W", "b"):
                key = names[id(prev)].get(local)
                if key in out:
                    out[key] = out[key] * keep
    return out


def _weight_names(net):
    """(layer, {local: net-level name}) for the layers with a weight ``W``."""
    by_layer = {}
    for name, (layer, local) in net._names.items():
        by_layer.setdefault(id(layer), (layer, {}))[1][local] = name
    return [v for v in by_layer.values() if "W" in v[1]]

