"""im2col / col2im and pooling, fast on both backends.

Layout. The fast paths keep columns as ``col[c, ky, kx, n, oy, ox]``: one
GEMM ``W(FN, C*KH*KW) @ col(C*KH*KW, N*OH*OW)`` does the whole batch, every
(ky, kx) slice is a plain strided copy of the padded image on NumPy, and
col2im is a sum of KH*KW shifted slice-adds (never ``np.add.at``).
On CuPy each of im2col, col2im, max-pool forward and backward is one
elementwise kernel; col2im and the pooling backward *gather* (one thread per
input pixel), so they need no atomics and are deterministic.

The book's 2-D layout ``(N*OH*OW, C*KH*KW)`` is available through `im2col`
and `col2im` for readers following chapter 7.
"""
import functools
import math
import threading

from .backend import cpu_threads as parallel
from .backend import elementwise_kernel, get_array_module
import numpy

__all__ = [
    "conv_output_size", "im2col", "col2im", "im2col_cnhw", "col2im_cnhw",
    "conv2d_forward", "conv2d_backward", "release_scratch",
    "max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
]


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError("%s must be an int or a pair (h, w), got %r" % (name, v))
        a, b = v
    else:
        a = b = v
    try:
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise TypeError("%s must be an int or a pair of ints, got %r" % (name, v)) from None
    return a, b


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


def _geometry(x_shape, kh, kw, stride, pad, what):
    if len(x_shape) != 4:
        raise ValueError("%s expects a 4-D input (N, C, H, W), got shape %s" % (what, tuple(x_shape)))
    sy, sx = _pair(stride, "stride")
    ph, pw = _pair(pad, "pad")
    N, C, H, W = x_shape
    oh = conv_output_size(H, kh, sy, ph, what)
    ow = conv_output_size(W, kw, sx, pw, what)
    return N, C, H, W, sy, sx, ph, pw, oh, ow


