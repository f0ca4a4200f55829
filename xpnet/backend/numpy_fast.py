"""The NumPy fast path: the layers' heavy work on the CPU, as fast as NumPy allows.

`NumpyKernels` overrides the methods of `reference.ReferenceKernels` (the readable
version of each) that it speeds up; the module-level functions are the methods of
one shared instance, `FAST`. What makes these fast:
- columns kept as ``col[c, ky, kx, n, oy, ox]``: each (ky, kx) tap is one strided
  copy, with no padded copy of the image, and a GEMM writes NCHW directly;
- the batch split over xpnet's CPU threads (`cpu_threads`), BLAS held at one
  thread meanwhile, partial weight gradients added in slice order;
- blocks of small GEMMs where few filters make one big GEMM pack too much;
- per-layer workspaces and per-thread scratch buffers, so steady-state steps
  allocate (and page-fault) little.
It must only ever see NumPy arrays, and must give the reference results (tests
compare the two over shape tables). Its buffers, columns and GEMMs are in
`numpy_columns`.
"""
import numpy

from . import cpu_threads as parallel
from . import numpy_chwn, numpy_pool
from .reference import ReferenceKernels
from .geometry import geometry as _geometry, pool_geometry as _pool_geometry
from .numpy_columns import _scratch_bufs  # noqa: F401 (tests read it here)
from .numpy_columns import (ConvContext, _MIN_ELEMENTS, _MIN_FLOPS, _batch_parallel,
                            _gemm_per_image, _gemm_plan, _im2col_numpy, _own_gemm_threads, _pad,
                            _part_workspace, _scratch, _weight_grad, col2im_cnhw, im2col_cnhw,
                            release_scratch)

NAME = "numpy"

__all__ = ["NumpyKernels", "FAST", "relu_forward", "relu_backward", "affine_forward",
           "affine_backward", "im2col", "col2im", "im2col_cnhw", "col2im_cnhw", "conv2d_forward",
           "conv2d_backward", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
           "avg_pool_backward", "apply_update", "pass_scope", "release_scratch"]

xp = numpy


_UPDATE_BLOCK = 1 << 16   # elements: a rule's temporaries stay in cache, and never page-fault


# ---------------------------------------------------------------- the provider

