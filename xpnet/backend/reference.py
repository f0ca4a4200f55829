"""Reference kernels: the heavy work of the layers in the Array API standard alone.

This is the book's chapter 7 as code: im2col by strided slicing, one matrix
product, a reshape; col2im by adding each window tap back, spread by the stride
and shifted into place; pooling as a max over the columns of each window. It runs
on any array library that follows the standard (NumPy, CuPy, PyTorch through
array-api-compat, array_api_strict, JAX) and is the yardstick the fast providers
are tested against. It never writes into an array (padding is concatenation,
col2im adds whole arrays, `apply_update` returns new ones), so immutable arrays
(JAX) run on it too. It must never use anything outside the standard, nor be
clever for speed.

`ReferenceKernels` is the base class of every provider: `numpy_fast.NumpyKernels`
and `cuda_kernels.CudaKernels` override only what they speed up. Its methods call
each other through ``self``, so overriding one method changes it everywhere (a
faster `col2im` also serves the backward passes that use it). `stride` and `pad`
are (h, w) pairs; a `ctx` returned by a forward goes back to the same provider's
backward. The module-level functions are the methods of one shared instance.
"""
import contextlib

import array_api_compat

from .geometry import geometry, pool_geometry

NAME = "reference"

KERNELS = ("relu_forward", "relu_backward", "affine_forward", "affine_backward", "im2col",
           "col2im", "conv2d_forward", "conv2d_backward", "max_pool_forward",
           "max_pool_backward", "avg_pool_forward", "avg_pool_backward", "apply_update",
           "pass_scope")
__all__ = ["ReferenceKernels", "REFERENCE", "KERNELS"] + list(KERNELS)


def _ns(*arrays):
    return array_api_compat.array_namespace(*arrays)


def _dev(x):
    return array_api_compat.device(x)


def _zeros_like(xp, x):
    return xp.zeros(x.shape, dtype=x.dtype, device=_dev(x))


def _pad(xp, a, axis, before, after, value=0.0):
    """`a` with `before`/`after` entries of `value` added on `axis`, by concatenation."""
    if before == 0 and after == 0:
        return a
    parts = []
    for n in (before, after):
        shape = list(a.shape)
        shape[axis] = n
        parts.append(xp.full(tuple(shape), value, dtype=a.dtype, device=_dev(a)))
    return xp.concat([parts[0], a, parts[1]], axis=axis)


def _dilate(xp, a, axis, step):
    """`a` with `step - 1` zeros between neighbours on `axis` (a stride's adjoint)."""
    n = a.shape[axis]
    if step == 1 or n == 0:
        return a
    a = xp.expand_dims(a, axis=axis + 1)                               # (..., n, 1, ...)
    zshape = list(a.shape)
    zshape[axis + 1] = step - 1
    a = xp.concat([a, xp.zeros(tuple(zshape), dtype=a.dtype, device=_dev(a))], axis=axis + 1)
    a = xp.reshape(a, tuple(a.shape[:axis]) + (n * step,) + tuple(a.shape[axis + 2:]))
    return a[(slice(None),) * axis + (slice(0, (n - 1) * step + 1), ...)]


