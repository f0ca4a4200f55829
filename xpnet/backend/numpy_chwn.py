"""Stride-1 convolution in the batch-innermost layout (C, H, W, N), on NumPy only.

In (N, C, H, W) every im2col tap copies runs of one image row (8-28 floats), so the
copies run at a third to half of memory speed; with the batch innermost a tap copies
runs of ``OW * N`` floats. The GEMMs then write (FN, OH, OW, N) with no transposing
copy, and the output goes on as an (N, FN, OH, OW) *view* of that memory: ReLU and
pooling keep their input's layout (`empty_as`), so the next convolution gets its
input without a copy. The weight gradient and ``dx`` (the full convolution of dy
with the flipped filters, through the same routine) use the same layout.

The work is split over xpnet's CPU threads by output rows; partial weight gradients
are added in row order, so results don't depend on timing. `ENABLED` switches the
path off (tests compare both paths; benchmarks A/B them in one process).
"""
import functools

import numpy

from . import cpu_threads as parallel
from .geometry import geometry as _geometry, pair

__all__ = ["ENABLED", "Context", "applies", "is_chwn", "empty_as", "like", "c_major", "conv2d_forward",
           "conv2d_backward"]

ENABLED = True
_MIN_FLOPS = 1 << 21      # per thread: below this a hand-off costs more than it saves
_GEMM_BLOCK = 1 << 20     # F*K*w: column blocks this small skip most of OpenBLAS's packing
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def is_chwn(a):
    """Whether 4-D `a` (N, C, H, W) is a view of (C, H, W, N)-contiguous memory."""
    return a.ndim == 4 and a.transpose(1, 2, 3, 0).flags.c_contiguous


def empty_as(a, shape, dtype=None):
    """An uninitialised (N, C, H, W) array of `shape`, batch-innermost if `a` is
    (and not also plain C-contiguous, as with a batch of one)."""
    dtype = a.dtype if dtype is None else dtype
    if len(shape) == 4 and is_chwn(a) and not a.flags.c_contiguous:
        N, C, H, W = shape
        return numpy.empty((C, H, W, N), dtype=dtype).transpose(3, 0, 1, 2)
    return numpy.empty(shape, dtype=dtype)


def c_major(*arrays):
    """`arrays` (N, C, H, W) with N and C swapped when the first is batch-innermost, so
    that work split over axis 0 gives each CPU thread its own block of memory (split
    over N, the threads would write alternate runs of every cache line)."""
    a = arrays[0]
    if a.ndim == 4 and is_chwn(a) and not a.flags.c_contiguous:
        return tuple(v.transpose(1, 0, 2, 3) for v in arrays)
    return arrays


def like(a, ref):
    """`a` in the memory layout of `ref` (both (N, C, H, W)): itself, or a copy."""
    if is_chwn(ref) and not ref.flags.c_contiguous and not is_chwn(a):
        out = numpy.empty(a.shape[1:] + a.shape[:1], dtype=a.dtype)
        out[...] = a.transpose(1, 2, 3, 0)
        return out.transpose(3, 0, 1, 2)
    return a


def applies(x, W, stride, pad):
    """Whether this module convolves `x` with `W`: stride 1, padding below the kernel
    size (so ``dx`` is a full convolution too), one float dtype."""
    if not ENABLED or x.ndim != 4 or W.ndim != 4 or x.dtype != W.dtype or x.dtype not in _FLOATS:
        return False
    kh, kw = W.shape[2:]
    ph, pw = pair(pad, "Convolution pad")
    if not (pair(stride, "Convolution stride") == (1, 1) and 0 <= ph < kh and 0 <= pw < kw):
        return False
    # Kernels up to 3x3 (stacks of them, as in DeepConvNet, pass the layout from layer
    # to layer), or an input already in this layout. SimpleConvNet's 5x5 layer stays in
    # (N, C, H, W): its affine layer would have to convert the pooled output back, which
    # made that net 16 % (training) to 28 % (inference) slower at batch 1000.
    return kh * kw <= 9 or (is_chwn(x) and not x.flags.c_contiguous)