class NumpyKernels(ReferenceKernels):
    """The NumPy fast path: every kernel, on NumPy arrays only."""

    NAME = NAME

    def relu_forward(self, x):
        # Multiplying by a bool mask is ~10x faster in NumPy than selecting with where.
        out = xp.empty_like(x)                    # in x's layout (numpy_chwn's too)
        mask = xp.empty_like(x, dtype=bool)
        x1, out1, mask1 = (a.reshape(1) if a.ndim == 0 else a
                           for a in numpy_chwn.c_major(x, out, mask))

        def part(i, a, e):
            xp.maximum(x1[a:e], x.dtype.type(0), out=out1[a:e])
            xp.greater(out1[a:e], 0, out=mask1[a:e])

        _batch_parallel(x1, part)
        return out, mask

    def relu_backward(self, dy, mask):
        dx = xp.empty_like(dy, dtype=xp.result_type(dy.dtype, mask.dtype))
        d1, m1, dx1 = (a.reshape(1) if a.ndim == 0 else a
                       for a in numpy_chwn.c_major(dy, mask, dx))
        _batch_parallel(d1, lambda i, a, e: xp.multiply(d1[a:e], m1[a:e], out=dx1[a:e]))
        return dx

    def affine_forward(self, x2, W, b):
        N, K = x2.shape
        with _own_gemm_threads():
            ranges = _gemm_plan(N, N * K * W.shape[1])
            if len(ranges) == 1:
                out = xp.dot(x2, W)
                if b is not None:
                    out += b
                return out
            out = xp.empty((N, W.shape[1]), dtype=xp.result_type(x2.dtype, W.dtype))

            def part(i, a, e):
                xp.dot(x2[a:e], W, out=out[a:e])
                if b is not None:
                    out[a:e] += b

            parallel.run(ranges, part)
            return out

    def affine_backward(self, dy, x2, W, need_dx):
        N, K = x2.shape
        with _own_gemm_threads():
            ranges = _gemm_plan(N, N * K * W.shape[1])
            if len(ranges) == 1:
                return (xp.dot(dy, W.T) if need_dx else None), xp.dot(x2.T, dy), dy.sum(axis=0)
            dx = xp.empty((N, K), dtype=xp.result_type(dy.dtype, W.dtype)) if need_dx else None

            def part(i, a, e):
                if dx is not None:
                    xp.dot(dy[a:e], W.T, out=dx[a:e])
                return xp.dot(x2[a:e].T, dy[a:e]), dy[a:e].sum(axis=0)

            parts = parallel.run(ranges, part)
            dW, db = parts[0]
            for p_dW, p_db in parts[1:]:     # in slice order: results don't depend on timing
                dW = dW + p_dW
                db = db + p_db
            return dx, dW, db

    def im2col(self, input_data, filter_h, filter_w, stride=1, pad=0, pad_value=0.0):
        """The book's im2col: ``(N*OH*OW, C*FH*FW)`` rows ordered (n, oy, ox)."""
        col = im2col_cnhw(input_data, filter_h, filter_w, stride, pad, pad_value)
        C, kh, kw, N, oh, ow = col.shape
        return xp.ascontiguousarray(col.transpose(3, 4, 5, 0, 1, 2)).reshape(N * oh * ow, -1)

    def col2im(self, col, input_shape, filter_h, filter_w, stride=1, pad=0):
        """The book's col2im: adjoint of `im2col` (overlaps are summed)."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = _geometry(input_shape, filter_h, filter_w, stride, pad,
                                                       "col2im")
        expected = (N * oh * ow, C * filter_h * filter_w)
        if tuple(col.shape) != expected:
            raise ValueError("col2im: expected col of shape %s for input %s, got %s"
                             % (expected, tuple(input_shape), tuple(col.shape)))
        c6 = col.reshape(N, oh, ow, C, filter_h, filter_w).transpose(3, 4, 5, 0, 1, 2)
        return col2im_cnhw(xp.ascontiguousarray(c6), input_shape, filter_h, filter_w, stride, pad)

    def conv2d_forward(self, x, W, b, stride=1, pad=0, workspace=None):
        """``y = conv(x, W) + b`` for x (N,C,H,W), W (FN,C,KH,KW), b (FN,) or None.

        Returns ``(y, ctx)``; pass `ctx` to `conv2d_backward`. A `workspace` dict
        (one per layer) lets the large column buffers be reused between steps."""
        if numpy_chwn.applies(x, W, stride, pad):
            return numpy_chwn.conv2d_forward(x, W, b, pad, workspace)
        FN, C, kh, kw = W.shape
        W2 = W.reshape(FN, -1)
        N, _, _, _, _, _, _, _, oh, ow = _geometry(x.shape, kh, kw, stride, pad, "Convolution")
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

    def conv2d_backward(self, dy, ctx, W, x_shape, stride=1, pad=0, need_dx=True, workspace=None):
        """Gradients ``(dx, dW, db)`` of `conv2d_forward` (dx is None if not `need_dx`)."""
        if isinstance(ctx, numpy_chwn.Context):
            return numpy_chwn.conv2d_backward(dy, ctx, W, x_shape, pad, need_dx)
        if not isinstance(ctx, ConvContext):
            raise TypeError("conv2d_backward: ctx must be the ConvContext that conv2d_forward "
                            "returned with y, got %s" % type(ctx).__name__)
        FN, C, kh, kw = W.shape
        N, _, H, Wd = x_shape
        oh, ow = dy.shape[2:]
        K = C * kh * kw
        sy, sx = stride
        ph, pw = pad
        W2 = W.reshape(FN, -1)
        # Stride 1: dx is the full convolution of dy with the flipped filters, an
        # im2col + GEMM that is cheaper than GEMM + col2im (col2im's adds dominate).
        full_conv = need_dx and sy == sx == 1 and ph < kh and pw < kw
        if full_conv:
            Wf = xp.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, -1)
        dx = xp.empty(x_shape, dtype=xp.result_type(dy.dtype, W.dtype)) if need_dx else None

        def tmp(slot, shape):
            return _scratch(slot, shape, dy.dtype)

        def part(i, a, e):
            n = e - a
            col2 = ctx.cols[i].reshape(K, -1)
            dWt = _weight_grad(col2, dy[a:e])
            db = dy[a:e].sum(axis=(0, 2, 3))
            if need_dx and not full_conv:
                dyt = tmp("dy2", (FN, n, oh, ow))
                dyt[...] = dy[a:e].transpose(1, 0, 2, 3)
                dy2 = dyt.reshape(FN, -1)                                    # (FN, n*OH*OW)
            if full_conv:
                colT = _im2col_numpy(dy[a:e], tmp("colT", (FN, kh, kw, n, H, Wd)), 1, 1,
                                     kh - 1 - ph, kw - 1 - pw, 0)
                _gemm_per_image(Wf, colT.reshape(FN * kh * kw, -1), dx[a:e])
            elif need_dx:
                dcol = tmp("dcol", ctx.cols[i].shape)
                xp.dot(W2.T, dy2, out=dcol.reshape(K, -1))
                dx[a:e] = col2im_cnhw(dcol, (n, C, H, Wd), kh, kw, stride, pad)
            return dWt, db

        parts = parallel.run(ctx.ranges, part)
        dWt, db = parts[0]
        for p_dWt, p_db in parts[1:]:
            dWt = dWt + p_dWt
            db = db + p_db
        dW = xp.ascontiguousarray(dWt.T).reshape(W.shape)
        return dx, dW, db

    def max_pool_forward(self, x, kh, kw, stride, pad=0):
        """Max pooling with -inf padding. Returns ``(y, ctx)``; pass `ctx` to
        `max_pool_backward`, which routes each gradient to the first maximum of its
        window (row-major), as ``argmax`` would.

        `ctx` is the (padded) input and the output: the backward finds the first maximum
        by comparison, which is cheaper than tracking the index through strided slices."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x.shape, kh, kw, stride, pad, "Pooling")
        xpd = _pad(x, ph, pw, -xp.inf)
        y = numpy_chwn.empty_as(xpd, (N, C, oh, ow))
        xm, ym = numpy_chwn.c_major(xpd, y)      # split over the outer axis in memory

        def part(i, a, e):
            win = [xm[a:e, :, ky:ky + sy * oh:sy, kx:kx + sx * ow:sx]
                   for ky in range(kh) for kx in range(kw)]
            if len(win) == 1:
                ym[a:e] = win[0]
                return
            xp.maximum(win[0], win[1], out=ym[a:e])
            for v in win[2:]:
                xp.maximum(ym[a:e], v, out=ym[a:e])

        parallel.run(parallel.plan(xm.shape[0], y.size * kh * kw, _MIN_ELEMENTS), part)
        return y, (xpd, y)

    def max_pool_backward(self, dy, ctx, x_shape, kh, kw, stride, pad=0):
        """Gradient of `max_pool_forward`, given the `ctx` it returned."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x_shape, kh, kw, stride, pad, "Pooling")
        xpd, y = ctx
        if numpy_pool.applies(x_shape, kh, kw, (sy, sx), (ph, pw)) and dy.dtype == xpd.dtype:
            dx = numpy_chwn.empty_as(xpd, x_shape, dy.dtype)
            dy = numpy_chwn.like(dy, xpd)       # one copy, not four strided passes
            xm, ym, dym, dxm = numpy_chwn.c_major(xpd, y, dy, dx)
            parallel.run(parallel.plan(xm.shape[0], dx.size, _MIN_ELEMENTS), lambda i, a, e:
                         numpy_pool.max_pool2_backward(dym[a:e], xm[a:e], ym[a:e], dxm[a:e]))
            return dx
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

    def avg_pool_forward(self, x, kh, kw, stride, pad=0):
        """Average pooling; zero padding counts in the divisor (``KH*KW`` always)."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x.shape, kh, kw, stride, pad, "Pooling")
        xpd = _pad(x, ph, pw, 0)
        y = xp.zeros((N, C, oh, ow), dtype=x.dtype)
        for ky in range(kh):
            for kx in range(kw):
                y += xpd[:, :, ky:ky + sy * oh:sy, kx:kx + sx * ow:sx]
        y *= x.dtype.type(1.0 / (kh * kw))
        return y

    def avg_pool_backward(self, dy, x_shape, kh, kw, stride, pad=0):
        N, C, H, W, sy, sx, ph, pw, oh, ow = _pool_geometry(x_shape, kh, kw, stride, pad, "Pooling")
        g = dy * dy.dtype.type(1.0 / (kh * kw))
        dxp = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
        for ky in range(kh):
            for kx in range(kw):
                dxp[:, :, ky:ky + sy * oh:sy, kx:kx + sx * ow:sx] += g
        if ph or pw:
            dxp = xp.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + W])
        return dxp

    def apply_update(self, rule, p, g, state, scalars):
        """The rule over blocks of the flattened arrays, in place; returns `p`. Whole-array
        temporaries of a big weight (MBs, freshly mapped each step) cost more in page
        faults than the math."""
        targets = (p,) + tuple(state.values() if hasattr(state, "values") else state)
        if not all(a.flags.c_contiguous for a in targets):
            return super().apply_update(rule, p, g, state, scalars)
        flat = [a.reshape(-1) for a in targets]
        gf = g.reshape(-1)
        for a in range(0, gf.shape[0], _UPDATE_BLOCK):
            blk = slice(a, a + _UPDATE_BLOCK)
            new = rule(xp, flat[0][blk], gf[blk], *[f[blk] for f in flat[1:]], *scalars)
            for dst, src in zip(flat, new):
                dst[blk] = src
        return p

    def pass_scope(self, heavy):
        """Around a net's whole pass, conv or GEMM-only alike: the CPU thread policy's
        hold (BLAS at one thread while xpnet threads the layers; BLAS's own threads spin
        between an MLP's small GEMMs and oversubscribe the cores)."""
        return parallel.policy().hold()


FAST = NumpyKernels()

relu_forward = FAST.relu_forward
relu_backward = FAST.relu_backward
affine_forward = FAST.affine_forward
affine_backward = FAST.affine_backward
im2col = FAST.im2col
col2im = FAST.col2im
conv2d_forward = FAST.conv2d_forward
conv2d_backward = FAST.conv2d_backward
max_pool_forward = FAST.max_pool_forward
max_pool_backward = FAST.max_pool_backward
avg_pool_forward = FAST.avg_pool_forward
avg_pool_backward = FAST.avg_pool_backward
apply_update = FAST.apply_update
pass_scope = FAST.pass_scope
