"""Reference kernels: the heavy work of the layers in the Array API standard alone.

This is the book's chapter 7 as code: im2col by strided slicing, one matrix
product, a reshape; col2im by shifted slice-adds; pooling as a max over the
columns of each window. It runs on any array library that follows the standard
(NumPy, CuPy, PyTorch through array-api-compat, array_api_strict) and is the
yardstick the fast providers are tested against. Each function fits on a screen.
It must never use anything outside the standard, nor be clever for speed.

Every provider module defines the same functions:
``relu_forward/backward``, ``affine_forward/backward``, ``conv2d_forward/backward``,
``max_pool_forward/backward``, ``avg_pool_forward/backward``, ``im2col``,
``col2im``, ``apply_update`` and ``pass_scope``. `stride` and `pad` are (h, w)
pairs; a `ctx` returned by a forward goes back to the same provider's backward.
"""
import contextlib

import array_api_compat

from .geometry import geometry, pool_geometry

NAME = "reference"

__all__ = ["relu_forward", "relu_backward", "affine_forward", "affine_backward", "im2col",
           "col2im", "conv2d_forward", "conv2d_backward", "max_pool_forward",
           "max_pool_backward", "avg_pool_forward", "avg_pool_backward", "apply_update",
           "pass_scope"]


def _ns(*arrays):
    return array_api_compat.array_namespace(*arrays)


def _zeros_like(xp, x):
    return xp.zeros(x.shape, dtype=x.dtype, device=array_api_compat.device(x))


# ---------------------------------------------------------------- ReLU and Affine

def relu_forward(x):
    xp = _ns(x)
    y = xp.maximum(x, _zeros_like(xp, x))      # maximum keeps NaN, so a diverged net shows it
    return y, y > 0


def relu_backward(dy, mask):
    xp = _ns(dy)
    return xp.where(mask, dy, _zeros_like(xp, dy))


def affine_forward(x2, W, b):
    y = x2 @ W
    return y if b is None else y + b


def affine_backward(dy, x2, W, need_dx):
    xp = _ns(dy)
    dW = xp.matrix_transpose(x2) @ dy
    db = xp.sum(dy, axis=0)
    dx = dy @ xp.matrix_transpose(W) if need_dx else None
    return dx, dW, db


# ---------------------------------------------------------------- im2col / col2im

def _padded(xp, x, ph, pw, value):
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    out = xp.full((N, C, H + 2 * ph, W + 2 * pw), value, dtype=x.dtype,
                  device=array_api_compat.device(x))
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def im2col(x, kh, kw, stride, pad, pad_value=0.0):
    """(N, C, H, W) -> the book's (N*OH*OW, C*KH*KW): one row per output pixel."""
    xp = _ns(x)
    N, C, H, W, sy, sx, ph, pw, oh, ow = geometry(x.shape, kh, kw, stride, pad, "im2col")
    img = _padded(xp, x, ph, pw, pad_value)
    taps = [img[:, :, ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx]
            for ky in range(kh) for kx in range(kw)]                 # each (N, C, OH, OW)
    col = xp.stack(taps, axis=2)                                     # (N, C, KH*KW, OH, OW)
    col = xp.permute_dims(col, (0, 3, 4, 1, 2))                      # (N, OH, OW, C, KH*KW)
    return xp.reshape(col, (N * oh * ow, C * kh * kw))


def col2im(col, x_shape, kh, kw, stride, pad):
    """Adjoint of `im2col`: each window's column is added back where it was read."""
    xp = _ns(col)
    N, C, H, W, sy, sx, ph, pw, oh, ow = geometry(x_shape, kh, kw, stride, pad, "col2im")
    if tuple(col.shape) != (N * oh * ow, C * kh * kw):
        raise ValueError("col2im: expected col of shape %s for input %s, got %s"
                         % ((N * oh * ow, C * kh * kw), tuple(x_shape), tuple(col.shape)))
    c = xp.reshape(col, (N, oh, ow, C, kh, kw))
    c = xp.permute_dims(c, (0, 3, 4, 5, 1, 2))                       # (N, C, KH, KW, OH, OW)
    img = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=col.dtype,
                   device=array_api_compat.device(col))
    for ky in range(kh):
        for kx in range(kw):
            img[:, :, ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx] += c[:, :, ky, kx, :, :]
    return img[:, :, ph:ph + H, pw:pw + W]