def _pad(xp, x, ph, pw, value):
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    out = xp.empty((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    out[...] = value
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


# ---------------------------------------------------------------- CUDA kernels

_DECODE_COL = """
    int ox = i % ow; int t = i / ow;
    int oy = t % oh; t /= oh;
    int n = t % N; t /= N;
    int kx = t % kw; t /= kw;
    int ky = t % kh; int c = t / kh;
"""


def _im2col_kernel():
    return elementwise_kernel(
        "raw T x, int32 N, int32 C, int32 H, int32 W, int32 kh, int32 kw, int32 oh, int32 ow, "
        "int32 sy, int32 sx, int32 ph, int32 pw, T pval",
        "T col",
        _DECODE_COL + """
        int y = oy * sy - ph + ky;
        int xx = ox * sx - pw + kx;
        col = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[((n * C + c) * H + y) * W + xx] : pval;
        """,
        "xpnet_im2col_cnhw")


def _col2im_kernel():
    # One thread per image pixel, summing the column entries that read it.
    return elementwise_kernel(
        "raw T col, int32 N, int32 C, int32 H, int32 W, int32 kh, int32 kw, int32 oh, int32 ow, "
        "int32 sy, int32 sx, int32 ph, int32 pw",
        "T img",
        """
        int xx = i % W; int t = i / W;
        int y = t % H; t /= H;
        int c = t % C; int n = t / C;
        T acc = 0;
        for (int ky = 0; ky < kh; ++ky) {
            int yy = y + ph - ky;
            if (yy < 0 || yy % sy != 0) continue;
            int oy = yy / sy;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int xq = xx + pw - kx;
                if (xq < 0 || xq % sx != 0) continue;
                int ox = xq / sx;
                if (ox >= ow) continue;
                acc += col[((((c * kh + ky) * kw + kx) * N + n) * oh + oy) * ow + ox];
            }
        }
        img = acc;
        """,
        "xpnet_col2im_cnhw")


def _maxpool_fwd_kernel():
    return elementwise_kernel(
        "raw T x, int32 H, int32 W, int32 kh, int32 kw, int32 oh, int32 ow, "
        "int32 sy, int32 sx, int32 ph, int32 pw",
        "T y, int32 arg",
        """
        int ox = i % ow; int t = i / ow;
        int oy = t % oh; int nc = t / oh;
        const T* p = &x[(long long)nc * H * W];
        int y0 = oy * sy - ph, x0 = ox * sx - pw;
        T best = 0; int barg = -1;
        for (int ky = 0; ky < kh; ++ky) {
            int yy = y0 + ky;
            if (yy < 0 || yy >= H) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int xq = x0 + kx;
                if (xq < 0 || xq >= W) continue;
                T v = p[yy * W + xq];
                if (barg < 0 || v > best || v != v && best == best) { best = v; barg = ky * kw + kx; }
            }
        }
        y = best; arg = barg;
        """,
        "xpnet_maxpool_fwd")


def _maxpool_bwd_kernel():
    return elementwise_kernel(
        "raw T dy, raw int32 arg, int32 H, int32 W, int32 kh, int32 kw, int32 oh, int32 ow, "
        "int32 sy, int32 sx, int32 ph, int32 pw",
        "T dx",
        """
        int xx = i % W; int t = i / W;
        int y = t % H; int nc = t / H;
        long long base = (long long)nc * oh * ow;
        T acc = 0;
        for (int ky = 0; ky < kh; ++ky) {
            int yy = y + ph - ky;
            if (yy < 0 || yy % sy != 0) continue;
            int oy = yy / sy;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int xq = xx + pw - kx;
                if (xq < 0 || xq % sx != 0) continue;
                int ox = xq / sx;
                if (ox >= ow) continue;
                long long o = base + oy * ow + ox;
                if (arg[o] == ky * kw + kx) acc += dy[o];
            }
        }
        dx = acc;
        """,
        "xpnet_maxpool_bwd")


def _avgpool_fwd_kernel():
    return elementwise_kernel(
        "raw T x, int32 H, int32 W, int32 kh, int32 kw, int32 oh, int32 ow, "
        "int32 sy, int32 sx, int32 ph, int32 pw",
        "T y",
        """
        int ox = i % ow; int t = i / ow;
        int oy = t % oh; int nc = t / oh;
        const T* p = &x[(long long)nc * H * W];
        int y0 = oy * sy - ph, x0 = ox * sx - pw;
        T acc = 0;
        for (int ky = 0; ky < kh; ++ky) {
            int yy = y0 + ky;
            if (yy < 0 || yy >= H) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int xq = x0 + kx;
                if (xq < 0 || xq >= W) continue;
                acc += p[yy * W + xq];
            }
        }
        y = acc / (T)(kh * kw);
        """,
        "xpnet_avgpool_fwd")


def _avgpool_bwd_kernel():
    return elementwise_kernel(
        "raw T dy, int32 H, int32 W, int32 kh, int32 kw, int32 oh, int32 ow, "
        "int32 sy, int32 sx, int32 ph, int32 pw",
        "T dx",
        """
        int xx = i % W; int t = i / W;
        int y = t % H; int nc = t / H;
        long long base = (long long)nc * oh * ow;
        T acc = 0;
        for (int ky = 0; ky < kh; ++ky) {
            int yy = y + ph - ky;
            if (yy < 0 || yy % sy != 0) continue;
            int oy = yy / sy;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int xq = xx + pw - kx;
                if (xq < 0 || xq % sx != 0) continue;
                int ox = xq / sx;
                if (ox >= ow) continue;
                acc += dy[base + oy * ow + ox];
            }
        }
        dx = acc / (T)(kh * kw);
        """,
        "xpnet_avgpool_bwd")


def _is_numpy(xp):
    return xp.__name__ == "numpy"


_WORKSPACE_SIZE = 10   # buffers for the training batch, the eval batch, a last partial batch


def _key(key, xp, shape, dtype):
    return (key, tuple(shape), str(dtype), xp.__name__)


def _buffer(ws, key, xp, shape, dtype):
    """An uninitialised array from workspace dict `ws`, reused while shape, dtype and
    array module match (least recently used ones are dropped). Reuse spares the page
    faults of fresh multi-MB allocations, which on the CPU cost as much as the copy
    that fills them."""
    if ws is None:
        return xp.empty(shape, dtype=dtype)
    k = _key(key, xp, shape, dtype)
    buf = ws.pop(k, None)
    if buf is None:
        while len(ws) >= _WORKSPACE_SIZE:
            ws.pop(next(iter(ws)))
        buf = xp.empty(shape, dtype=dtype)
    ws[k] = buf
    return buf


def _part_workspace(ws, i):
    """Workspace of batch slice `i` (each CPU thread fills its own buffers)."""
    if ws is None:
        return None
    parts = ws.setdefault("parts", [])
    while len(parts) <= i:
        parts.append({})
    return parts[i]


_scratch_bufs = {}     # thread id -> {slot: uint8 buffer}


def _scratch(slot, xp, shape, dtype):
    """A NumPy temporary that lives only inside one call (GEMM outputs, the columns of
    dy), from a buffer per thread and slot that grows to the largest request: all
    layers share it, where a per-layer buffer would hold one of each per layer."""
    dtype = xp.dtype(dtype)
    need = dtype.itemsize * math.prod(shape)
    bufs = _scratch_bufs.get(threading.get_ident())
    if bufs is None:
        # a new thread: drop the buffers of threads that have ended
        alive = {t.ident for t in threading.enumerate()}
        for ident in [i for i in _scratch_bufs if i not in alive]:
            _scratch_bufs.pop(ident, None)
        bufs = _scratch_bufs[threading.get_ident()] = {}
    raw = bufs.get(slot)
    if raw is None or raw.nbytes < need:
        raw = bufs[slot] = xp.empty(max(need, 64), dtype=xp.uint8)
    return raw[:need].view(dtype).reshape(shape)


def release_scratch():
    """Free the CPU temporaries that convolutions keep between calls (per thread, the
    size of the largest layer's); the next call makes them again. Call it only while
    no convolution is running."""
    _scratch_bufs.clear()


# ---------------------------------------------------------------- im2col/col2im

def _valid(k, pad, step, n_out, n_in):
    """Outputs ``o0:o1`` whose tap ``o*step - pad + k`` lies inside the input, and the
    first input index they read."""
    o0 = min(n_out, max(0, -(-(pad - k) // step)))
    o1 = max(o0, min(n_out, (n_in - 1 + pad - k) // step + 1))
    return o0, o1, o0 * step - pad + k


def im2col_cnhw(x, kh, kw, stride=1, pad=0, pad_value=0, workspace=None, key="col"):
    """Columns of `x` (N, C, H, W) as a 6-D array ``(C, KH, KW, N, OH, OW)``.

    With a `workspace` dict the column buffer is reused across calls (so the
    returned array is overwritten by the next call with the same key)."""
    xp = get_array_module(x)
    N, C, H, W, sy, sx, ph, pw, oh, ow = _geometry(x.shape, kh, kw, stride, pad, "im2col")
    shape = (C, kh, kw, N, oh, ow)
    if not _is_numpy(xp):
        col = _buffer(workspace, key, xp, shape, x.dtype)
        _im2col_kernel()(xp.ascontiguousarray(x), N, C, H, W, kh, kw, oh, ow, sy, sx, ph, pw,
                         x.dtype.type(pad_value), col)
        return col
    # The padding entries of a buffer are the same for every call with this key, so
    # they are filled once, when the buffer is made.
    k = (key, sy, sx, ph, pw, H, W, pad_value)
    fresh = workspace is None or _key(k, xp, shape, x.dtype) not in workspace
    col = _buffer(workspace, k, xp, shape, x.dtype)
    return _im2col_numpy(x, col, sy, sx, ph, pw, pad_value, fill_padding=fresh)


def _im2col_numpy(x, col, sy, sx, ph, pw, pad_value, fill_padding=True):
    """Fill `col` (C, KH, KW, N, OH, OW) from `x` with no padded copy of x: each tap
    copies only its in-image rectangle, and its padding strips are filled with
    `pad_value` if `fill_padding`."""
    _, kh, kw, _, oh, ow = col.shape
    H, W = x.shape[2:]
    xt = x.transpose(1, 0, 2, 3)
    for ky in range(kh):
        y0, y1, iy = _valid(ky, ph, sy, oh, H)
        for kx in range(kw):
            x0, x1, ix = _valid(kx, pw, sx, ow, W)
            tap = col[:, ky, kx]
            if fill_padding and (y0 > 0 or y1 < oh or x0 > 0 or x1 < ow):
                tap[:, :, :y0] = pad_value
                tap[:, :, y1:] = pad_value
                tap[:, :, y0:y1, :x0] = pad_value
                tap[:, :, y0:y1, x1:] = pad_value
            if y1 > y0 and x1 > x0:
                tap[:, :, y0:y1, x0:x1] = xt[:, :, iy:iy + sy * (y1 - y0 - 1) + 1:sy,
                                             ix:ix + sx * (x1 - x0 - 1) + 1:sx]
    return col


def col2im_cnhw(col, x_shape, kh, kw, stride=1, pad=0):
    """Adjoint of `im2col_cnhw`: sums overlapping windows back into (N, C, H, W)."""
    xp = get_array_module(col)
    N, C, H, W, sy, sx, ph, pw, oh, ow = _geometry(x_shape, kh, kw, stride, pad, "col2im")
    if col.shape != (C, kh, kw, N, oh, ow):
        raise ValueError("col2im: expected columns of shape %s for input %s, got %s"
                         % ((C, kh, kw, N, oh, ow), tuple(x_shape), col.shape))
    if _is_numpy(xp):
        img = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
        for ky in range(kh):
            ye = ky + sy * oh
            for kx in range(kw):
                img[:, :, ky:ye:sy, kx:kx + sx * ow:sx] += col[:, ky, kx]
        img = img.transpose(1, 0, 2, 3)
        if ph or pw:
            img = img[:, :, ph:ph + H, pw:pw + W]
        return xp.ascontiguousarray(img)
    img = xp.empty((N, C, H, W), dtype=col.dtype)
    _col2im_kernel()(xp.ascontiguousarray(col), N, C, H, W, kh, kw, oh, ow, sy, sx, ph, pw, img)
    return img


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """The book's im2col: ``(N*OH*OW, C*FH*FW)`` rows ordered (n, oy, ox)."""
    col = im2col_cnhw(input_data, filter_h, filter_w, stride, pad)
    C, kh, kw, N, oh, ow = col.shape
    xp = get_array_module(col)
    return xp.ascontiguousarray(col.transpose(3, 4, 5, 0, 1, 2)).reshape(N * oh * ow, -1)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The book's col2im: adjoint of `im2col` (overlaps are summed)."""
    xp = get_array_module(col)
    N, C, H, W, sy, sx, ph, pw, oh, ow = _geometry(input_shape, filter_h, filter_w, stride, pad,
                                                   "col2im")
    expected = (N * oh * ow, C * filter_h * filter_w)
    if tuple(col.shape) != expected:
        raise ValueError("col2im: expected col of shape %s for input %s, got %s"
                         % (expected, tuple(input_shape), tuple(col.shape)))
    c6 = col.reshape(N, oh, ow, C, filter_h, filter_w).transpose(3, 4, 5, 0, 1, 2)
    return col2im_cnhw(xp.ascontiguousarray(c6), input_shape, filter_h, filter_w, stride, pad)


# ---------------------------------------------------------------- convolution

class ConvContext:
    """What `conv2d_forward` keeps for `conv2d_backward`: the column buffers, one
    per batch slice (the CPU splits the batch over threads; the GPU has one)."""
    __slots__ = ("cols", "ranges")

    def __init__(self, cols, ranges):
        self.cols, self.ranges = cols, ranges


def conv2d_forward(x, W, b, stride=1, pad=0, workspace=None):
    """``y = conv(x, W) + b`` for x (N,C,H,W), W (FN,C,KH,KW), b (FN,) or None.

    Returns ``(y, ctx)``; pass `ctx` to `conv2d_backward`. A `workspace` dict
    (one per layer) lets the large column buffers be reused between steps."""
    xp = get_array_module(x, W)
    FN, C, kh, kw = W.shape
    W2 = W.reshape(FN, -1)
    if not _is_numpy(xp):
        col = im2col_cnhw(x, kh, kw, stride, pad, workspace=workspace)
        _, _, _, N, oh, ow = col.shape
        y = xp.dot(W2, col.reshape(C * kh * kw, -1))                      # (FN, N*OH*OW)
        if b is not None:
            y += b.reshape(FN, 1)
        y = xp.ascontiguousarray(y.reshape(FN, N, oh, ow).transpose(1, 0, 2, 3))
        return y, ConvContext([col], [(0, N)])
    N, _, _, _, _, _, _, _, oh, ow = _geometry(x.shape, kh, kw, stride, pad, "im2col")
    y = xp.empty((N, FN, oh, ow), dtype=xp.result_type(x.dtype, W.dtype))
    bias = None if b is None else b.reshape(FN, 1)

    def part(i, a, e):
        ws = _part_workspace(workspace, i)
        col = im2col_cnhw(x[a:e], kh, kw, stride, pad, workspace=ws)
        _gemm_per_image(W2, col.reshape(C * kh * kw, -1), y[a:e])
        if bias is not None:
            y[a:e] += bias.reshape(1, FN, 1, 1)
        return col

    ranges = parallel.plan(N, N * FN * oh * ow * C * kh * kw, _MIN_FLOPS)
    return y, ConvContext(parallel.run(ranges, part), ranges)


_MIN_FLOPS = 1 << 21   # per thread: below this a hand-off costs more than it saves
_GEMM_BLOCK = 1 << 20  # F*K*w: GEMMs this small skip most of OpenBLAS's packing


@functools.lru_cache(maxsize=256)
def _block_width(P, size, least, block=None):
    """The largest w dividing P with size*w <= block (_GEMM_BLOCK), or 0 if below `least`."""
    k = max(1, -(-size * P // (block or _GEMM_BLOCK)))        # the fewest blocks that fit
    while k <= P // least:
        if P % k == 0:
            return P // k
        k += 1
    return 0


def _gemm_per_image(Wm, col2, out):
    """``out[n] = Wm @ (the columns of image n)`` for `out` (n, F, ...) contiguous,
    `Wm` (F, K), `col2` (K, n*P) with P pixels per image, on NumPy.

    With few filters (F = 16..64) one big GEMM is slow: OpenBLAS copies ("packs") all
    of `col2` to compute just F rows from it. Batches of small GEMMs over column
    blocks of width w dividing P (the largest with F*K*w <= _GEMM_BLOCK) measured
    10-40 % faster here and write NCHW directly; when no such w >= 32 exists, one
    GEMM and a transposing copy, as also when BLAS may use several threads (small
    GEMMs don't thread). The choice depends on shapes and the thread setting only,
    so results are reproducible."""
    n, F = out.shape[:2]
    K, P = col2.shape[0], col2.shape[1] // max(n, 1)
    w = _block_width(P, F * K, 32, _GEMM_BLOCK)
    if w == 0 or n == 0 or not parallel.blas_is_single_threaded():
        t = _scratch("gemm", numpy, (F, n * P), out.dtype)
        numpy.dot(Wm, col2, out=t)
        out.reshape(n, F, P)[...] = t.reshape(F, n, P).transpose(1, 0, 2)
        return
    k = P // w
    blocks = col2.reshape(K, n * k, w).transpose(1, 0, 2)               # (n*k, K, w) views
    if k == 1:
        numpy.matmul(Wm, blocks, out=out.reshape(n, F, P))
        return
    t = _scratch("gemm", numpy, (n * k, F, w), out.dtype)
    numpy.matmul(Wm, blocks, out=t)
    out.reshape(n, F, k, w)[...] = t.reshape(n, k, F, w).transpose(0, 2, 1, 3)


def conv2d_backward(dy, ctx, W, x_shape, stride=1, pad=0, need_dx=True, workspace=None):
    """Gradients ``(dx, dW, db)`` of `conv2d_forward` (dx is None if not `need_dx`)."""
    if not isinstance(ctx, ConvContext):
        raise TypeError("conv2d_backward: ctx must be the ConvContext that conv2d_forward "
                        "returned with y, got %s" % type(ctx).__name__)
    xp = get_array_module(dy, W)
    FN, C, kh, kw = W.shape
    N, _, H, Wd = x_shape
    oh, ow = dy.shape[2:]
    K = C * kh * kw
    sy, sx = _pair(stride, "stride")
    ph, pw = _pair(pad, "pad")
    W2 = W.reshape(FN, -1)
    # Stride 1 on the CPU: dx is the full convolution of dy with the flipped filters,
    # an im2col + GEMM that is cheaper than GEMM + col2im (col2im's adds dominate).
    full_conv = need_dx and _is_numpy(xp) and sy == sx == 1 and ph < kh and pw < kw
    if full_conv:
        Wf = xp.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, -1)
    dx = (xp.empty(x_shape, dtype=xp.result_type(dy.dtype, W.dtype))
          if need_dx and _is_numpy(xp) else None)

    def tmp(slot, shape):
        if _is_numpy(xp):
            return _scratch(slot, xp, shape, dy.dtype)
        return _buffer(workspace, slot, xp, shape, dy.dtype)

    def part(i, a, e):
        n = e - a
        col2 = ctx.cols[i].reshape(K, -1)
        dy2 = None
        if _is_numpy(xp):
            dWt = _weight_grad(col2, dy[a:e])
            db = dy[a:e].sum(axis=(0, 2, 3))
        if not _is_numpy(xp) or (need_dx and not full_conv):
            dyt = tmp("dy2", (FN, n, oh, ow))
            dyt[...] = dy[a:e].transpose(1, 0, 2, 3)
            dy2 = dyt.reshape(FN, -1)                                    # (FN, n*OH*OW)
        if not _is_numpy(xp):
            dWt = xp.dot(col2, dy2.T)
            db = dy2.sum(axis=1)
        if full_conv:
            colT = _im2col_numpy(dy[a:e], tmp("colT", (FN, kh, kw, n, H, Wd)), 1, 1,
                                 kh - 1 - ph, kw - 1 - pw, 0)
            _gemm_per_image(Wf, colT.reshape(FN * kh * kw, -1), dx[a:e])
        elif need_dx:
            dcol = tmp("dcol", ctx.cols[i].shape)
            xp.dot(W2.T, dy2, out=dcol.reshape(K, -1))
            d = col2im_cnhw(dcol, (n, C, H, Wd), kh, kw, stride, pad)
            if dx is None:
                return dWt, db, d             # the GPU: one slice, no copy
            dx[a:e] = d
        return dWt, db, None

    if not _is_numpy(xp):
        dWt, db, dx = part(0, 0, N)
        return dx, xp.ascontiguousarray(dWt.T).reshape(W.shape), db
    parts = parallel.run(ctx.ranges, part)
    dWt, db, _ = parts[0]
    for p_dWt, p_db, _ in parts[1:]:
        dWt = dWt + p_dWt
        db = db + p_db
    dW = xp.ascontiguousarray(dWt.T).reshape(W.shape)
    return dx, dW, db


def _weight_grad(col2, dy):
    """``dWt (K, F) = col2 (K, n*P) @ dy^T`` for `dy` (n, F, ...) on NumPy, by the same
    blocks as `_gemm_per_image` (here from w >= 64, where they measured faster): each
    block's (K, F) product, then their sum, without a transposed copy of dy."""
    n, F = dy.shape[:2]
    K, P = col2.shape[0], col2.shape[1] // max(n, 1)
    w = _block_width(P, F * K, 64, _GEMM_BLOCK)
    d3 = dy.reshape(n, F, P)
    if w == 0 or n == 0 or not parallel.blas_is_single_threaded():
        # (K, M) @ (M, F) blocks better in OpenBLAS than (F, M) @ (M, K) for small F
        dyt = _scratch("dy2", numpy, (F, n, P), dy.dtype)
        dyt[...] = d3.transpose(1, 0, 2)
        return numpy.dot(col2, dyt.reshape(F, -1).T)
    k = P // w
    blocks = col2.reshape(K, n * k, w).transpose(1, 0, 2)               # (n*k, K, w) views
    if k == 1:
        dyb = d3.transpose(0, 2, 1)                                      # (n, P, F) views
    else:
        dyb = _scratch("dyb", numpy, (n * k, w, F), dy.dtype)
        dyb.reshape(n, k, w, F)[...] = d3.reshape(n, F, k, w).transpose(0, 2, 3, 1)
    partial = _scratch("dWp", numpy, (n * k, K, F), numpy.result_type(col2.dtype, dy.dtype))
    numpy.matmul(blocks, dyb, out=partial)
    return partial.sum(axis=0)


# ---------------------------------------------------------------- pooling

def _pool_geometry(x_shape, kh, kw, stride, pad, what):
    g = _geometry(x_shape, kh, kw, stride, pad, what)
    ph, pw = g[6], g[7]
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError("%s: pad (%d, %d) must be at most half the window (%d, %d), "
                         "or some windows would see only padding" % (what, ph, pw, kh, kw))
    return g


def max_pool_forward(x, kh, kw, stride, pad=0):
    """Max pooling with -inf padding. Returns ``(y, ctx)``; pass `ctx` to
    `max_pool_backward`, which routes each gradient to the first maximum of its
    window (row-major), as ``argmax`` would.

    On CuPy `ctx` is the int32 argmax index ``ky*KW + kx`` per output; on NumPy it
    is the (padded) input, and the backward finds the first maximum by comparison,
    which is cheaper than tracking the index through strided slices."""
    xp = get_array_module(x)
    N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x.shape, kh, kw, stride, pad, "Pooling")
    if not _is_numpy(xp):
        y = xp.empty((N, C, oh, ow), dtype=x.dtype)
        arg = xp.empty((N, C, oh, ow), dtype=xp.int32)
        _maxpool_fwd_kernel()(xp.ascontiguousarray(x), H, W, kh, kw, oh, ow, sy, sx, ph, pw,
                              y, arg)
        return y, arg
    xpd = _pad(xp, x, ph, pw, -xp.inf)
    y = xp.empty((N, C, oh, ow), dtype=x.dtype)

    def part(i, a, e):
        win = [xpd[a:e, :, ky:ky + sy * oh:sy, kx:kx + sx * ow:sx]
               for ky in range(kh) for kx in range(kw)]
        if len(win) == 1:
            y[a:e] = win[0]
            return
        xp.maximum(win[0], win[1], out=y[a:e])
        for v in win[2:]:
            xp.maximum(y[a:e], v, out=y[a:e])

    parallel.run(parallel.plan(N, y.size * kh * kw, _MIN_ELEMENTS), part)
    return y, xpd


_MIN_ELEMENTS = 1 << 18   # per thread, for memory-bound work


def max_pool_backward(dy, ctx, x_shape, kh, kw, stride, pad=0, y=None):
    """Gradient of `max_pool_forward`; `y` is its output (needed on NumPy)."""
    xp = get_array_module(dy)
    N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x_shape, kh, kw, stride, pad, "Pooling")
    if not _is_numpy(xp):
        dx = xp.empty((N, C, H, W), dtype=dy.dtype)
        _maxpool_bwd_kernel()(xp.ascontiguousarray(dy), xp.ascontiguousarray(ctx),
                              H, W, kh, kw, oh, ow, sy, sx, ph, pw, dx)
        return dx
    if y is None:
        raise ValueError("max_pool_backward on NumPy needs the forward output y")
    xpd = ctx
    overlap = sy < kh or sx < kw
    covered = not (overlap or ph or pw or sy > kh or sx > kw
                   or (H - kh) % sy or (W - kw) % sx)
    dxp = (xp.empty if covered else xp.zeros)((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    n = kh * kw

    def part(i, a, e):
        rest = dy[a:e].copy()             # gradient not yet given to an earlier maximum
        hit = xp.empty(rest.shape, dtype=bool)
        g = xp.empty_like(rest)
        for q in range(n):
            ky, kx = divmod(q, kw)
            sl = (slice(a, e), slice(None), slice(ky, ky + sy * oh, sy),
                  slice(kx, kx + sx * ow, sx))
            xp.equal(xpd[sl], y[a:e], out=hit)
            if overlap:
                xp.multiply(rest, hit, out=g)
                dxp[sl] += g
            else:
                xp.multiply(rest, hit, out=dxp[sl])
                g = dxp[sl]
            if q < n - 1:
                rest -= g                 # exact: each entry loses all of itself or nothing

    parallel.run(parallel.plan(N, dxp.size, _MIN_ELEMENTS), part)
    if ph or pw:
        dxp = xp.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + W])
    return dxp


def avg_pool_forward(x, kh, kw, stride, pad=0):
    """Average pooling; zero padding counts in the divisor (``KH*KW`` always)."""
    xp = get_array_module(x)
    N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x.shape, kh, kw, stride, pad, "Pooling")
    if not _is_numpy(xp):
        y = xp.empty((N, C, oh, ow), dtype=x.dtype)
        _avgpool_fwd_kernel()(xp.ascontiguousarray(x), H, W, kh, kw, oh, ow, sy, sx, ph, pw, y)
        return y
    xpd = _pad(xp, x, ph, pw, 0)
    y = xp.zeros((N, C, oh, ow), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            y += xpd[:, :, ky:ky + sy * oh:sy, kx:kx + sx * ow:sx]
    y *= x.dtype.type(1.0 / (kh * kw))
    return y


def avg_pool_backward(dy, x_shape, kh, kw, stride, pad=0):
    xp = get_array_module(dy)
    N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x_shape, kh, kw, stride, pad, "Pooling")
    if not _is_numpy(xp):
        dx = xp.empty((N, C, H, W), dtype=dy.dtype)
        _avgpool_bwd_kernel()(xp.ascontiguousarray(dy), H, W, kh, kw, oh, ow, sy, sx, ph, pw, dx)
        return dx
    g = dy * dy.dtype.type(1.0 / (kh * kw))
    dxp = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    for ky in range(kh):
        for kx in range(kw):
            dxp[:, :, ky:ky + sy * oh:sy, kx:kx + sx * ow:sx] += g
    if ph or pw:
        dxp = xp.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + W])
    return dxp
