"""CuPy kernel provider: the layers' heavy work as CUDA kernels and cuBLAS GEMMs.

`CudaKernels` overrides the methods of `reference.ReferenceKernels`;
`xpnet.backend.provider` hands out the CuPy backend's instance for CuPy arrays.
Every CUDA kernel is a source string rendered by `cuda_sources` (`render_source`,
`kernel_sources`) and launched as a `RawKernel`, so the text that the tests compile with NVRTC (no GPU
needed) is exactly the text that runs. Optimizer steps are traced from the
shared rule functions into one fused kernel per (rule, number of state arrays).

Rules for this module:
- it never imports CuPy itself: it takes its module from its backend class (so
  xpnet imports on CPU-only machines, and a stand-in module can take CuPy's place);
- it never synchronizes the host inside a step (no ``.item()``, ``float(x)``,
  ``asnumpy``): launches and GEMMs are queued on the current stream;
- col2im and the pooling backwards *gather* (one thread per input pixel), so they
  need no atomics and are deterministic.

Contexts (private to this provider, passed back to its own backwards):
relu: the output y; conv2d: the 6-D column array ``(C, KH, KW, N, OH, OW)``
(from `workspace` when one is given, so it is valid until the next forward
with that workspace and shapes); max pool: int32 ``(N, C, OH, OW)``, the
window tap ``ky*KW + kx`` of the first maximum (it may name a padding tap,
whose gradient is dropped).
"""
import contextlib
import functools

import numpy

from .cuda_rules import TracedRule, UnsupportedRuleError, count_scalars, trace_rule
from .cuda_sources import (KERNEL_NAMES, _CTYPES, _ctype, _update_name, _update_source, kernel_sources,
                           render_source)
from .geometry import geometry, pool_geometry
from .reference import ReferenceKernels

NAME = "cupy"

__all__ = ["CudaKernels", "TracedRule", "relu_forward", "relu_backward", "affine_forward",
           "affine_backward", "im2col", "col2im", "conv2d_forward", "conv2d_backward", "max_pool_forward",
           "max_pool_backward", "avg_pool_forward", "avg_pool_backward", "apply_update",
           "pass_scope", "kernel_sources", "render_source", "trace_rule", "UnsupportedRuleError",
           "KERNEL_NAMES"]


# ---------------------------------------------------------------- launching

_BLOCK = 256
_MAX_BLOCKS = 1 << 16
# int indices only while i + grid stride cannot pass 2**31 - 1
_INT_LIMIT = 2 ** 31 - 1 - _BLOCK * _MAX_BLOCKS


def _cp():
    """CuPy for the module-level functions (the CuPy backend's module)."""
    from .devices import backend_named
    return backend_named("cupy").load()


def _index_for(*sizes):
    return "int" if max(sizes) <= _INT_LIMIT else "long long"


@functools.lru_cache(maxsize=None)
def _raw_kernel(cp, name, dtype_name, index):
    return cp.RawKernel(render_source(name, dtype_name, index), name)