# ---------------------------------------------------------------- convolution

def conv2d_forward(x, W, b, stride, pad, workspace=None):
    """im2col, one matrix product, reshape: ``y (N, FN, OH, OW)``."""
    xp = _ns(x, W)
    FN, C, kh, kw = W.shape
    N, _, _, _, _, _, _, _, oh, ow = geometry(x.shape, kh, kw, stride, pad, "Convolution")
    col = im2col(x, kh, kw, stride, pad)                             # (N*OH*OW, C*KH*KW)
    Wc = xp.reshape(W, (FN, C * kh * kw))
    y = col @ xp.matrix_transpose(Wc)                                # (N*OH*OW, FN)
    if b is not None:
        y = y + b
    y = xp.permute_dims(xp.reshape(y, (N, oh, ow, FN)), (0, 3, 1, 2))
    return y, col


def conv2d_backward(dy, col, W, x_shape, stride, pad, need_dx=True, workspace=None):
    xp = _ns(dy, W)
    FN, C, kh, kw = W.shape
    dy2 = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (-1, FN))    # (N*OH*OW, FN)
    db = xp.sum(dy2, axis=0)
    dW = xp.reshape(xp.matrix_transpose(dy2) @ col, W.shape)
    if not need_dx:
        return None, dW, db
    dcol = dy2 @ xp.reshape(W, (FN, C * kh * kw))                    # (N*OH*OW, C*KH*KW)
    return col2im(dcol, x_shape, kh, kw, stride, pad), dW, db


# ---------------------------------------------------------------- pooling

def _windows(x, kh, kw, stride, pad, pad_value):
    """(N*OH*OW*C, KH*KW): one row per output value, its window's entries."""
    xp = _ns(x)
    N, C, H, W, sy, sx, ph, pw, oh, ow = pool_geometry(x.shape, kh, kw, stride, pad)
    col = im2col(x, kh, kw, stride, pad, pad_value)
    return xp.reshape(col, (N * oh * ow * C, kh * kw)), (N, oh, ow, C)


def _to_nchw(xp, flat, nhwc):
    return xp.permute_dims(xp.reshape(flat, nhwc), (0, 3, 1, 2))


def _from_nchw(xp, dy):
    return xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (-1,))


def max_pool_forward(x, kh, kw, stride, pad):
    """Max over each window; `argmax` keeps the first maximum, which gets the gradient."""
    xp = _ns(x)
    rows, nhwc = _windows(x, kh, kw, stride, pad, -float("inf"))
    arg = xp.argmax(rows, axis=1)
    return _to_nchw(xp, xp.max(rows, axis=1), nhwc), arg


def max_pool_backward(dy, arg, x_shape, kh, kw, stride, pad):
    xp = _ns(dy)
    taps = xp.arange(kh * kw, device=array_api_compat.device(dy))
    hit = xp.astype(arg[:, None] == taps[None, :], dy.dtype)        # one-hot of the argmax
    dcol = hit * _from_nchw(xp, dy)[:, None]
    C = x_shape[1]
    return col2im(xp.reshape(dcol, (-1, C * kh * kw)), x_shape, kh, kw, stride, pad)


def avg_pool_forward(x, kh, kw, stride, pad):
    """Mean over each window; zero padding counts in the divisor."""
    xp = _ns(x)
    rows, nhwc = _windows(x, kh, kw, stride, pad, 0.0)
    return _to_nchw(xp, xp.mean(rows, axis=1), nhwc)


def avg_pool_backward(dy, x_shape, kh, kw, stride, pad):
    xp = _ns(dy)
    C = x_shape[1]
    share = _from_nchw(xp, dy)[:, None] / (kh * kw)
    dcol = xp.broadcast_to(share, (share.shape[0], kh * kw))
    return col2im(xp.reshape(dcol, (-1, C * kh * kw)), x_shape, kh, kw, stride, pad)


# ---------------------------------------------------------------- optimizers, passes

def apply_update(rule, p, g, state, scalars):
    """One optimizer step: ``rule(xp, p, g, *state, *scalars)`` gives the new values,
    written back into `p` and the state arrays."""
    new = rule(_ns(p), p, g, *state, *scalars)
    for dst, src in zip((p,) + tuple(state), new):
        dst[...] = src


def pass_scope(heavy):
    """Nothing to set up around a net's pass."""
    return contextlib.nullcontext()