class ReferenceKernels:
    """The reference provider (see the module docstring). Subclasses override the
    methods they make faster; everything else stays readable and standard."""

    NAME = NAME

    def __init__(self, backend=None):
        self.backend = backend

    # ------------------------------------------------------------ ReLU and Affine

    def relu_forward(self, x):
        xp = _ns(x)
        y = xp.maximum(x, _zeros_like(xp, x))   # maximum keeps NaN, so a diverged net shows it
        return y, y > 0

    def relu_backward(self, dy, mask):
        xp = _ns(dy)
        return xp.where(mask, dy, _zeros_like(xp, dy))

    def affine_forward(self, x2, W, b):
        y = x2 @ W
        return y if b is None else y + b

    def affine_backward(self, dy, x2, W, need_dx):
        xp = _ns(dy)
        dW = xp.matrix_transpose(x2) @ dy
        db = xp.sum(dy, axis=0)
        dx = dy @ xp.matrix_transpose(W) if need_dx else None
        return dx, dW, db

    # ------------------------------------------------------------ im2col / col2im

    def im2col(self, x, kh, kw, stride, pad, pad_value=0.0):
        """(N, C, H, W) -> the book's (N*OH*OW, C*KH*KW): one row per output pixel."""
        xp = _ns(x)
        N, C, H, W, sy, sx, ph, pw, oh, ow = geometry(x.shape, kh, kw, stride, pad, "im2col")
        img = _pad(xp, _pad(xp, x, 2, ph, ph, pad_value), 3, pw, pw, pad_value)
        taps = [img[:, :, ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx]
                for ky in range(kh) for kx in range(kw)]                 # each (N, C, OH, OW)
        col = xp.stack(taps, axis=2)                                     # (N, C, KH*KW, OH, OW)
        col = xp.permute_dims(col, (0, 3, 4, 1, 2))                      # (N, OH, OW, C, KH*KW)
        return xp.reshape(col, (N * oh * ow, C * kh * kw))

    def col2im(self, col, x_shape, kh, kw, stride, pad):
        """Adjoint of `im2col`: each window tap's values are added back where they were
        read (spread out by the stride, shifted by the tap, summed over the taps)."""
        xp = _ns(col)
        N, C, H, W, sy, sx, ph, pw, oh, ow = geometry(x_shape, kh, kw, stride, pad, "col2im")
        if tuple(col.shape) != (N * oh * ow, C * kh * kw):
            raise ValueError("col2im: expected col of shape %s for input %s, got %s"
                             % ((N * oh * ow, C * kh * kw), tuple(x_shape), tuple(col.shape)))
        c = xp.reshape(col, (N, oh, ow, C, kh, kw))
        c = xp.permute_dims(c, (0, 3, 4, 5, 1, 2))                       # (N, C, KH, KW, OH, OW)
        Hp, Wp = H + 2 * ph, W + 2 * pw
        img = xp.zeros((N, C, Hp, Wp), dtype=col.dtype, device=_dev(col))
        for ky in range(kh):
            for kx in range(kw):
                tap = _dilate(xp, _dilate(xp, c[:, :, ky, kx, :, :], 2, sy), 3, sx)
                tap = _pad(xp, tap, 2, ky, Hp - ky - tap.shape[2])
                img = img + _pad(xp, tap, 3, kx, Wp - kx - tap.shape[3])
        return img[:, :, ph:ph + H, pw:pw + W]

    # ------------------------------------------------------------ convolution

    def conv2d_forward(self, x, W, b, stride, pad, workspace=None):
        """im2col, one matrix product, reshape: ``y (N, FN, OH, OW)``."""
        xp = _ns(x, W)
        FN, C, kh, kw = W.shape
        N, _, _, _, _, _, _, _, oh, ow = geometry(x.shape, kh, kw, stride, pad, "Convolution")
        col = self.im2col(x, kh, kw, stride, pad)                        # (N*OH*OW, C*KH*KW)
        Wc = xp.reshape(W, (FN, C * kh * kw))
        y = col @ xp.matrix_transpose(Wc)                                # (N*OH*OW, FN)
        if b is not None:
            y = y + b
        y = xp.permute_dims(xp.reshape(y, (N, oh, ow, FN)), (0, 3, 1, 2))
        return y, col

    def conv2d_backward(self, dy, col, W, x_shape, stride, pad, need_dx=True, workspace=None):
        xp = _ns(dy, W)
        FN, C, kh, kw = W.shape
        dy2 = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (-1, FN))    # (N*OH*OW, FN)
        db = xp.sum(dy2, axis=0)
        dW = xp.reshape(xp.matrix_transpose(dy2) @ col, W.shape)
        if not need_dx:
            return None, dW, db
        dcol = dy2 @ xp.reshape(W, (FN, C * kh * kw))                    # (N*OH*OW, C*KH*KW)
        return self.col2im(dcol, x_shape, kh, kw, stride, pad), dW, db

    # ------------------------------------------------------------ pooling

    def _windows(self, x, kh, kw, stride, pad, pad_value):
        """(N*OH*OW*C, KH*KW): one row per output value, its window's entries."""
        xp = _ns(x)
        N, C, H, W, sy, sx, ph, pw, oh, ow = pool_geometry(x.shape, kh, kw, stride, pad)
        col = self.im2col(x, kh, kw, stride, pad, pad_value)
        return xp.reshape(col, (N * oh * ow * C, kh * kw)), (N, oh, ow, C)

    def max_pool_forward(self, x, kh, kw, stride, pad):
        """Max over each window; `argmax` keeps the first maximum, which gets the gradient."""
        xp = _ns(x)
        rows, nhwc = self._windows(x, kh, kw, stride, pad, -float("inf"))
        arg = xp.argmax(rows, axis=1)
        return _to_nchw(xp, xp.max(rows, axis=1), nhwc), arg

    def max_pool_backward(self, dy, arg, x_shape, kh, kw, stride, pad):
        xp = _ns(dy)
        taps = xp.arange(kh * kw, device=_dev(dy))
        hit = xp.astype(arg[:, None] == taps[None, :], dy.dtype)        # one-hot of the argmax
        dcol = hit * _from_nchw(xp, dy)[:, None]
        C = x_shape[1]
        return self.col2im(xp.reshape(dcol, (-1, C * kh * kw)), x_shape, kh, kw, stride, pad)

    def avg_pool_forward(self, x, kh, kw, stride, pad):
        """Mean over each window; zero padding counts in the divisor."""
        xp = _ns(x)
        rows, nhwc = self._windows(x, kh, kw, stride, pad, 0.0)
        return _to_nchw(xp, xp.mean(rows, axis=1), nhwc)

    def avg_pool_backward(self, dy, x_shape, kh, kw, stride, pad):
        xp = _ns(dy)
        C = x_shape[1]
        share = _from_nchw(xp, dy)[:, None] / (kh * kw)
        dcol = xp.broadcast_to(share, (share.shape[0], kh * kw))
        return self.col2im(xp.reshape(dcol, (-1, C * kh * kw)), x_shape, kh, kw, stride, pad)

    # ------------------------------------------------------------ optimizers, passes

    def apply_update(self, rule, p, g, state, scalars):
        """One optimizer step: ``rule(xp, p, g, *state.values(), *scalars)`` gives the new
        values. Returns the new `p`; `state` (a dict, in the rule's order) gets its new
        arrays by rebinding its entries. Nothing is written in place."""
        if not hasattr(state, "values"):
            raise TypeError("apply_update: state must be a dict (slot -> array, in the rule's "
                            "order), got %s" % type(state).__name__)
        new = rule(_ns(p), p, g, *state.values(), *scalars)
        for k, v in zip(list(state), new[1:]):
            state[k] = v
        return new[0]

    def pass_scope(self, heavy):
        """Nothing to set up around a net's pass."""
        return contextlib.nullcontext()

    def __repr__(self):
        return "<%s kernels>" % self.NAME


def _to_nchw(xp, flat, nhwc):
    return xp.permute_dims(xp.reshape(flat, nhwc), (0, 3, 1, 2))


def _from_nchw(xp, dy):
    return xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (-1,))


REFERENCE = ReferenceKernels()

relu_forward = REFERENCE.relu_forward
relu_backward = REFERENCE.relu_backward
affine_forward = REFERENCE.affine_forward
affine_backward = REFERENCE.affine_backward
im2col = REFERENCE.im2col
col2im = REFERENCE.col2im
conv2d_forward = REFERENCE.conv2d_forward
conv2d_backward = REFERENCE.conv2d_backward
max_pool_forward = REFERENCE.max_pool_forward
max_pool_backward = REFERENCE.max_pool_backward
avg_pool_forward = REFERENCE.avg_pool_forward
avg_pool_backward = REFERENCE.avg_pool_backward
apply_update = REFERENCE.apply_update
pass_scope = REFERENCE.pass_scope
