"""Convolution and pooling as plain functions, for readers of chapter 7 and for tests.

Each function hands its input to the kernel provider of that input
(`xpnet.backend.provider`): the readable `reference` kernels, NumPy's fast path
or the CUDA kernels. `im2col`/`col2im` use the book's 2-D layout
``(N*OH*OW, C*KH*KW)``. Nothing here computes; the layers call the providers
the same way.
"""
from .backend import provider
from .backend.geometry import conv_output_size, pair

__all__ = [
    "conv_output_size", "im2col", "col2im", "conv2d_forward", "conv2d_backward",
    "max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
]


def _sp(stride, pad):
    return pair(stride, "stride"), pair(pad, "pad")


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """The book's im2col: ``(N*OH*OW, C*FH*FW)``, rows ordered (n, oy, ox)."""
    return provider(input_data).im2col(input_data, filter_h, filter_w, *_sp(stride, pad))


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The book's col2im: the adjoint of `im2col` (overlaps are summed)."""
    return provider(col).col2im(col, tuple(input_shape), filter_h, filter_w, *_sp(stride, pad))


def conv2d_forward(x, W, b, stride=1, pad=0, workspace=None):
    """``y = conv(x, W) + b`` for x (N,C,H,W), W (FN,C,KH,KW), b (FN,) or None.
    Returns ``(y, ctx)``; give `ctx` to `conv2d_backward`."""
    return provider(x).conv2d_forward(x, W, b, *_sp(stride, pad), workspace)


def conv2d_backward(dy, ctx, W, x_shape, stride=1, pad=0, need_dx=True, workspace=None):
    """Gradients ``(dx, dW, db)`` of `conv2d_forward` (dx is None if not `need_dx`)."""
    return provider(dy).conv2d_backward(dy, ctx, W, tuple(x_shape), *_sp(stride, pad), need_dx,
                                        workspace)


def max_pool_forward(x, kh, kw, stride, pad=0):
    """Max pooling with -inf padding; returns ``(y, ctx)``. The gradient goes to the
    first maximum of each window (row-major), as ``argmax`` picks it."""
    return provider(x).max_pool_forward(x, kh, kw, *_sp(stride, pad))


def max_pool_backward(dy, ctx, x_shape, kh, kw, stride, pad=0):
    return provider(dy).max_pool_backward(dy, ctx, tuple(x_shape), kh, kw, *_sp(stride, pad))


def avg_pool_forward(x, kh, kw, stride, pad=0):
    """Average pooling; zero padding counts in the divisor (``KH*KW`` always)."""
    return provider(x).avg_pool_forward(x, kh, kw, *_sp(stride, pad))


def avg_pool_backward(dy, x_shape, kh, kw, stride, pad=0):
    return provider(dy).avg_pool_backward(dy, tuple(x_shape), kh, kw, *_sp(stride, pad))
