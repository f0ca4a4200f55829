"""im2col/col2im, convolution and pooling against plain-loop references written here, on
every backend; the NumPy fast path's internals (its CNHW column layout, workspaces) on
NumPy; and the fast path against the reference kernels over the same shape tables."""
import itertools

import numpy as np
import pytest

from xpnet import conv
from xpnet.backend import cpu_threads as parallel
from xpnet.backend import numpy_fast as fast
from xpnet.backend import reference as ref
from xpnet.backend.geometry import pair
from xpnet.layers import AvgPooling, Convolution, Pooling

# ---------------------------------------------------------------- references (plain loops)


def ref_conv(x, W, b, stride, pad):
    N, C, H, Wd = x.shape
    FN, _, KH, KW = W.shape
    sy, sx = stride
    py, px = pad
    xp_ = np.zeros((N, C, H + 2 * py, Wd + 2 * px))
    xp_[:, :, py:py + H, px:px + Wd] = x
    OH = (H + 2 * py - KH) // sy + 1
    OW = (Wd + 2 * px - KW) // sx + 1
    y = np.zeros((N, FN, OH, OW))
    for n in range(N):
        for f in range(FN):
            for i in range(OH):
                for j in range(OW):
                    win = xp_[n, :, i * sy:i * sy + KH, j * sx:j * sx + KW]
                    y[n, f, i, j] = (win * W[f]).sum() + (0 if b is None else b[f])
    return y


