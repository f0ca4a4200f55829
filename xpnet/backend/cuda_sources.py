"""The CUDA C++ source of every kernel `cuda_kernels` launches, rendered as text.

The text the tests compile with NVRTC (no GPU needed) is exactly the text that runs:
`render_source` for the fixed kernels, `kernel_sources` for all of them at one dtype,
with one update kernel per optimizer rule (traced by `cuda_rules`).
"""
import re

import numpy

from .cuda_rules import count_scalars, trace_rule

__all__ = ["KERNEL_NAMES", "render_source", "kernel_sources"]


#
# Each kernel is `extern "C"` (an unmangled name for RawKernel) and loops over its
# elements grid-stride. T is the element type, I the index type: int when every
# offset fits, long long otherwise (64-bit division costs several times more).

_CTYPES = {"float32": "float", "float64": "double"}
_INDEX_TYPES = ("int", "long long")

_LOOP = ("for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < total;"
         " i += (I)blockDim.x * (I)gridDim.x)")

# -inf without math.h (NVRTC has no standard headers)
_NEG_INF = "(T)(-__longlong_as_double(0x7ff0000000000000LL))"

_WINDOW_ARGS = ("const int H, const int W, const int kh, const int kw, const int oh, "
                "const int ow, const int sy, const int sx, const int ph, const int pw")

# Gather loop shared by col2im and the pooling backwards: for input pixel (y, xx),
# every output (oy, ox) whose window tap (ky, kx) reads it.
_GATHER = """
        for (int ky = 0; ky < kh; ++ky) {
            const int yy = y + ph - ky;
            if (yy < 0 || yy % sy != 0) continue;
            const int oy = yy / sy;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int xq = xx + pw - kx;
                if (xq < 0 || xq % sx != 0) continue;
                const int ox = xq / sx;
                if (ox >= ow) continue;
                BODY
            }
        }"""


def _gather(stmt):
    return _GATHER.replace("BODY", stmt)


# Decode of an NCHW pixel index i into (nc, y, xx).
_DECODE_PIXEL = """
        const int xx = (int)(i % W);
        const int y = (int)(i / W % H);
        const I nc = i / W / H;"""

# Decode of an output index i (N, C, OH, OW order) into (nc, oy, ox).
_DECODE_OUT = """
        const int ox = (int)(i % ow);
        const int oy = (int)(i / ow % oh);
        const I nc = i / ow / oh;"""

_BODIES = {
    # col[c, ky, kx, n, oy, ox] = x[n, c, oy*sy - ph + ky, ox*sx - pw + kx] or pval
    "xpnet_im2col": ("const T* __restrict__ x, T* __restrict__ col, const I total, const T pval, "
                     "const int N, const int C, " + _WINDOW_ARGS, """
        const int ox = (int)(i % ow);
        const int oy = (int)(i / ow % oh);
        const I n = i / ow / oh % N;
        const I tap = i / ow / oh / N;
        const int kx = (int)(tap % kw);
        const int ky = (int)(tap / kw % kh);
        const I c = tap / kw / kh;
        const int y = oy * sy - ph + ky;
        const int xx = ox * sx - pw + kx;
        col[i] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[((n * C + c) * H + y) * W + xx]
                                                           : pval;"""),

    # img[n, c, y, xx] = sum of the column entries that read it (adjoint of im2col)
    "xpnet_col2im": ("const T* __restrict__ col, T* __restrict__ img, const I total, "
                     "const int N, const int C, " + _WINDOW_ARGS, _DECODE_PIXEL + """
        const I n = nc / C;
        const I c = nc % C;
        T acc = 0;"""
        + _gather("acc += col[((((c * kh + ky) * kw + kx) * N + n) * oh + oy) * ow + ox];") + """
        img[i] = acc;"""),

    # first maximum of each window, row-major; padding taps read -inf; NaN wins
    "xpnet_max_pool_fwd": ("const T* __restrict__ x, T* __restrict__ y, int* __restrict__ arg, "
                           "const I total, " + _WINDOW_ARGS, _DECODE_OUT + """
        const T* img = x + nc * H * W;
        const int y0 = oy * sy - ph, x0 = ox * sx - pw;
        T best = 0;
        int barg = -1;
        for (int ky = 0; ky < kh; ++ky) {
            const int yy = y0 + ky;
            for (int kx = 0; kx < kw; ++kx) {
                const int xq = x0 + kx;
                const T v = (yy >= 0 && yy < H && xq >= 0 && xq < W) ? img[yy * W + xq]
                                                                     : NEG_INF;
                if (barg < 0 || v > best || (v != v && best == best)) {
                    best = v;
                    barg = ky * kw + kx;
                }
            }
        }
        y[i] = best;
        arg[i] = barg;""".replace("NEG_INF", _NEG_INF)),

    "xpnet_max_pool_bwd": ("const T* __restrict__ dy, const int* __restrict__ arg, "
                           "T* __restrict__ dx, const I total, " + _WINDOW_ARGS,
                           _DECODE_PIXEL + """
        const I base = nc * oh * ow;
        T acc = 0;""" + _gather("""const I o = base + oy * ow + ox;
                if (arg[o] == ky * kw + kx) acc += dy[o];""") + """
        dx[i] = acc;"""),

    # zero padding counts in the divisor
    "xpnet_avg_pool_fwd": ("const T* __restrict__ x, T* __restrict__ y, const I total, "
                           + _WINDOW_ARGS, _DECODE_OUT + """
        const T* img = x + nc * H * W;
        const int y0 = oy * sy - ph, x0 = ox * sx - pw;
        T acc = 0;
        for (int ky = 0; ky < kh; ++ky) {
            const int yy = y0 + ky;
            if (yy < 0 || yy >= H) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int xq = x0 + kx;
                if (xq < 0 || xq >= W) continue;
                acc += img[yy * W + xq];
            }
        }
        y[i] = acc / (T)(kh * kw);"""),

    # each window's share dy / (kh*kw), summed as the reference does
    "xpnet_avg_pool_bwd": ("const T* __restrict__ dy, T* __restrict__ dx, const I total, "
                           + _WINDOW_ARGS, _DECODE_PIXEL + """
        const I base = nc * oh * ow;
        const T k = (T)(kh * kw);
        T acc = 0;""" + _gather("acc += dy[base + oy * ow + ox] / k;") + """
        dx[i] = acc;"""),

    # NaN propagates, as in xp.maximum(x, 0)
    "xpnet_relu_fwd": ("const T* __restrict__ x, T* __restrict__ y, const I total", """
        const T v = x[i];
        y[i] = (v > (T)0 || v != v) ? v : (T)0;"""),

    "xpnet_relu_bwd": ("const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, "
                       "const I total", """
        dx[i] = y[i] > (T)0 ? dy[i] : (T)0;"""),
}

