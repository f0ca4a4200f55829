"""Shapes of convolution and pooling windows, shared by every kernel provider.

Pure integer arithmetic on shapes: it never touches an array.
"""
import operator

__all__ = ["pair", "conv_output_size", "geometry", "pool_geometry"]


def pair(v, name):
    """``(a, b)`` from an int or a pair of ints; bools, floats and None are refused."""
    items = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(items) != 2:
        raise ValueError("%s must be an int or a pair (h, w), got %r" % (name, v))
    out = []
    for a in items:
        if isinstance(a, bool):
            raise TypeError("%s must be an int or a pair of ints, got %r" % (name, v))
        try:
            out.append(operator.index(a))
        except TypeError:
            raise TypeError("%s must be an int or a pair of ints, got %r" % (name, v)) from None
    return tuple(out)


def conv_output_size(input_size, filter_size, stride=1, pad=0, what="convolution"):
    """``(input_size + 2*pad - filter_size) // stride + 1``, checked to be >= 1."""
    if stride < 1:
        raise ValueError("%s: stride must be >= 1, got %d" % (what, stride))
    if pad < 0:
        raise ValueError("%s: pad must be >= 0, got %d" % (what, pad))
    if filter_size < 1:
        raise ValueError("%s: filter size must be >= 1, got %d" % (what, filter_size))
    span = input_size + 2 * pad - filter_size
    if span < 0:
        raise ValueError("%s: window %d is larger than the padded input %d (input %d, pad %d)"
                         % (what, filter_size, input_size + 2 * pad, input_size, pad))
    return span // stride + 1


def geometry(x_shape, kh, kw, stride, pad, what):
    """``N, C, H, W, sy, sx, ph, pw, oh, ow`` of a window op on input shape `x_shape`."""
    if len(x_shape) != 4:
        raise ValueError("%s expects a 4-D input (N, C, H, W), got shape %s"
                         % (what, tuple(x_shape)))
    sy, sx = pair(stride, "stride")
    ph, pw = pair(pad, "pad")
    N, C, H, W = x_shape
    oh = conv_output_size(H, kh, sy, ph, what)
    ow = conv_output_size(W, kw, sx, pw, what)
    return N, C, H, W, sy, sx, ph, pw, oh, ow


def pool_geometry(x_shape, kh, kw, stride, pad, what="Pooling"):
    """`geometry`, plus the rule that padding is at most half the window (so no window
    sees only padding)."""
    g = geometry(x_shape, kh, kw, stride, pad, what)
    ph, pw = g[6], g[7]
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError("%s: pad (%d, %d) must be at most half the window (%d, %d), "
                         "or some windows would see only padding" % (what, ph, pw, kh, kw))
    return g