def ref_pool(x, kh, kw, stride, pad, mode):
    """Max pools over -inf padding, avg divides by kh*kw (zero padding counted);
    also returns the max-pool gradient of sum(y * dy) routed to each window's first max."""
    N, C, H, W = x.shape
    sy, sx = stride
    py, px = pad
    fill = -np.inf if mode == "max" else 0.0
    xp_ = np.full((N, C, H + 2 * py, W + 2 * px), fill)
    xp_[:, :, py:py + H, px:px + W] = x
    OH = (H + 2 * py - kh) // sy + 1
    OW = (W + 2 * px - kw) // sx + 1
    y = np.zeros((N, C, OH, OW))
    first = np.zeros((N, C, OH, OW, 2), dtype=int)
    for n, c, i, j in itertools.product(range(N), range(C), range(OH), range(OW)):
        win = xp_[n, c, i * sy:i * sy + kh, j * sx:j * sx + kw]
        if mode == "max":
            k = int(np.argmax(win))           # first maximum, row-major
            y[n, c, i, j] = win.flat[k]
            first[n, c, i, j] = (i * sy + k // kw - py, j * sx + k % kw - px)
        else:
            y[n, c, i, j] = win.sum() / (kh * kw)
    return y, first


def ref_pool_backward(x_shape, dy, first, kh, kw, stride, pad, mode):
    N, C, H, W = x_shape
    sy, sx = stride
    py, px = pad
    dx = np.zeros((N, C, H + 2 * py, W + 2 * px))
    OH, OW = dy.shape[2:]
    for n, c, i, j in itertools.product(range(N), range(C), range(OH), range(OW)):
        if mode == "max":
            yy, xx = first[n, c, i, j]
            dx[n, c, yy + py, xx + px] += dy[n, c, i, j]
        else:
            dx[n, c, i * sy:i * sy + kh, j * sx:j * sx + kw] += dy[n, c, i, j] / (kh * kw)
    return dx[:, :, py:py + H, px:px + W]


def ref_conv_backward(x, W, dy, stride, pad):
    """dx, dW, db of sum(conv(x, W) * dy) by loops over the output."""
    N, C, H, Wd = x.shape
    FN, _, KH, KW = W.shape
    sy, sx = stride
    py, px = pad
    xp_ = np.zeros((N, C, H + 2 * py, Wd + 2 * px))
    xp_[:, :, py:py + H, px:px + Wd] = x
    dxp = np.zeros_like(xp_)
    dW = np.zeros_like(W)
    for n, f, i, j in itertools.product(range(N), range(FN), range(dy.shape[2]),
                                        range(dy.shape[3])):
        g = dy[n, f, i, j]
        dW[f] += g * xp_[n, :, i * sy:i * sy + KH, j * sx:j * sx + KW]
        dxp[n, :, i * sy:i * sy + KH, j * sx:j * sx + KW] += g * W[f]
    return dxp[:, :, py:py + H, px:px + Wd], dW, dy.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------- golden values (seminar slides)

GOLD_X = np.array([[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], dtype=float)
GOLD_W = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], dtype=float)
GOLD_Y = [[15, 16], [6, 15]]
GOLD_Y_PAD1 = [[7, 12, 10, 2], [4, 15, 16, 10], [10, 6, 15, 6], [8, 10, 4, 3]]
POOL_X = np.array([[1, 2, 1, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 4, 0, 1]], dtype=float)
POOL_MAX = [[2, 3], [4, 2]]
POOL_AVG = [[1.0, 1.5], [2.25, 1.0]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_golden_convolution_functions(backend, dtype):
    xp = backend.xp
    x = backend.asarray(GOLD_X[None, None], dtype=dtype)
    W = backend.asarray(GOLD_W[None, None], dtype=dtype)
    y, _ = conv.conv2d_forward(x, W, None)
    assert backend.dtype(y) == dtype
    np.testing.assert_array_equal(backend.np(y)[0, 0], GOLD_Y)
    y, _ = conv.conv2d_forward(x, W, backend.asarray([3.0], dtype=dtype))
    np.testing.assert_array_equal(backend.np(y)[0, 0], np.array(GOLD_Y) + 3)
    y, _ = conv.conv2d_forward(x, W, None, stride=1, pad=1)
    np.testing.assert_array_equal(backend.np(y)[0, 0], GOLD_Y_PAD1)
    # the book's 2-D im2col times the flattened filter gives the same numbers
    col = conv.im2col(x, 3, 3, 1, 0)
    assert tuple(col.shape) == (4, 9)
    flat = xp.matrix_transpose(xp.reshape(W, (1, -1)))                  # (9, 1)
    np.testing.assert_array_equal(backend.np(col @ flat).reshape(2, 2), GOLD_Y)


def test_golden_convolution_layer(backend):
    x = backend.asarray(GOLD_X[None, None], dtype=np.float32)
    W = backend.asarray(GOLD_W[None, None], dtype=np.float32)
    b = backend.asarray([3.0], dtype=np.float32)
    assert backend.np(Convolution(W, b * 0).forward(x))[0, 0].tolist() == GOLD_Y
    assert backend.np(Convolution(W, b).forward(x))[0, 0].tolist() == \
        (np.array(GOLD_Y) + 3).tolist()
    assert backend.np(Convolution(W, None, pad=1).forward(x))[0, 0].tolist() == GOLD_Y_PAD1


def test_golden_pooling(backend):
    x = backend.asarray(POOL_X[None, None], dtype=np.float32)
    y, _ = conv.max_pool_forward(x, 2, 2, 2)
    assert backend.np(y)[0, 0].tolist() == POOL_MAX
    assert backend.np(Pooling(2, 2, stride=2).forward(x))[0, 0].tolist() == POOL_MAX
    assert backend.np(conv.avg_pool_forward(x, 2, 2, 2))[0, 0].tolist() == POOL_AVG
    assert backend.np(AvgPooling(2, 2, stride=2).forward(x))[0, 0].tolist() == POOL_AVG
    # the gradient goes to the maximum of each window
    layer = Pooling(2, 2, stride=2)
    layer.forward(x)
    dx = backend.np(layer.backward(backend.asarray(np.ones((1, 1, 2, 2)), dtype=np.float32)))
    expect = np.zeros((4, 4))
    expect[0, 1] = expect[1, 3] = expect[3, 1] = expect[2, 3] = 1
    np.testing.assert_array_equal(dx[0, 0], expect)


# ---------------------------------------------------------------- random shapes vs loops

# (N, C, H, W), (FN, KH, KW), stride, pad
CONV_CASES = [
    ((1, 1, 5, 5), (1, 3, 3), 1, 0),
    ((2, 3, 7, 9), (4, 3, 2), 1, 1),
    ((1, 2, 8, 6), (3, 2, 3), 2, 0),
    ((2, 3, 10, 7), (2, 3, 3), 3, 2),
    ((1, 4, 6, 11), (5, 1, 4), (2, 3), (1, 2)),
    ((3, 2, 5, 4), (2, 5, 4), 1, 2),
    ((1, 1, 4, 4), (1, 4, 4), 1, 0),
]


@pytest.mark.parametrize("shape,fshape,stride,pad", CONV_CASES)
def test_conv_forward_backward_vs_loops(backend, shape, fshape, stride, pad):
    rng = np.random.default_rng(sum(shape) * 7 + sum(fshape))
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = pad if isinstance(pad, tuple) else (pad, pad)
    FN, KH, KW = fshape
    x = rng.standard_normal(shape)
    W = rng.standard_normal((FN, shape[1], KH, KW))
    b = rng.standard_normal(FN)
    y_ref = ref_conv(x, W, b, s, p)
    y, col = conv.conv2d_forward(backend.asarray(x), backend.asarray(W), backend.asarray(b),
                                 stride, pad)
    assert y.shape == y_ref.shape
    backend.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, dW_ref, db_ref = ref_conv_backward(x, W, dy, s, p)
    dx, dW, db = conv.conv2d_backward(backend.asarray(dy), col, backend.asarray(W), shape,
                                      stride, pad)
    backend.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
    backend.assert_close(dW, dW_ref, rtol=1e-12, atol=1e-12)
    backend.assert_close(db, db_ref, rtol=1e-12, atol=1e-12)
    # the layer gives the same, with a workspace reused over two calls
    layer = Convolution(backend.asarray(W), backend.asarray(b), stride, pad)
    for _ in range(2):
        backend.assert_close(layer.forward(backend.asarray(x)), y_ref, rtol=1e-12, atol=1e-12)
        backend.assert_close(layer.backward(backend.asarray(dy)), dx_ref, rtol=1e-12, atol=1e-12)
        backend.assert_close(layer.dW, dW_ref, rtol=1e-12, atol=1e-12)


# (N, C, H, W), (KH, KW), stride, pad
POOL_CASES = [
    ((1, 1, 4, 4), (2, 2), 2, 0),
    ((2, 3, 5, 7), (2, 2), 2, 0),       # windows don't tile: edge rows/cols dropped
    ((1, 2, 7, 6), (3, 3), 2, 1),       # overlapping, padded
    ((2, 2, 6, 9), (3, 2), 1, 1),
    ((1, 3, 9, 8), (2, 3), 3, (1, 1)),  # stride larger than window
    ((1, 2, 5, 5), (4, 4), 1, 2),
    ((1, 1, 5, 6), (1, 1), 1, 0),
]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("shape,k,stride,pad", POOL_CASES)
def test_pool_forward_backward_vs_loops(backend, shape, k, stride, pad, mode):
    rng = np.random.default_rng(sum(shape) + 100 * k[0] + k[1])
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = pad if isinstance(pad, tuple) else (pad, pad)
    x = rng.standard_normal(shape)
    y_ref, first = ref_pool(x, k[0], k[1], s, p, mode)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref = ref_pool_backward(shape, dy, first, k[0], k[1], s, p, mode)
    layer = Pooling(k[0], k[1], stride=stride, pad=pad, mode=mode)
    y = layer.forward(backend.asarray(x))
    backend.assert_close(y, y_ref, rtol=1e-12, atol=1e-15)
    backend.assert_close(layer.backward(backend.asarray(dy)), dx_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape,k,stride,pad", [((2, 3, 6, 6), (2, 2), 2, 0),
                                                 ((1, 2, 5, 7), (3, 3), 1, 1),
                                                 ((1, 2, 6, 6), (2, 2), 1, 1)])