class Context:
    """What `conv2d_forward` keeps for `conv2d_backward`: the columns
    ``(C, KH, KW, OH, OW, N)`` and the row ranges of the threads."""
    __slots__ = ("col", "ranges")

    def __init__(self, col, ranges):
        self.col, self.ranges = col, ranges


def _chwn(a):
    """(C, H, W, N) memory of `a` (N, C, H, W): a view when `a` is batch-innermost."""
    t = a.transpose(1, 2, 3, 0)
    return t if t.flags.c_contiguous else numpy.ascontiguousarray(t)


def _buffer(ws, shape, dtype):
    """The layer's column buffer, reused while shape and dtype match."""
    if ws is None:
        return numpy.empty(shape, dtype=dtype)
    key = ("chwn-col", tuple(shape), str(dtype))
    buf = ws.get(key)
    if buf is None:
        for k in [k for k in ws if isinstance(k, tuple) and k[:1] == ("chwn-col",)]:
            del ws[k]
        buf = ws[key] = numpy.empty(shape, dtype=dtype)
    return buf


def _span(o0, o1, k, pad, n_in):
    """Outputs ``a:b`` within ``o0:o1`` whose tap ``o + k - pad`` lies inside the input."""
    a = min(max(o0, pad - k), o1)
    return a, max(a, min(o1, n_in + pad - k))


def _im2col(xc, col, ph, pw, r0, r1):
    """``col[c, ky, kx, oy, ox, n] = x[c, oy+ky-ph, ox+kx-pw, n]`` (0 outside x) for the
    output rows ``r0:r1``."""
    _, H, W, _ = xc.shape
    _, kh, kw, _, OW, _ = col.shape
    for ky in range(kh):
        y0, y1 = _span(r0, r1, ky, ph, H)
        for kx in range(kw):
            x0, x1 = _span(0, OW, kx, pw, W)
            t = col[:, ky, kx]
            t[:, r0:y0] = 0
            t[:, y1:r1] = 0
            if y1 > y0:
                t[:, y0:y1, :x0] = 0
                t[:, y0:y1, x1:] = 0
                if x1 > x0:
                    t[:, y0:y1, x0:x1] = xc[:, y0 + ky - ph:y1 + ky - ph, x0 + kx - pw:x1 + kx - pw]


