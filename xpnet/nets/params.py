"""Parameter checks a net shares: dtype names, the book's initial weight scale,
the live ``net.params`` view, and the checks a loaded parameter must pass.
"""
import math

from .. import backend
from ..backend import device_of, to_device


_DTYPES = ("float32", "float64", "float16")


def _dtype_name(dtype):
    name = getattr(dtype, "__name__", None) or str(getattr(dtype, "name", dtype))
    name = {"float": "float64", "single": "float32", "double": "float64", "half": "float16"}.get(
        name, name)
    if name not in _DTYPES:
        raise ValueError("dtype must be one of %s, got %r" % (", ".join(_DTYPES), dtype))
    return name


def init_std(weight_init_std, n_in, n_out=None):
    """The scale of the initial weights, the book's way.

    A number is used as it is; ``'relu'``/``'he'`` gives He's ``sqrt(2/n_in)``;
    ``'sigmoid'``/``'xavier'`` gives the book's Xavier ``sqrt(1/n_in)``;
    ``'glorot'`` gives ``sqrt(2/(n_in+n_out))``."""
    if isinstance(weight_init_std, str):
        s = weight_init_std.lower()
        if s in ("relu", "he"):
            return math.sqrt(2.0 / n_in)
        if s in ("sigmoid", "xavier"):
            return math.sqrt(1.0 / n_in)
        if s == "glorot" and n_out:
            return math.sqrt(2.0 / (n_in + n_out))
        raise ValueError("weight_init_std must be a number or one of 'relu', 'he', 'sigmoid', "
                         "'xavier', 'glorot'; got %r" % (weight_init_std,))
    w = float(weight_init_std)
    if not (w >= 0 and math.isfinite(w)):
        raise ValueError("weight_init_std must be >= 0, got %r" % (weight_init_std,))
    return w


class _ParamView:
    """dict-like live view name -> array over the layers' parameter dicts."""

    def __init__(self, net, kind="params"):
        self._net = net
        self._kind = kind

    def _where(self, key):
        try:
            layer, local = self._net._names[key]
        except KeyError:
            raise KeyError("%s has no parameter %r; it has %s"
                           % (type(self._net).__name__, key, ", ".join(self._net._names))) from None
        return getattr(layer, self._kind), local

    def __getitem__(self, key):
        d, local = self._where(key)
        return d[local]

    def __setitem__(self, key, value):
        d, local = self._where(key)
        old = d[local]
        if not backend.is_array(value) and value is not None:
            raise TypeError("%s[%r] must be set to an array (NumPy, CuPy, torch ...), got %s;"
                            " wrap it: np.asarray(value)"
                            % (self._kind, key, type(value).__name__))
        if old is not None and self._kind == "params":
            if tuple(value.shape) != tuple(old.shape):
                raise ValueError("parameter %r has shape %s, got %s"
                                 % (key, tuple(old.shape), tuple(value.shape)))
            value = to_device(value, device_of(old))
            value = backend.namespace(value).astype(value, old.dtype, copy=False)
        d[local] = value

    def __contains__(self, key):
        return key in self._net._names

    def __iter__(self):
        return iter(self._net._names)

    def __len__(self):
        return len(self._net._names)

    def keys(self):
        return list(self._net._names)

    def items(self):
        return [(k, self[k]) for k in self._net._names]

    def values(self):
        return [self[k] for k in self._net._names]

    def get(self, key, default=None):
        return self[key] if key in self._net._names else default

    def __repr__(self):
        return "{%s}" % ", ".join("%r: %s" % (k, tuple(v.shape) if v is not None else None)
                                  for k, v in self.items())



def _check_param_values(name, a, allow_nonfinite=False):
    """A parameter or buffer array must be real floating and finite (a BatchNorm
    running variance also >= 0); ValueError naming it otherwise."""
    kind = getattr(getattr(a, "dtype", None), "kind", None)
    if kind is not None:            # NumPy and CuPy arrays say it directly
        ok = kind == "f"
    else:
        try:
            ok = backend.namespace(a).isdtype(a.dtype, "real floating")
        except Exception:
            ok = False
    if not ok:
        raise ValueError("parameter %r has dtype %s; parameters must be real floating "
                         "(float16, float32 or float64)" % (name, a.dtype))
    xp = backend.namespace(a)
    finite = xp.isfinite(a)
    if not allow_nonfinite and not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(~finite, xp.int32)))
        raise ValueError("parameter %r holds %d NaN or infinite value%s; refusing to load it"
                         % (name, bad, "" if bad == 1 else "s"))
    if name.startswith("running_var") and bool(xp.any(a < 0)):
        raise ValueError("parameter %r (a BatchNorm running variance) holds negative values"
                         % (name,))