def _launch(kernel, total, args):
    if total == 0:
        return          # a grid of 0 blocks is a launch error
    grid = min(-(-total // _BLOCK), _MAX_BLOCKS)
    kernel((grid,), (_BLOCK,), args)


def _window_args(H, W, kh, kw, oh, ow, sy, sx, ph, pw):
    return tuple(numpy.int32(v) for v in (H, W, kh, kw, oh, ow, sy, sx, ph, pw))


def _contiguous(x):
    # not ascontiguousarray: it turns a 0-d array into shape (1,)
    return x if x.flags.c_contiguous else x.copy(order="C")


# ---------------------------------------------------------------- optimizer kernels

@functools.lru_cache(maxsize=None)
def _update_kernel(cp, rule, n_state, n_scalars, dtype_name, index):
    src = _update_source(rule, n_state, n_scalars, _ctype(dtype_name), index)
    return cp.RawKernel(src, _update_name(rule))

# ---------------------------------------------------------------- the provider

def _kernel_dtypes(*at):
    """For a method whose arguments at positions `at` fix its kernels' T: any other dtype
    (float16) runs the parent class's method (the reference kernels) instead."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            if all(numpy.dtype(args[i].dtype).name in _CTYPES for i in at):
                return method(self, *args, **kwargs)
            return getattr(super(CudaKernels, self), method.__name__)(*args, **kwargs)
        return run
    return wrap


class CudaKernels(ReferenceKernels):
    """The CUDA provider. Its array module is ``self.cp``, the one its backend class
    loads (`Backend.load`), never a global ``import cupy``: a subclass of the CuPy
    backend class whose `load` returns another CuPy-like module (tests' CPU stand-in)
    runs these kernels on that module, e.g.::

        @xpnet.backend.register
        class StandinBackend(xpnet.backend.libraries.CupyBackend):
            name = kind = help = "cupy-standin"
            heads, auto = (), 0               # "gpu"/"cupy"/"auto" stay real CuPy's
            def _import(self):
                return my_cupy_like_module
            def available(self):
                return True, ""
            def owns(self, x):
                return isinstance(x, my_cupy_like_module.ndarray)

    Compiled kernels are cached per module."""

    NAME = NAME

    @property
    def cp(self):
        return self.backend.load()

    def _run(self, name, total, arrays, scalars, sizes):
        """Launch fixed kernel `name` over `total` elements. Every kernel takes its
        contiguous arrays (the first fixes T), then `total`, then `scalars`; `sizes`
        are the other arrays' sizes (they decide the index type too)."""
        dtype = arrays[0].dtype
        index = _index_for(total, *sizes)
        itype = numpy.int32 if index == "int" else numpy.int64
        _launch(_raw_kernel(self.cp, name, dtype.name, index), total,
                tuple(arrays) + (itype(total),) + tuple(scalars))

    def _buffer(self, workspace, key, shape, dtype):
        """An uninitialised array, reused from `workspace` while shape and dtype match.
        Buffers live in their own sub-dict so other providers' entries are untouched."""
        cp = self.cp
        if workspace is None:
            return cp.empty(shape, dtype=dtype)
        ws = workspace.setdefault(NAME, {})
        k = (key, tuple(shape), numpy.dtype(dtype).name)
        buf = ws.get(k)
        if buf is None:
            for old in [o for o in ws if o[0] == key]:   # one buffer per role
                del ws[old]
            buf = ws[k] = cp.empty(shape, dtype=dtype)
        return buf

    def _im2col_cnhw(self, x, kh, kw, stride, pad, pad_value=0.0, workspace=None, what="im2col"):
        """Columns of x as ``(C, KH, KW, N, OH, OW)``: one GEMM then covers the batch."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = geometry(x.shape, kh, kw, stride, pad, what)
        x = _contiguous(x)
        _ctype(x.dtype)
        col = self._buffer(workspace, "col", (C, kh, kw, N, oh, ow), x.dtype)
        self._run("xpnet_im2col", col.size, (x, col),
             (x.dtype.type(pad_value), numpy.int32(N), numpy.int32(C))
             + _window_args(H, W, kh, kw, oh, ow, sy, sx, ph, pw), (x.size,))
        return col

    def _col2im_cnhw(self, col, x_shape, kh, kw, stride, pad):
        N, C, H, W, sy, sx, ph, pw, oh, ow = geometry(x_shape, kh, kw, stride, pad, "col2im")
        col = _contiguous(col)
        img = self.cp.empty((N, C, H, W), dtype=col.dtype)
        self._run("xpnet_col2im", img.size, (col, img),
             (numpy.int32(N), numpy.int32(C)) + _window_args(H, W, kh, kw, oh, ow, sy, sx, ph, pw),
             (col.size,))
        return img

    @_kernel_dtypes(0)
    def relu_forward(self, x):
        x = _contiguous(x)
        y = self.cp.empty_like(x)
        self._run("xpnet_relu_fwd", x.size, (x, y), (), ())
        return y, y

    @_kernel_dtypes(0, 1)
    def relu_backward(self, dy, y):
        dy = _contiguous(dy)
        y = _contiguous(y if y.dtype == dy.dtype else y.astype(dy.dtype))
        dx = self.cp.empty_like(dy)
        self._run("xpnet_relu_bwd", y.size, (y, dy, dx), (), ())
        return dx

    def affine_forward(self, x2, W, b):
        y = x2 @ W
        if b is not None:
            y += b
        return y

    def affine_backward(self, dy, x2, W, need_dx):
        dW = x2.T @ dy
        db = dy.sum(axis=0)
        dx = dy @ W.T if need_dx else None
        return dx, dW, db

    @_kernel_dtypes(0)
    def im2col(self, x, kh, kw, stride, pad, pad_value=0.0):
        """(N, C, H, W) -> the book's (N*OH*OW, C*KH*KW), rows (n, oy, ox), columns (c, ky, kx)."""
        col = self._im2col_cnhw(x, kh, kw, stride, pad, pad_value)
        C, _, _, N, oh, ow = col.shape
        return _contiguous(col.transpose(3, 4, 5, 0, 1, 2)).reshape(N * oh * ow, C * kh * kw)

    @_kernel_dtypes(0)
    def col2im(self, col, x_shape, kh, kw, stride, pad):
        """Adjoint of `im2col`: overlapping window entries are summed."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = geometry(x_shape, kh, kw, stride, pad, "col2im")
        if tuple(col.shape) != (N * oh * ow, C * kh * kw):
            raise ValueError("col2im: expected col of shape %s for input %s, got %s"
                             % ((N * oh * ow, C * kh * kw), tuple(x_shape), tuple(col.shape)))
        c6 = col.reshape(N, oh, ow, C, kh, kw).transpose(3, 4, 5, 0, 1, 2)
        return self._col2im_cnhw(c6, x_shape, kh, kw, stride, pad)

    @_kernel_dtypes(0, 1)
    def conv2d_forward(self, x, W, b, stride, pad, workspace=None):
        """``y (N, FN, OH, OW)`` = conv(x, W) + b: im2col, one GEMM, one transposing copy.
        ctx is the column array (reused from `workspace` by the next forward)."""
        FN, C, kh, kw = W.shape
        if x.ndim == 4 and x.shape[1] != C:
            raise ValueError("Convolution: input has %d channels, W expects %d" % (x.shape[1], C))
        col = self._im2col_cnhw(x, kh, kw, stride, pad, workspace=workspace, what="Convolution")
        _, _, _, N, oh, ow = col.shape
        y = W.reshape(FN, -1) @ col.reshape(C * kh * kw, -1)                  # (FN, N*OH*OW)
        if b is not None:
            y += b.reshape(FN, 1)
        return _contiguous(y.reshape(FN, N, oh, ow).transpose(1, 0, 2, 3)), col

    @_kernel_dtypes(0, 2)
    def conv2d_backward(self, dy, ctx, W, x_shape, stride, pad, need_dx=True, workspace=None):
        """``(dx or None, dW, db)`` of `conv2d_forward`; `ctx` is its column array."""
        FN, C, kh, kw = W.shape
        N, _, _, _, _, _, _, _, oh, ow = geometry(x_shape, kh, kw, stride, pad, "Convolution")
        if not (hasattr(ctx, "shape") and tuple(ctx.shape) == (C, kh, kw, N, oh, ow)):
            raise TypeError("conv2d_backward: ctx must be the column array that conv2d_forward "
                            "returned with y (shape %s), got %s"
                            % ((C, kh, kw, N, oh, ow), getattr(ctx, "shape", type(ctx).__name__)))
        K = C * kh * kw
        col2 = ctx.reshape(K, -1)
        dy2 = self._buffer(workspace, "dy2", (FN, N, oh, ow), dy.dtype)
        dy2[...] = dy.transpose(1, 0, 2, 3)
        dy2 = dy2.reshape(FN, -1)                                              # (FN, N*OH*OW)
        dW = (dy2 @ col2.T).reshape(W.shape)
        db = dy2.sum(axis=1)
        if not need_dx:
            return None, dW, db
        dcol = self._buffer(workspace, "dcol", (K, N * oh * ow),
                            self.cp.result_type(W.dtype, dy.dtype))
        self.cp.matmul(W.reshape(FN, K).T, dy2, out=dcol)
        return self._col2im_cnhw(dcol.reshape(ctx.shape), x_shape, kh, kw, stride, pad), dW, db

    @_kernel_dtypes(0)
    def max_pool_forward(self, x, kh, kw, stride, pad):
        """Max over each window, padding -inf; ctx: int32 tap of the first maximum."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = pool_geometry(x.shape, kh, kw, stride, pad)
        cp = self.cp
        x = _contiguous(x)
        y = cp.empty((N, C, oh, ow), dtype=x.dtype)
        arg = cp.empty((N, C, oh, ow), dtype=cp.int32)
        self._run("xpnet_max_pool_fwd", y.size, (x, y, arg), _window_args(H, W, kh, kw, oh, ow, sy, sx,
                                                                      ph, pw), (x.size,))
        return y, arg

    @_kernel_dtypes(0)
    def max_pool_backward(self, dy, arg, x_shape, kh, kw, stride, pad):
        N, C, H, W, sy, sx, ph, pw, oh, ow = pool_geometry(x_shape, kh, kw, stride, pad)
        dy = _contiguous(dy)
        dx = self.cp.empty((N, C, H, W), dtype=dy.dtype)
        self._run("xpnet_max_pool_bwd", dx.size, (dy, _contiguous(arg), dx),
             _window_args(H, W, kh, kw, oh, ow, sy, sx, ph, pw), (dy.size,))
        return dx

    @_kernel_dtypes(0)
    def avg_pool_forward(self, x, kh, kw, stride, pad):
        """Mean of each window; zero padding counts in the divisor (``kh*kw``)."""
        N, C, H, W, sy, sx, ph, pw, oh, ow = pool_geometry(x.shape, kh, kw, stride, pad)
        x = _contiguous(x)
        y = self.cp.empty((N, C, oh, ow), dtype=x.dtype)
        self._run("xpnet_avg_pool_fwd", y.size, (x, y),
                  _window_args(H, W, kh, kw, oh, ow, sy, sx, ph, pw), (x.size,))
        return y

    @_kernel_dtypes(0)
    def avg_pool_backward(self, dy, x_shape, kh, kw, stride, pad):
        N, C, H, W, sy, sx, ph, pw, oh, ow = pool_geometry(x_shape, kh, kw, stride, pad)
        dy = _contiguous(dy)
        dx = self.cp.empty((N, C, H, W), dtype=dy.dtype)
        self._run("xpnet_avg_pool_bwd", dx.size, (dy, dx),
             _window_args(H, W, kh, kw, oh, ow, sy, sx, ph, pw), (dy.size,))
        return dx

    def pass_scope(self, heavy):
        """Nothing to set up around a pass on the GPU."""
        return contextlib.nullcontext()

    @_kernel_dtypes(1)
    def apply_update(self, rule, p, g, state, scalars):
        """One optimizer step as one fused kernel: `p` and each array of `state` (a dict,
        in the rule's order) are updated in place from ``rule(xp, p, g, *state, *scalars)``;
        returns `p`."""
        state = tuple(state.values() if hasattr(state, "values") else state)  # or a tuple
        if not p.flags.c_contiguous:
            raise ValueError("apply_update: the parameter must be C-contiguous (updated in place)")
        for a in (g,) + state:
            if a.shape != p.shape:
                raise ValueError("apply_update: shape %s does not match the parameter's %s"
                                 % (tuple(a.shape), tuple(p.shape)))
        for a in state:
            if a.dtype != p.dtype or not a.flags.c_contiguous:
                raise ValueError("apply_update: state arrays must be C-contiguous %s like the "
                                 "parameter" % p.dtype)
        g = _contiguous(g if g.dtype == p.dtype else g.astype(p.dtype))
        index = _index_for(p.size)
        itype = numpy.int32 if index == "int" else numpy.int64
        kernel = _update_kernel(self.cp, rule, len(state), len(scalars), p.dtype.name, index)
        _launch(kernel, p.size, (g,) + tuple(p.dtype.type(s) for s in scalars) + (p,) + state
                + (itype(p.size),))
        return p


class _ModuleCupy:
    """The backend of the module-level functions: whatever `_cp` gives at each call."""

    def load(self):
        return _cp()


_DEFAULT = CudaKernels(_ModuleCupy())

relu_forward = _DEFAULT.relu_forward
relu_backward = _DEFAULT.relu_backward
affine_forward = _DEFAULT.affine_forward
affine_backward = _DEFAULT.affine_backward
im2col = _DEFAULT.im2col
col2im = _DEFAULT.col2im
conv2d_forward = _DEFAULT.conv2d_forward
conv2d_backward = _DEFAULT.conv2d_backward
max_pool_forward = _DEFAULT.max_pool_forward
max_pool_backward = _DEFAULT.max_pool_backward
avg_pool_forward = _DEFAULT.avg_pool_forward
avg_pool_backward = _DEFAULT.avg_pool_backward
apply_update = _DEFAULT.apply_update
pass_scope = _DEFAULT.pass_scope

_count_scalars = count_scalars   # the name tests use