KERNEL_NAMES = tuple(_BODIES)


def _ctype(dtype):
    name = numpy.dtype(dtype).name
    if name not in _CTYPES:
        raise TypeError("cuda_kernels: dtype %s is not supported (float32 and float64 are)" % name)
    return _CTYPES[name]


def _source(name, params, body, dtype, index, preamble=""):
    if index not in _INDEX_TYPES:
        raise ValueError("index must be one of %s, got %r" % (_INDEX_TYPES, index))
    return ("// xpnet.backend.cuda_kernels: %s, T = %s\n"
            "typedef %s T;\n"
            "typedef %s I;\n"
            "%s"
            "extern \"C\" __global__ void %s(%s)\n"
            "{\n"
            "    %s {%s\n"
            "    }\n"
            "}\n" % (name, _ctype(dtype), _ctype(dtype), index, preamble, name, params, _LOOP,
                     body.rstrip()))


def render_source(name, dtype="float32", index="int"):
    """The complete CUDA C++ source of fixed kernel `name` (one of `KERNEL_NAMES`)."""
    if name not in _BODIES:
        raise KeyError("no kernel %r; kernels: %s" % (name, ", ".join(KERNEL_NAMES)))
    params, body = _BODIES[name]
    return _source(name, params, body, dtype, index)


def kernel_sources(dtype="float32", rules=(), index="int"):
    """``{kernel name: complete CUDA C++ source}`` for every kernel this module can
    launch at `dtype`: the fixed ones and one update kernel per optimizer rule.

    `rules`: ``(rule, n_state)`` or ``(rule, n_state, n_scalars)`` items; without
    n_scalars it is read from the rule's signature."""
    out = {name: render_source(name, dtype, index) for name in KERNEL_NAMES}
    for item in rules:
        rule, n_state = item[0], item[1]
        n_scalars = item[2] if len(item) > 2 else count_scalars(rule, n_state)
        src = _update_source(rule, n_state, n_scalars, _ctype(dtype), index)
        name = _update_name(rule)
        while name in out:          # two rules with one name (lambdas)
            name += "_"
            src = src.replace(_update_name(rule) + "(", name + "(")
        out[name] = src
    return out


# ---------------------------------------------------------------- optimizer kernels

def _update_name(rule):
    return "xpnet_update_" + re.sub(r"\W", "_", getattr(rule, "__name__", "rule"))


_UPDATE_PREAMBLE = """\
// NaN-propagating, as xp.maximum and xp.minimum
__device__ __forceinline__ T xp_maximum(T a, T b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ T xp_minimum(T a, T b) { return (a < b || a != a) ? a : b; }
"""


def _update_source(rule, n_state, n_scalars, ctype, index):
    traced = trace_rule(rule, n_state, n_scalars)
    # parameters in the order in-params (g, s0..) then out-params (p, st0..)
    params = (["const T* g_"] + ["const T s%d" % k for k in range(n_scalars)]
              + ["T* p_"] + ["T* st%d_" % k for k in range(n_state)] + ["const I total"])
    arrays = ["p", "g"] + ["st%d" % k for k in range(n_state)]    # scalars are parameters
    loads = ["const T %s = %s_[i];" % (v, v) for v in arrays if v in traced.inputs]
    lines = (loads + ["const T %s = %s;" % t for t in traced.temps]
             + ["%s_[i] = %s;" % a for a in traced.assignments])
    body = "".join("\n        " + ln for ln in lines)
    numpy_dtype = {"float": "float32", "double": "float64"}[ctype]
    return _source(_update_name(rule), ", ".join(params), body, numpy_dtype, index,
                   _UPDATE_PREAMBLE)