def test_max_pool_ties_route_to_first_maximum(backend, shape, k, stride, pad):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, size=shape).astype(float)    # many ties
    s, p = (stride, stride), (pad, pad)
    y_ref, first = ref_pool(x, k[0], k[1], s, p, "max")
    dy = rng.standard_normal(y_ref.shape)
    dx_ref = ref_pool_backward(shape, dy, first, k[0], k[1], s, p, "max")
    layer = Pooling(k[0], k[1], stride=stride, pad=pad)
    backend.assert_close(layer.forward(backend.asarray(x)), y_ref)
    backend.assert_close(layer.backward(backend.asarray(dy)), dx_ref, rtol=1e-12, atol=1e-15)


def test_max_pool_pads_with_minus_inf_and_counts_padding(backend):
    # all-negative input: zero padding would win every border window
    x = -1.0 - np.arange(16, dtype=float).reshape(1, 1, 4, 4)
    layer = Pooling(2, 2, stride=2, pad=1)
    y = backend.np(layer.forward(backend.asarray(x)))
    assert y.shape == (1, 1, 3, 3)               # (4 + 2 - 2) // 2 + 1
    ref, _ = ref_pool(x, 2, 2, (2, 2), (1, 1), "max")
    np.testing.assert_array_equal(y, ref)
    assert y.max() < 0 and np.isfinite(y).all()
    assert y[0, 0, 0, 0] == -1.0                 # the corner window sees one real pixel
    dx = backend.np(layer.backward(backend.asarray(np.ones((1, 1, 3, 3)))))
    assert dx.shape == x.shape and dx.sum() == 9.0 and np.isfinite(dx).all()


