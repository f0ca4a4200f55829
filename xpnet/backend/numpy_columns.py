"""The NumPy fast path's pieces under `numpy_fast.NumpyKernels`: per-layer workspaces
and per-thread scratch buffers, im2col/col2im in ``col[c, ky, kx, n, oy, ox]``
layout, the convolution's GEMMs, and the batch split over xpnet's CPU threads.
Like `numpy_fast`, it must only ever see NumPy arrays.
"""
import functools
import math
import threading

import numpy

from . import cpu_threads as parallel
from .geometry import geometry as _geometry

xp = numpy
_MIN_ELEMENTS = 1 << 18   # per thread, for memory-bound work
_MIN_FLOPS = 1 << 21      # per thread: below this a hand-off costs more than it saves


def _pad(x, ph, pw, value):
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    out = xp.empty((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    out[...] = value
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


_WORKSPACE_SIZE = 10   # buffers for the training batch, the eval batch, a last partial batch


def _key(key, shape, dtype):
    return (key, tuple(shape), str(dtype))


def _buffer(ws, key, shape, dtype):
    """An uninitialised array from workspace dict `ws`, reused while shape and dtype
    match (least recently used ones are dropped). Reuse spares the page
    faults of fresh multi-MB allocations, which on the CPU cost as much as the copy
    that fills them."""
    if ws is None:
        return xp.empty(shape, dtype=dtype)
    k = _key(key, shape, dtype)
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


def _scratch(slot, shape, dtype):
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
    N, C, H, W, sy, sx, ph, pw, oh, ow = _geometry(x.shape, kh, kw, stride, pad, "im2col")
    shape = (C, kh, kw, N, oh, ow)
    # The padding entries of a buffer are the same for every call with this key, so
    # they are filled once, when the buffer is made.
    k = (key, sy, sx, ph, pw, H, W, pad_value)
    fresh = workspace is None or _key(k, shape, x.dtype) not in workspace
    col = _buffer(workspace, k, shape, x.dtype)
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
    N, C, H, W, sy, sx, ph, pw, oh, ow = _geometry(x_shape, kh, kw, stride, pad, "col2im")
    if col.shape != (C, kh, kw, N, oh, ow):
        raise ValueError("col2im: expected columns of shape %s for input %s, got %s"
                         % ((C, kh, kw, N, oh, ow), tuple(x_shape), col.shape))
    img = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for ky in range(kh):
        ye = ky + sy * oh
        for kx in range(kw):
            img[:, :, ky:ye:sy, kx:kx + sx * ow:sx] += col[:, ky, kx]
    img = img.transpose(1, 0, 2, 3)
    if ph or pw:
        img = img[:, :, ph:ph + H, pw:pw + W]
    return xp.ascontiguousarray(img)


# ---------------------------------------------------------------- convolution

class ConvContext:
    """What `conv2d_forward` keeps for `conv2d_backward`: the column buffers, one
    per batch slice (each CPU thread fills its own)."""
    __slots__ = ("cols", "ranges")

    def __init__(self, cols, ranges):
        self.cols, self.ranges = cols, ranges


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
    if w == 0 or n == 0 or not parallel.blas_single_threaded():
        t = _scratch("gemm", (F, n * P), out.dtype)
        numpy.dot(Wm, col2, out=t)
        out.reshape(n, F, P)[...] = t.reshape(F, n, P).transpose(1, 0, 2)
        return
    k = P // w
    blocks = col2.reshape(K, n * k, w).transpose(1, 0, 2)               # (n*k, K, w) views
    if k == 1:
        numpy.matmul(Wm, blocks, out=out.reshape(n, F, P))
        return
    t = _scratch("gemm", (n * k, F, w), out.dtype)
    numpy.matmul(Wm, blocks, out=t)
    out.reshape(n, F, k, w)[...] = t.reshape(n, k, F, w).transpose(0, 2, 1, 3)


def _weight_grad(col2, dy):
    """``dWt (K, F) = col2 (K, n*P) @ dy^T`` for `dy` (n, F, ...) on NumPy, by the same
    blocks as `_gemm_per_image` (here from w >= 64, where they measured faster): each
    block's (K, F) product, then their sum, without a transposed copy of dy."""
    n, F = dy.shape[:2]
    K, P = col2.shape[0], col2.shape[1] // max(n, 1)
    w = _block_width(P, F * K, 64, _GEMM_BLOCK)
    d3 = dy.reshape(n, F, P)
    if w == 0 or n == 0 or not parallel.blas_single_threaded():
        # (K, M) @ (M, F) blocks better in OpenBLAS than (F, M) @ (M, K) for small F
        dyt = _scratch("dy2", (F, n, P), dy.dtype)
        dyt[...] = d3.transpose(1, 0, 2)
        return numpy.dot(col2, dyt.reshape(F, -1).T)
    k = P // w
    blocks = col2.reshape(K, n * k, w).transpose(1, 0, 2)               # (n*k, K, w) views
    if k == 1:
        dyb = d3.transpose(0, 2, 1)                                      # (n, P, F) views
    else:
        dyb = _scratch("dyb", (n * k, w, F), dy.dtype)
        dyb.reshape(n, k, w, F)[...] = d3.reshape(n, F, k, w).transpose(0, 2, 3, 1)
    partial = _scratch("dWp", (n * k, K, F), numpy.result_type(col2.dtype, dy.dtype))
    numpy.matmul(blocks, dyb, out=partial)
    return partial.sum(axis=0)


# ---------------------------------------------------------------- ReLU, Affine helpers

def _batch_parallel(x, part):
    """``part(i, start, stop)`` over slices of the batch axis, on CPU threads when
    `x` is big enough."""
    n = x.shape[0] if x.ndim else 1
    return parallel.run(parallel.plan(n, x.size, _MIN_ELEMENTS), part)


def _gemm_plan(n, flops):
    if not parallel.blas_single_threaded():     # xpnet's threads off: BLAS threads the GEMM
        return [(0, n)]
    return parallel.plan(n, flops, _MIN_FLOPS)


def _own_gemm_threads():
    # With xpnet's threads on, GEMMs keep BLAS at one thread and split the batch
    # themselves: a BLAS call that threads wakes BLAS workers, which then spin for a
    # while and slow the threaded layers that follow (book-style loops over layers).
    return parallel.policy().hold()
