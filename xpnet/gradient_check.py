"""Numerical gradients, for checking backpropagation.

`numerical_gradient` perturbs one element at a time (the book's method,
O(size) loss evaluations); `check_gradient` compares backprop with central
differences along a few random directions (Chainer's method, O(1)
evaluations), which is what makes gradient checks cheap on a GPU.
"""
from .backend import asnumpy, get_array_module, host_rng
from .backend import numpy as _np

__all__ = ["numerical_gradient", "directional_check", "relative_error"]


def numerical_gradient(f, x, h=1e-4):
    """Central differences of the scalar ``f(x)`` w.r.t. every element of `x`.

    `x` is perturbed in place and restored; indices are walked on the host, so
    device arrays work too. Returns an array like `x`."""
    xp = get_array_module(x)
    grad = xp.zeros_like(x)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient needs a C-contiguous array")
    flat = x.reshape(-1)   # a view: writes reach x
    gflat = grad.reshape(-1)
    hh = x.dtype.type(h)
    for i in range(x.size):
        old = flat[i].copy()
        flat[i] = old + hh
        fxh1 = float(f(x))
        flat[i] = old - hh
        fxh2 = float(f(x))
        flat[i] = old
        gflat[i] = (fxh1 - fxh2) / (2 * h)
    return grad


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
    (dict name -> array, modified in place and restored); `grads` holds the
    analytic gradients. Returns the largest relative error over the directions:
    ``|dL/dd (numeric) - <grad, d>| / max(|..|, |..|)``. Use float64: a small `h`
    keeps the probe off ReLU and max-pool kinks."""
    rng = host_rng() if seed is None else _np.random.default_rng(seed)
    worst = 0.0
    keys = [k for k in params if grads.get(k) is not None]
    for _ in range(n_dirs):
        dirs = {}
        analytic = 0.0
        for k in keys:
            p = params[k]
            xp = get_array_module(p)
            d = rng.standard_normal(p.shape)
            dirs[k] = xp.asarray(d.astype(p.dtype))
            analytic += float((asnumpy(grads[k]).astype("float64") * d).sum())
        orig = {k: params[k].copy() for k in keys}
        for k in keys:
            params[k][...] = orig[k] + params[k].dtype.type(h) * dirs[k]
        lp = float(loss_fn())
        for k in keys:
            params[k][...] = orig[k] - params[k].dtype.type(h) * dirs[k]
        lm = float(loss_fn())
        for k in keys:
            params[k][...] = orig[k]
        numeric = (lp - lm) / (2 * h)
        den = max(abs(numeric), abs(analytic), 1e-12)
        worst = max(worst, abs(numeric - analytic) / den)
    return worst