def test_pool_output_shape_matches_forward():
    for (shape, k, stride, pad) in POOL_CASES:
        layer = Pooling(k[0], k[1], stride=stride, pad=pad)
        y = layer.forward(np.zeros(shape))
        assert y.shape[1:] == layer.output_shape(shape[1:])


# ---------------------------------------------------------------- im2col / col2im

# (N, C, H, W), (KH, KW), stride, pad
IM2COL_CASES = [((2, 3, 7, 9), (3, 2), 1, 0),
                ((1, 4, 10, 8), (3, 3), 2, 1),
                ((3, 5, 11, 12), (5, 3), 3, 2),
                ((2, 2, 6, 5), (2, 4), (2, 1), (0, 2))]


@pytest.mark.parametrize("shape,k,stride,pad", IM2COL_CASES)
def test_im2col_col2im_adjoint(backend, shape, k, stride, pad):
    """<im2col(x), c> == <x, col2im(c)>: the book's col2im is the exact adjoint of im2col."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    col2 = conv.im2col(backend.asarray(x), k[0], k[1], stride, pad)
    c2 = rng.standard_normal(tuple(col2.shape))
    lhs = float((backend.np(col2) * c2).sum())
    rhs = float((x * backend.np(conv.col2im(backend.asarray(c2), shape, k[0], k[1],
                                            stride, pad))).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("shape,k,stride,pad", IM2COL_CASES)
def test_im2col_cnhw_col2im_cnhw_adjoint(shape, k, stride, pad):
    """The NumPy fast path's 6-D (C, KH, KW, N, OH, OW) layout: col2im_cnhw is the exact
    adjoint of im2col_cnhw, and the book layout is its transpose."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    col6 = fast.im2col_cnhw(x, k[0], k[1], stride, pad)
    C, kh, kw, N, oh, ow = col6.shape
    assert (C, kh, kw, N) == (shape[1], k[0], k[1], shape[0])
    c6 = rng.standard_normal(col6.shape)
    lhs = float((col6 * c6).sum())
    rhs = float((x * fast.col2im_cnhw(c6, shape, k[0], k[1], stride, pad)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)
    book = ref.im2col(x, k[0], k[1], pair(stride, "stride"), pair(pad, "pad"))
    np.testing.assert_array_equal(col6.transpose(3, 4, 5, 0, 1, 2).reshape(book.shape), book)


def test_im2col_book_layout_rows(backend):
    """Row (n, oy, ox) of the book's im2col is the flattened (C, KH, KW) window."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 4))
    col = backend.np(conv.im2col(backend.asarray(x), 3, 2, stride=2, pad=1))
    xp_ = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (5 + 2 - 3) // 2 + 1, (4 + 2 - 2) // 2 + 1
    assert col.shape == (2 * oh * ow, 3 * 3 * 2)
    for n, i, j in itertools.product(range(2), range(oh), range(ow)):
        row = xp_[n, :, 2 * i:2 * i + 3, 2 * j:2 * j + 2].reshape(-1)
        np.testing.assert_array_equal(col[(n * oh + i) * ow + j], row)


COUNTS_4x4_K3 = [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]


def test_col2im_counts_overlaps(backend):
    x_shape = (1, 1, 4, 4)
    col = conv.im2col(backend.asarray(np.zeros(x_shape)), 3, 3, 1, 0)
    ones = backend.asarray(np.ones(tuple(col.shape)))
    counts = backend.np(conv.col2im(ones, x_shape, 3, 3, 1, 0))[0, 0]
    np.testing.assert_array_equal(counts, COUNTS_4x4_K3)


def test_col2im_cnhw_counts_overlaps():
    x_shape = (1, 1, 4, 4)
    col = fast.im2col_cnhw(np.zeros(x_shape), 3, 3, 1, 0)
    counts = fast.col2im_cnhw(np.ones(col.shape), x_shape, 3, 3, 1, 0)[0, 0]
    np.testing.assert_array_equal(counts, COUNTS_4x4_K3)


@pytest.mark.parametrize("k,stride,pad,pad_value", [(3, 1, 1, 0), (3, 2, 2, 0), (2, 3, (0, 2), 0),
                                                   (3, 1, 1, -1.5), (4, 1, 3, 0)])
def test_im2col_workspace_reuse_is_safe(k, stride, pad, pad_value):
    """NumPy fast path: a reused column buffer keeps its padding entries (written only
    when the buffer is made) and gets every in-image entry rewritten."""
    rng = np.random.default_rng(0)
    ws = {}
    a, b = rng.standard_normal((2, 2, 7, 5)), rng.standard_normal((2, 2, 7, 5))
    fresh = [fast.im2col_cnhw(v, k, k, stride, pad, pad_value).copy() for v in (a, b, a)]
    bufs = []
    for v, want in zip((a, b, a), fresh):
        got = fast.im2col_cnhw(v, k, k, stride, pad, pad_value, workspace=ws)
        bufs.append(got)
        np.testing.assert_array_equal(got, want)
    assert bufs[0] is bufs[1] is bufs[2]                 # one buffer, reused
    # the same buffer key with another pad value gets its own buffer
    other = fast.im2col_cnhw(a, k, k, stride, pad, 7.0, workspace=ws)
    assert other is not bufs[0]
    np.testing.assert_array_equal(other, fast.im2col_cnhw(a, k, k, stride, pad, 7.0))
    np.testing.assert_array_equal(fast.im2col_cnhw(b, k, k, stride, pad, pad_value, workspace=ws),
                                  fresh[1])


# ---------------------------------------------------------------- GPU kernels on odd shapes

ODD = [((2, 33, 6, 6), (3, 3), 1, 1, 5),
       ((1, 35, 7, 5), (2, 3), 2, 0, 3),
       ((3, 1, 9, 13), (5, 5), 3, 2, 7),
       ((2, 65, 5, 3), (3, 2), 1, (1, 0), 2)]


@pytest.mark.parametrize("shape,k,stride,pad,fn", ODD)
def test_kernels_odd_shapes_vs_numpy(backend, shape, k, stride, pad, fn):
    """Channel counts that aren't multiples of 32 and odd sizes: the GPU kernels (and the
    NumPy path) agree with the loop references in float32 and float64."""
    rng = np.random.default_rng(shape[1])
    x = rng.standard_normal(shape)
    W = rng.standard_normal((fn, shape[1], k[0], k[1])) * 0.1
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = pad if isinstance(pad, tuple) else (pad, pad)
    y_ref = ref_conv(x, W, None, s, p)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, dW_ref, _ = ref_conv_backward(x, W, dy, s, p)
    for dt, tol in (("float64", 1e-12), ("float32", 2e-5)):
        y, col = conv.conv2d_forward(backend.asarray(x, dt), backend.asarray(W, dt), None,
                                     stride, pad)
        assert backend.dtype(y) == dt
        scale = np.abs(y_ref).max()
        backend.assert_close(y, y_ref, rtol=tol, atol=tol * scale)
        dx, dW, _ = conv.conv2d_backward(backend.asarray(dy, dt), col, backend.asarray(W, dt),
                                         shape, stride, pad)
        assert backend.dtype(dx) == dt and backend.dtype(dW) == dt
        backend.assert_close(dx, dx_ref, rtol=tol, atol=tol * np.abs(dx_ref).max())
        backend.assert_close(dW, dW_ref, rtol=tol, atol=tol * np.abs(dW_ref).max())
    if 2 * p[0] <= k[0] and 2 * p[1] <= k[1]:
        for mode in ("max", "avg"):
            y_ref, first = ref_pool(x, k[0], k[1], s, p, mode)
            dyp = rng.standard_normal(y_ref.shape)
            dx_ref = ref_pool_backward(shape, dyp, first, k[0], k[1], s, p, mode)
            layer = Pooling(k[0], k[1], stride, pad, mode=mode)
            backend.assert_close(layer.forward(backend.asarray(x, np.float32)), y_ref,
                                 rtol=1e-6, atol=1e-6)
            backend.assert_close(layer.backward(backend.asarray(dyp, np.float32)), dx_ref,
                                 rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- NumPy fast path vs reference
#
# The fast kernels (`xpnet.backend.numpy_fast`) and the readable ones
# (`xpnet.backend.reference`) called directly on the same float64 NumPy inputs, over the
# shape tables above, with contiguous and non-contiguous (strided, transposed) inputs.

TOL = dict(rtol=1e-12, atol=1e-12)
LAYOUTS = ["contiguous", "strided"]

# bigger cases, so the fast path's blocked GEMMs (F*K*P > its block size) run as well
FAST_CONV_CASES = CONV_CASES + [((2, 16, 16, 16), (32, 3, 3), 1, 1),
                                ((2, 8, 17, 17), (16, 3, 3), 2, 0)]


def _layout(a, layout):
    """`a` itself, or an equal non-contiguous view (every axis strided)."""
    a = np.asarray(a)
    if layout == "contiguous" or a.ndim == 0:
        return a
    base = np.zeros(a.shape[::-1] + (2,), dtype=a.dtype)
    base[..., 0] = a.T
    view = base[..., 0].T
    if a.size > 1:
        assert not view.flags.c_contiguous and not view.flags.f_contiguous
    np.testing.assert_array_equal(view, a)
    return view


def assert_same(got, want, what, exact=False):
    assert type(got) is np.ndarray, what
    assert got.shape == want.shape, "%s: shape %s != %s" % (what, got.shape, want.shape)
    assert got.dtype == want.dtype, "%s: dtype %s != %s" % (what, got.dtype, want.dtype)
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, err_msg=what, **TOL)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,fshape,stride,pad", FAST_CONV_CASES)
def test_fast_conv_equals_reference(shape, fshape, stride, pad, layout):
    rng = np.random.default_rng(sum(shape) * 3 + sum(fshape))
    s, p = pair(stride, "stride"), pair(pad, "pad")
    FN, KH, KW = fshape
    x = _layout(rng.standard_normal(shape), layout)
    W = _layout(rng.standard_normal((FN, shape[1], KH, KW)), layout)
    b = _layout(rng.standard_normal(FN), layout)
    y_r, col_r = ref.conv2d_forward(x, W, b, s, p)
    dy = _layout(rng.standard_normal(y_r.shape), layout)
    dx_r, dW_r, db_r = ref.conv2d_backward(dy, col_r, W, shape, s, p)
    y0_r, _ = ref.conv2d_forward(x, W, None, s, p)
    # BLAS free to thread (one big GEMM), then held at one thread (blocks of small GEMMs)
    # with a workspace reused over two calls
    for held in (False, True):
        ws = {} if held else None
        with parallel.ThreadPolicy(2, held).hold():
            for _ in range(2 if held else 1):
                y, ctx = fast.conv2d_forward(x, W, b, s, p, ws)
                assert_same(y, y_r, "y (held=%s)" % held)
                dx, dW, db = fast.conv2d_backward(dy, ctx, W, shape, s, p, True, ws)
                assert_same(dx, dx_r, "dx (held=%s)" % held)
                assert_same(dW, dW_r, "dW (held=%s)" % held)
                assert_same(db, db_r, "db (held=%s)" % held)
            y0, ctx0 = fast.conv2d_forward(x, W, None, s, p)
            assert_same(y0, y0_r, "y without bias")
            none, dW, db = fast.conv2d_backward(dy, ctx0, W, shape, s, p, need_dx=False)
            assert none is None
            assert_same(dW, dW_r, "dW (need_dx=False)")
            assert_same(db, db_r, "db (need_dx=False)")


POOL_DATA = ["normal", "ties", "signed-zeros"]


def _pool_input(rng, shape, data):
    if data == "normal":
        return rng.standard_normal(shape)
    if data == "ties":
        return rng.integers(0, 3, size=shape).astype(float)    # many ties
    # ties between -0.0 and 0.0 (equal, but not the same bits), among negatives
    return rng.choice(np.array([-0.0, 0.0, -1.0]), size=shape)


TIE_CASES = [((2, 3, 6, 6), (2, 2), 2, 0), ((1, 2, 5, 7), (3, 3), 1, 1),
             ((1, 2, 6, 6), (2, 2), 1, 1)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("data", POOL_DATA)
@pytest.mark.parametrize("shape,k,stride,pad", POOL_CASES + TIE_CASES)
def test_fast_max_pool_equals_reference(shape, k, stride, pad, data, layout):
    """Same output, and each window's gradient goes to the same (the first) maximum:
    a gradient routed to another of the tied entries would land elsewhere in dx."""
    rng = np.random.default_rng(sum(shape) + 10 * k[0] + k[1])
    s, p = pair(stride, "stride"), pair(pad, "pad")
    x = _layout(_pool_input(rng, shape, data), layout)
    y_r, arg = ref.max_pool_forward(x, k[0], k[1], s, p)
    y, ctx = fast.max_pool_forward(x, k[0], k[1], s, p)
    assert_same(y, y_r, "y")
    dy = _layout(rng.standard_normal(y_r.shape), layout)
    dx_r = ref.max_pool_backward(dy, arg, shape, k[0], k[1], s, p)
    dx = fast.max_pool_backward(dy, ctx, shape, k[0], k[1], s, p)
    assert_same(dx, dx_r, "dx")
    if data != "normal":          # the loops' first maximum too (np.argmax, row-major)
        _, first = ref_pool(np.asarray(x), k[0], k[1], s, p, "max")
        np.testing.assert_allclose(dx, ref_pool_backward(shape, dy, first, k[0], k[1], s, p,
                                                         "max"), **TOL)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,k,stride,pad", POOL_CASES + TIE_CASES)
def test_fast_avg_pool_equals_reference(shape, k, stride, pad, layout):
    rng = np.random.default_rng(sum(shape) + 10 * k[0] + k[1])
    s, p = pair(stride, "stride"), pair(pad, "pad")
    x = _layout(rng.standard_normal(shape), layout)
    y = fast.avg_pool_forward(x, k[0], k[1], s, p)
    assert_same(y, ref.avg_pool_forward(x, k[0], k[1], s, p), "y")
    dy = _layout(rng.standard_normal(y.shape), layout)
    assert_same(fast.avg_pool_backward(dy, shape, k[0], k[1], s, p),
                ref.avg_pool_backward(dy, shape, k[0], k[1], s, p), "dx")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,k,stride,pad", IM2COL_CASES + [
    (shape, fshape[1:], stride, pad) for shape, fshape, stride, pad in CONV_CASES])
def test_fast_im2col_col2im_equal_reference(shape, k, stride, pad, layout):
    """The book's 2-D layout: im2col copies the same numbers, col2im sums the same."""
    rng = np.random.default_rng(sum(shape) + k[0])
    s, p = pair(stride, "stride"), pair(pad, "pad")
    x = _layout(rng.standard_normal(shape), layout)
    col = fast.im2col(x, k[0], k[1], s, p)
    assert_same(col, ref.im2col(x, k[0], k[1], s, p), "im2col", exact=True)
    c = _layout(rng.standard_normal(col.shape), layout)
    assert_same(fast.col2im(c, shape, k[0], k[1], s, p), ref.col2im(c, shape, k[0], k[1], s, p),
                "col2im")


