"""Numerical gradients, for checking backpropagation.

`numerical_gradient` perturbs one element at a time (the book's method,
O(size) loss evaluations); `check_gradient` compares backprop with central
differences along a few random directions (Chainer's method, O(1)
evaluations), which is what makes gradient checks cheap on a GPU.
"""
import itertools
import warnings

from . import backend
from .backend import asnumpy, device_of, host_rng, new_host_rng, to_device

__all__ = ["numerical_gradient", "directional_check", "relative_error", "PrecisionWarning",
           "warn_if_low_precision"]


class PrecisionWarning(UserWarning):
    """A numerical gradient taken in a precision too low to check backprop with."""


def numerical_gradient(f, x, h=1e-4):
    """Central differences of the scalar ``f(x)`` w.r.t. every element of `x`.

    `f` is called with `x` changed in one element at a time: on a library whose arrays
    take item assignment (NumPy, CuPy, torch) `x` itself is perturbed in place and
    restored, as in the book (so `f` may read it through the net); on an immutable one
    (JAX) `f` gets a new array each time and must use its argument. Elements are reached
    by index, so any array library works. Returns an array like `x`, on its device.

    In float32 the differences carry rounding noise of about 1e-4 relative, so a
    correct backprop looks wrong: check gradients in float64 (``dtype="float64"``)."""
    warn_if_low_precision(x.dtype, stacklevel=3)
    grad = backend.host_zeros(tuple(x.shape))
    if _writable(x):     # the book's way: perturb x itself
        def at(idx, value):
            x[idx] = value
            return x
    else:
        host = asnumpy(x).copy()
        dev, xp = device_of(x), backend.namespace(x)

        def at(idx, value):
            old = host[idx]
            host[idx] = value
            y = to_device(host.copy(), dev)
            host[idx] = old
            return xp.astype(y, x.dtype)
    for idx in itertools.product(*(range(n) for n in x.shape)):
        old = float(x[idx])          # a number: an element of a tensor may be a view
        fxh1 = float(f(at(idx, old + h)))
        fxh2 = float(f(at(idx, old - h)))
        at(idx, old)
        grad[idx] = (fxh1 - fxh2) / (2 * h)
    # cast on the host: x's device may have no float64 (JAX with x64 off)
    return to_device(grad.astype(backend.dtype_name(x.dtype)), device_of(x))


def _writable(x):
    """Whether `x` takes item assignment (False for immutable arrays such as JAX's)."""
    return device_of(x).mutable


def warn_if_low_precision(dtype, stacklevel=2):
    """A `PrecisionWarning` for a numerical gradient in float32/float16 (`stacklevel`
    as for `warnings.warn`, counted from the caller of this function)."""
    name = backend.dtype_name(dtype)
    if name in ("float32", "float16"):
        warnings.warn("numerical_gradient in %s: expect differences of 1e-4..1e-3 from backprop "
                      "even when it is right; build the net with dtype='float64' for a gradient "
                      "check (the book's own check runs in float64)" % name, PrecisionWarning,
                      stacklevel=stacklevel + 1)


def relative_error(a, b, eps=1e-12):
    """``|a-b| / max(|a|, |b|, eps)`` elementwise maximum, computed on the host in float64."""
    a = asnumpy(a).astype("float64")
    b = asnumpy(b).astype("float64")
    den = abs(a).max() if a.size else 0.0
    den = max(den, abs(b).max() if b.size else 0.0, eps)
    return float(abs(a - b).max() / den)


def directional_check(loss_fn, params, grads, n_dirs=3, h=1e-6, seed=0):
    """Compare analytic gradients with central differences along random directions.

    `loss_fn()` returns the scalar loss for the current values of `params`
    (a net's ``params``: entries are rebound to perturbed arrays and restored); `grads` holds the
    analytic gradients. Returns the largest relative error over the directions:
    ``|dL/dd (numeric) - <grad, d>| / max(|..|, |..|)``. Use float64: a small `h`
    keeps the probe off ReLU and max-pool kinks."""
    rng = host_rng() if seed is None else new_host_rng(seed)
    worst = 0.0
    keys = [k for k in params if grads.get(k) is not None]
    for _ in range(n_dirs):
        dirs = {}
        analytic = 0.0
        for k in keys:
            p = params[k]
            d = rng.standard_normal(tuple(p.shape))
            dd = to_device(d, device_of(p))
            dirs[k] = backend.namespace(dd).astype(dd, p.dtype)
            analytic += float((asnumpy(grads[k]).astype("float64") * d).sum())
        orig = {k: backend.namespace(params[k]).asarray(params[k], copy=True) for k in keys}
        for k in keys:
            params[k] = orig[k] + h * dirs[k]
        lp = float(loss_fn())
        for k in keys:
            params[k] = orig[k] - h * dirs[k]
        lm = float(loss_fn())
        for k in keys:
            params[k] = orig[k]
        numeric = (lp - lm) / (2 * h)
        den = max(abs(numeric), abs(analytic), 1e-12)
        worst = max(worst, abs(numeric - analytic) / den)
    return worst