@functools.lru_cache(maxsize=256)
def _block_width(L, size, least):
    """The largest w dividing L with size*w <= _GEMM_BLOCK and w >= least, or 0. Widths
    that are multiples of 64 floats from 128 up are skipped: blocks whose rows lie
    L floats apart measured up to 1.7x slower at w = 448 than at 392 or 400 here
    (cache-set conflicts)."""
    for w in range(min(L, _GEMM_BLOCK // size), least - 1, -1):
        if L % w == 0 and (w % 64 or w < 128):
            return w
    return 0


def _gemm(Wm, col2, out2):
    """``out2 (F, L) = Wm (F, K) @ col2 (K, L)``: column ranges of bigger arrays, done in
    column blocks that fit the cache while BLAS is single-threaded."""
    F, K = Wm.shape
    L = col2.shape[1]
    w = _block_width(L, F * K, 32) if parallel.blas_single_threaded() else 0
    if w == 0:
        numpy.matmul(Wm, col2, out=out2)
        return
    k = L // w
    numpy.matmul(Wm, col2.reshape(K, k, w).transpose(1, 0, 2),
                 out=out2.reshape(F, k, w).transpose(1, 0, 2))


def _convolve(xc, Wm, col, out, ph, pw, b):
    """`out` (F, OH, OW, N) = the stride-1 convolution of `xc` (C, H, W, N) by `Wm`
    (F, C*KH*KW) (+ `b`), filling `col` on the way. Returns the threads' row ranges."""
    C, kh, kw, OH, OW, N = col.shape
    F, K = Wm.shape
    row = OW * N
    col2 = col.reshape(K, -1)
    out2 = out.reshape(F, -1)

    def part(i, a, e):
        _im2col(xc, col, ph, pw, a, e)
        s = slice(a * row, e * row)
        _gemm(Wm, col2[:, s], out2[:, s])
        if b is not None:
            out2[:, s] += b[:, None]

    ranges = parallel.plan(OH, F * K * OH * row, _MIN_FLOPS)
    parallel.run(ranges, part)
    return ranges


def conv2d_forward(x, W, b, pad, workspace=None):
    """``y = conv(x, W) + b`` (stride 1) for x (N, C, H, W): returns ``(y, ctx)``, `y`
    an (N, FN, OH, OW) view of batch-innermost memory."""
    FN, C, kh, kw = W.shape
    N, _, H, Wd, _, _, ph, pw, oh, ow = _geometry(x.shape, kh, kw, (1, 1), pad, "Convolution")
    col = _buffer(workspace, (C, kh, kw, oh, ow, N), x.dtype)
    y = numpy.empty((FN, oh, ow, N), dtype=x.dtype)
    ranges = _convolve(_chwn(x), W.reshape(FN, -1), col, y, ph, pw, b)
    return y.transpose(3, 0, 1, 2), Context(col, ranges)


def _weight_grad(dy2, col2):
    """``dW^T (K, F) = col2 (K, L) @ dy2 (F, L)^T``: (K, w) @ (w, F) blocks, dy's copied
    to (w, F), summed in order; with few filters this orientation measured fastest
    (as in numpy_fast)."""
    F, L = dy2.shape
    K = col2.shape[0]
    w = _block_width(L, F * K, 64) if parallel.blas_single_threaded() else 0
    if w == 0:
        return numpy.matmul(col2, dy2.T)
    from .numpy_fast import _scratch                # per-thread temporaries
    k = L // w
    dyb = _scratch("dyb", (k, w, F), dy2.dtype)
    dyb[...] = dy2.reshape(F, k, w).transpose(1, 2, 0)
    partial = _scratch("dWp", (k, K, F), numpy.result_type(col2.dtype, dy2.dtype))
    numpy.matmul(col2.reshape(K, k, w).transpose(1, 0, 2), dyb, out=partial)
    return partial.sum(axis=0)


def conv2d_backward(dy, ctx, W, x_shape, pad, need_dx=True):
    """Gradients ``(dx, dW, db)`` of `conv2d_forward` (dx None if not `need_dx`; else an
    (N, C, H, W) view of batch-innermost memory)."""
    from .numpy_fast import _scratch                # the per-thread temporaries
    FN, C, kh, kw = W.shape
    N, _, H, Wd = x_shape
    ph, pw = pair(pad, "Convolution pad")
    _, _, _, oh, ow, _ = ctx.col.shape
    if tuple(dy.shape) != (N, FN, oh, ow):
        raise ValueError("conv2d_backward: dy has shape %s, expected %s"
                         % (tuple(dy.shape), (N, FN, oh, ow)))
    dyc = _chwn(dy)
    dy2 = dyc.reshape(FN, -1)
    col2 = ctx.col.reshape(C * kh * kw, -1)
    row = ow * N

    def part(i, a, e):
        s = slice(a * row, e * row)
        return _weight_grad(dy2[:, s], col2[:, s]), dy2[:, s].sum(axis=1)

    parts = parallel.run(ctx.ranges, part)
    dWt, db = parts[0]
    for p_dWt, p_db in parts[1:]:         # in row order: results don't depend on timing
        dWt = dWt + p_dWt
        db = db + p_db
    dx = None
    if need_dx:
        Wf = numpy.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, -1)
        colT = _scratch("colT", (FN, kh, kw, H, Wd, N), dy.dtype)
        dxc = numpy.empty((C, H, Wd, N), dtype=dy.dtype)
        _convolve(dyc, Wf, colT, dxc, kh - 1 - ph, kw - 1 - pw, None)
        dx = dxc.transpose(3, 0, 1, 2)
    return dx, numpy.ascontiguousarray(dWt.T).reshape(W.shape), db