RELU_SHAPES = [(), (7,), (3, 4), (2, 3, 4, 5), (128, 4100)]   # the last one is threaded


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", RELU_SHAPES, ids=str)
def test_fast_relu_equals_reference(shape, layout):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape)
    x = np.where(np.abs(x) < 0.2, 0.0, x)                          # exact zeros: no gradient
    x = _layout(x, layout)
    y_r, mask_r = ref.relu_forward(x)
    y, mask = fast.relu_forward(x)
    assert_same(y, y_r, "y", exact=True)
    assert_same(np.asarray(mask), np.asarray(mask_r), "mask", exact=True)
    dy = _layout(rng.standard_normal(shape), layout)
    assert_same(fast.relu_backward(dy, mask), ref.relu_backward(dy, mask_r), "dx", exact=True)


# (N, K, F); the last ones are big enough to be split over CPU threads
AFFINE_SHAPES = [(1, 1, 1), (5, 7, 3), (64, 30, 10), (1000, 100, 50)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", AFFINE_SHAPES, ids=str)
def test_fast_affine_equals_reference(shape, bias, layout):
    N, K, F = shape
    rng = np.random.default_rng(N + K + F)
    x = _layout(rng.standard_normal((N, K)), layout)
    W = _layout(rng.standard_normal((K, F)), layout)
    b = _layout(rng.standard_normal(F), layout) if bias else None
    dy = _layout(rng.standard_normal((N, F)), layout)
    y_r = ref.affine_forward(x, W, b)
    dx_r, dW_r, db_r = ref.affine_backward(dy, x, W, True)
    # BLAS free to thread, and inside an MLP's pass (batch split, BLAS held)
    for heavy in (None, False):
        with (fast.pass_scope(heavy) if heavy is not None else parallel.ThreadPolicy(1, False).hold()):
            assert_same(fast.affine_forward(x, W, b), y_r, "y")
            dx, dW, db = fast.affine_backward(dy, x, W, True)
            assert_same(dx, dx_r, "dx")
            assert_same(dW, dW_r, "dW")
            assert_same(db, db_r, "db")
            none, dW, db = fast.affine_backward(dy, x, W, False)
            assert none is None
            assert_same(dW, dW_r, "dW (need_dx=False)")


# ---------------------------------------------------------------- sizes and errors

def test_conv_output_size():
    assert conv.conv_output_size(4, 3) == 2
    assert conv.conv_output_size(4, 3, 1, 1) == 4
    assert conv.conv_output_size(28, 5, 1, 0) == 24
    assert conv.conv_output_size(7, 3, 2, 1) == 4
    assert conv.conv_output_size(10, 3, 3, 2) == 4
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        conv.conv_output_size(4, 3, 0)
    with pytest.raises(ValueError, match="pad must be >= 0, got -1"):
        conv.conv_output_size(4, 3, 1, -1)
    with pytest.raises(ValueError, match="window 5 is larger than the padded input 4"):
        conv.conv_output_size(4, 5)


def test_conv_function_errors(backend):
    x = backend.asarray(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"4-D input \(N, C, H, W\), got shape \(4, 4\)"):
        conv.im2col(x[0, 0, :, :], 3, 3)
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        conv.im2col(x, 3, 3, stride=(1, 1, 1))
    with pytest.raises(ValueError, match="pad .* must be at most half the window"):
        conv.max_pool_forward(x, 2, 2, 2, pad=2)


def test_col2im_rejects_columns_of_the_wrong_shape(backend):
    x = backend.asarray(np.zeros((1, 1, 4, 4)))
    col = conv.im2col(x, 3, 3)
    assert tuple(col.shape) == (4, 9)
    with pytest.raises(ValueError, match=r"col2im: expected col of shape \(4, 9\)"):
        conv.col2im(col[:3, :], (1, 1, 4, 4), 3, 3)
    # as many numbers, the wrong shape: not to be silently reshaped
    with pytest.raises(ValueError, match=r"col2im: expected col of shape \(4, 9\)"):
        conv.col2im(backend.xp.matrix_transpose(col), (1, 1, 4, 4), 3, 3)
