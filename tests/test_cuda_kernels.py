"""The CuPy kernel provider, `xpnet.backend.cuda_kernels`.

- Every CUDA source it can launch is compiled with NVRTC for float32/float64,
  int/long long indices and sm_80/sm_90; NVRTC needs no GPU or driver, only
  CuPy's binding and the NVRTC library (``pip install -e ".[gpu-check]"``).
- The optimizer-rule tracer is checked on the CPU: its rendered expressions,
  evaluated as Python, must equal the rule run on NumPy bit for bit.
- Every provider function is compared with NumPy loops on a CUDA device when there is
  one, and in every run on tests/cupy_standin, the CPU stand-in for CuPy (the kernel
  sources compiled by the host C++ compiler, launches checked as CuPy marshals them).
  The stand-in's own checks are in test_cupy_standin.py.
"""
import ctypes
import glob
import importlib
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from xpnet.backend import cuda_kernels as ck

import cupy_standin
from cupy_standin import kernels as standin_kernels


# ---------------------------------------------------------------- rules
# The optimizers' own rules, ``rule(xp, p, g, *state, *scalars)``, plus two made up to
# cover what a rule may use.

from xpnet.optimizers import (adagrad_rule, adam_rule, adamw_rule, momentum_rule,  # noqa: E402
                              nesterov_rule, rmsprop_rule, sgd_rule)


def clipped_rule(xp, p, g, lim):
    """where, maximum, minimum, comparisons, negative constants, nested minus."""
    c = xp.where(g > lim, lim, xp.maximum(g, -lim))
    return (p - -0.5 * c - (p - xp.minimum(g, 2.0)) / (1.0 - -g * g),)


def precedence_rule(xp, p, g, a):
    """Operand orders that parentheses must keep: a - (b - c), a / (b * c), -(x + y)."""
    return (p - (g - a) - (p / (g * a)) * -(g + a) + -(-p) - g / -a,)


BOOK_RULES = [(sgd_rule, 0), (momentum_rule, 1), (nesterov_rule, 1), (adagrad_rule, 1),
              (rmsprop_rule, 1), (adam_rule, 2), (adamw_rule, 2)]
ALL_RULES = BOOK_RULES + [(clipped_rule, 0), (precedence_rule, 0)]


def _n_scalars(rule, n_state):
    return ck._count_scalars(rule, n_state)


def _project_rules():
    """The rules xpnet.optimizers defines, if its classes expose them (``rule``)."""
    opt = importlib.import_module("xpnet.optimizers")
    found = []
    for cls in getattr(opt, "OPTIMIZERS", {}).values():
        rule = cls.__dict__.get("rule", cls.__dict__.get("_rule"))
        rule = getattr(rule, "__func__", rule)           # staticmethod
        if callable(rule):
            found.append((rule, len(getattr(cls, "_slots", ()))))
    return found


# ---------------------------------------------------------------- NVRTC

def _wheel_nvrtc():
    """libnvrtc.so from the nvidia-cuda-nvrtc-cu12 wheel, or None."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except ModuleNotFoundError:
        return None
    for d in (spec.submodule_search_locations or []) if spec else []:
        libs = sorted(glob.glob(os.path.join(d, "lib", "libnvrtc.so*")))
        if libs:
            return libs[0]
    return None


def _load_nvrtc():
    """``(module, '')`` with CuPy's NVRTC binding, or ``(None, why)``.

    CuPy >= 14 loads libnvrtc on first use through cuda-pathfinder, which finds the
    nvidia-cuda-nvrtc-cu12 wheel in site-packages. Older CuPy links libnvrtc when the
    binding is imported, so if that fails the wheel's libnvrtc is loaded with ctypes
    (RTLD_GLOBAL) and the import retried."""
    errors = []
    for attempt in range(2):
        try:
            nvrtc = importlib.import_module("cupy_backends.cuda.libs.nvrtc")
            nvrtc.getVersion()
            return nvrtc, ""
        except Exception as e:          # ImportError, or the library not found
            errors.append("%s: %s" % (type(e).__name__, e))
        lib = _wheel_nvrtc()
        if attempt or lib is None:
            break
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            errors.append("loading %s: %s" % (lib, e))
            break
    return None, ("NVRTC is not usable (%s); install it with pip install -e \".[gpu-check]\""
                  % "; ".join(errors))


@pytest.fixture(scope="module")
def nvrtc():
    mod, why = _load_nvrtc()
    if mod is None:
        if os.environ.get("XPNET_CI") == "1":       # CI installs the gpu-check extra
            pytest.fail(why + " (XPNET_CI=1: CI must compile the CUDA kernels)")
        pytest.skip(why)
    return mod


class CompileError(AssertionError):
    pass


def compile_cuda(nvrtc, source, name, arch):
    """Compile `source` for `arch` (``compute_80`` gives PTX, ``sm_90`` a cubin);
    return ``(log, binary)``, or raise CompileError with NVRTC's log."""
    prog = nvrtc.createProgram(source, name + ".cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, ["-arch=" + arch])
        except nvrtc.NVRTCError as e:
            raise CompileError("%s for %s: %s\n%s" % (name, arch, e, nvrtc.getProgramLog(prog)))
        log = nvrtc.getProgramLog(prog)
        binary = nvrtc.getPTX(prog) if arch.startswith("compute_") else nvrtc.getCUBIN(prog)
        return log, binary
    finally:
        nvrtc.destroyProgram(prog)


ARCHS = ["compute_80", "sm_80", "sm_90"]


# 64-bit indices and the PTX-only target are checked in the slow run (-m slow).
@pytest.mark.parametrize("index", ["int", pytest.param("long long", marks=pytest.mark.slow)])
@pytest.mark.parametrize("arch", [pytest.param("compute_80", marks=pytest.mark.slow),
                                  "sm_80", "sm_90"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_kernel_compiles(nvrtc, dtype, arch, index):
    sources = ck.kernel_sources(dtype, BOOK_RULES + [(clipped_rule, 0)], index=index)
    assert set(ck.KERNEL_NAMES) <= set(sources)
    assert len(sources) == len(ck.KERNEL_NAMES) + len(BOOK_RULES) + 1
    failures = []
    for name, src in sources.items():
        assert 'extern "C" __global__ void %s(' % name in src
        assert "typedef %s T;" % {"float32": "float", "float64": "double"}[dtype] in src
        try:
            log, binary = compile_cuda(nvrtc, src, name, arch)
        except CompileError as e:
            failures.append(str(e))
            continue
        if "warning" in log:
            failures.append("%s for %s: warnings\n%s" % (name, arch, log))
        if name.encode() not in binary:          # the unmangled name RawKernel looks up
            failures.append("%s for %s: no symbol %s in the output" % (name, arch, name))
    assert not failures, "\n\n".join(failures)


def test_project_rules_compile(nvrtc):
    rules = _project_rules()
    if not rules:
        pytest.skip("xpnet.optimizers exposes no rule functions (looked for a `rule` or "
                    "`_rule` attribute on each class of OPTIMIZERS)")
    for dtype in ("float32", "float64"):
        for name, src in ck.kernel_sources(dtype, rules).items():
            log, _ = compile_cuda(nvrtc, src, name, "sm_80")
            assert "warning" not in log, log


def test_broken_source_is_reported_with_its_line(nvrtc):
    lines = ck.render_source("xpnet_col2im", "float32").split("\n")
    at = next(k for k, ln in enumerate(lines) if "img[i] = acc;" in ln)
    lines.insert(at, "        acc += ;")
    with pytest.raises(CompileError, match=r"xpnet_col2im\.cu\(%d\): error" % (at + 1)):
        compile_cuda(nvrtc, "\n".join(lines), "xpnet_col2im", "sm_80")


def test_kernel_sources_without_cupy():
    """The module imports, renders and traces with CuPy unimportable."""
    code = ("import sys; sys.modules['cupy'] = None\n"
            "from xpnet.backend import cuda_kernels as ck\n"
            "src = ck.kernel_sources('float64')\n"
            "assert 'typedef double T;' in src['xpnet_im2col']\n"
            "assert ck.pass_scope(True) is not None\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ck.__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- the tracer (CPU)

def test_sgd_body():
    t = ck.trace_rule(sgd_rule, 0, 1)
    assert t.temps == []
    assert t.assignments == [("p", "p - s0 * g")]


def test_adam_body():
    t = ck.trace_rule(adam_rule, 2, 4)
    # new m and v are read by the parameter update and stored: temporaries
    assert t.temps == [("t0", "st0 + s1 * (g - st0)"), ("t1", "st1 + s2 * (g * g - st1)")]
    assert t.assignments == [("p", "p - s0 * t0 / (sqrt(t1) + s3)"), ("st0", "t0"), ("st1", "t1")]
    src = ck.kernel_sources("float32", [(adam_rule, 2)])["xpnet_update_adam_rule"]
    assert ("xpnet_update_adam_rule(const T* g_, const T s0, const T s1, const T s2, const T s3, "
            "T* p_, T* st0_, T* st1_, const I total)") in src
    assert "p_[i] = p - s0 * t0 / (sqrt(t1) + s3);" in src


def test_constants_are_cast_to_T():
    t = ck.trace_rule(clipped_rule, 0, 1)
    (target, expr), = t.assignments
    assert "(T)(-0.5)" in expr and "(T)2.0" in expr and "xp_maximum(g, -s0)" in expr
    assert "g > s0 ? s0 : " in expr


def _eval_python(traced, env):
    env = dict(env, sqrt=math.sqrt, maximum=max, minimum=min)
    for name, expr in traced.temps:
        env[name] = eval(expr, env)
    return [eval(expr, env) for _, expr in traced.assignments]


@pytest.mark.parametrize("rule,n_state", ALL_RULES, ids=[r.__name__ for r, _ in ALL_RULES])
def test_traced_expressions_equal_the_rule(rule, n_state):
    """The same graph rendered as Python gives the rule's NumPy results bit for bit,
    so the rendering keeps every operation and its order."""
    k = _n_scalars(rule, n_state)
    traced = ck.trace_rule(rule, n_state, k, dialect="python")
    rng = np.random.default_rng(0)
    size = 64
    p, g = rng.standard_normal(size), rng.standard_normal(size)
    state = [np.abs(rng.standard_normal(size)) for _ in range(n_state)]
    scalars = [float(v) for v in rng.uniform(0.1, 0.9, k)]
    want = [np.asarray(a) for a in rule(np, p, g, *state, *scalars)]
    for i in range(size):
        env = {"p": float(p[i]), "g": float(g[i]), **{"st%d" % j: float(s[i])
                                                     for j, s in enumerate(state)},
               **{"s%d" % j: v for j, v in enumerate(scalars)}}
        got = _eval_python(traced, env)
        assert got == [float(w[i]) for w in want], (i, traced.assignments)


def test_unsupported_function_is_named():
    def exp_rule(xp, p, g, lr):
        return (p - lr * xp.exp(g),)

    with pytest.raises(ck.UnsupportedRuleError, match=r"exp_rule uses xp\.exp.*supported: .*sqrt"):
        ck.trace_rule(exp_rule, 0, 1)


@pytest.mark.parametrize("body,match", [
    (lambda xp, p, g, lr: (p - lr * g if g > 0 else p,), "branch"),
    (lambda xp, p, g, lr: (p - lr * g ** 2,), "operator"),
    (lambda xp, p, g, lr: (p - lr * abs(g),), "operator"),
    (lambda xp, p, g, lr: (p - lr * (g > 0),), "condition of xp.where"),
    (lambda xp, p, g, lr: (p - lr * np.ones(3),), "Python numbers, got ndarray"),
    (lambda xp, p, g, lr: (p, g), r"\(new_p, \*new_state\): 1 values"),
    (lambda xp, p, g, lr: (xp.where(g, p, g),), "comparison"),
])
def test_unsupported_rules_raise(body, match):
    with pytest.raises((ck.UnsupportedRuleError, TypeError), match=match):
        ck.trace_rule(body, 0, 1)


def test_numpy_ufunc_on_a_symbol_is_refused():
    with pytest.raises(TypeError):
        ck.trace_rule(lambda xp, p, g, lr: (np.sqrt(g),), 0, 1)


def test_scalar_count_from_signature():
    assert _n_scalars(adam_rule, 2) == 4
    assert _n_scalars(sgd_rule, 0) == 1
    with pytest.raises(ck.UnsupportedRuleError, match="n_scalars"):
        _n_scalars(lambda xp, p, g, *rest: (p,), 0)


def test_unsupported_dtype():
    with pytest.raises(TypeError, match="float16"):
        ck.render_source("xpnet_relu_fwd", "float16")


def test_index_type_switch():
    assert ck._index_for(10, 2 ** 20) == "int"
    assert ck._index_for(10, ck._INT_LIMIT) == "int"
    assert ck._index_for(ck._INT_LIMIT + 1) == "long long"
    assert "typedef long long I;" in ck.render_source("xpnet_im2col", "float32", "long long")


# ---------------------------------------------------------------- numerics
# Every provider function against NumPy loops, on two targets: CuPy on a CUDA
# device, and "cupy-standin" (tests/cupy_standin), where each kernel's exact source
# text is compiled by the host C++ compiler and launched in a shuffled thread order,
# each argument checked as CuPy would marshal it against the kernel's C signature.

def _gpu():
    try:
        from xpnet.backend import gpu_available
        ok, why = gpu_available()
    except Exception as e:       # noqa: BLE001 - any import problem means no GPU test
        return False, "%s: %s" % (type(e).__name__, e)
    return ok, why


_GPU_OK, _GPU_WHY = _gpu()


def _no_compiler():
    """In CI (XPNET_CI=1) a missing host compiler fails; elsewhere it skips."""
    why = "no host C++ compiler (g++ or c++, or CXX) to run the kernel sources"
    if os.environ.get("XPNET_CI") == "1":
        pytest.fail(why + " (XPNET_CI=1: CI must run the CuPy stand-in)")
    pytest.skip(why)


@pytest.fixture
def standin(monkeypatch):
    """The CuPy stand-in as the provider's `cupy`."""
    if standin_kernels.compiler() is None:
        _no_compiler()
    ck._raw_kernel.cache_clear()
    ck._update_kernel.cache_clear()
    monkeypatch.setattr(ck, "_cp", lambda: cupy_standin)
    yield cupy_standin
    ck._raw_kernel.cache_clear()
    ck._update_kernel.cache_clear()


@pytest.fixture(params=[
    pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not _GPU_OK, reason="needs a CUDA device: %s" % _GPU_WHY)]),
    "cupy-standin"])
def cp(request):
    if request.param == "cupy":
        import cupy
        return cupy
    return request.getfixturevalue("standin")


def _pad(x, ph, pw, value):
    N, C, H, W = x.shape
    out = np.full((N, C, H + 2 * ph, W + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def ref_im2col(x, kh, kw, s, p):
    N, C, H, W = x.shape
    oh, ow = _out(H, kh, s[0], p[0]), _out(W, kw, s[1], p[1])
    xp_ = _pad(x, p[0], p[1], 0)
    col = np.zeros((N * oh * ow, C * kh * kw), dtype=x.dtype)
    for n in range(N):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(C):
                    for ky in range(kh):
                        for kx in range(kw):
                            col[(n * oh + oy) * ow + ox, (c * kh + ky) * kw + kx] = \
                                xp_[n, c, oy * s[0] + ky, ox * s[1] + kx]
    return col


def ref_col2im(col, shape, kh, kw, s, p):
    N, C, H, W = shape
    oh, ow = _out(H, kh, s[0], p[0]), _out(W, kw, s[1], p[1])
    img = np.zeros((N, C, H + 2 * p[0], W + 2 * p[1]), dtype=col.dtype)
    for n in range(N):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(C):
                    for ky in range(kh):
                        for kx in range(kw):
                            img[n, c, oy * s[0] + ky, ox * s[1] + kx] += \
                                col[(n * oh + oy) * ow + ox, (c * kh + ky) * kw + kx]
    return img[:, :, p[0]:p[0] + H, p[1]:p[1] + W]


def ref_conv(x, Wt, b, s, p):
    FN, C, kh, kw = Wt.shape
    N, _, H, W = x.shape
    oh, ow = _out(H, kh, s[0], p[0]), _out(W, kw, s[1], p[1])
    col = ref_im2col(x, kh, kw, s, p)
    y = col @ Wt.reshape(FN, -1).T + b
    return y.reshape(N, oh, ow, FN).transpose(0, 3, 1, 2), col


def ref_conv_backward(dy, col, Wt, shape, s, p):
    FN, C, kh, kw = Wt.shape
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, FN)
    dW = (dy2.T @ col).reshape(Wt.shape)
    dx = ref_col2im(dy2 @ Wt.reshape(FN, -1), shape, kh, kw, s, p)
    return dx, dW, dy2.sum(axis=0)


def ref_pool(x, kh, kw, s, p, mode):
    N, C, H, W = x.shape
    oh, ow = _out(H, kh, s[0], p[0]), _out(W, kw, s[1], p[1])
    xp_ = _pad(x, p[0], p[1], -np.inf if mode == "max" else 0)
    y = np.zeros((N, C, oh, ow), dtype=x.dtype)
    arg = np.zeros((N, C, oh, ow), dtype=np.int64)
    for idx in np.ndindex(N, C, oh, ow):
        n, c, oy, ox = idx
        win = xp_[n, c, oy * s[0]:oy * s[0] + kh, ox * s[1]:ox * s[1] + kw].ravel()
        if mode == "max":
            arg[idx] = int(np.argmax(win))           # the first maximum
            y[idx] = win[arg[idx]]
        else:
            y[idx] = win.sum() / (kh * kw)
    return y, arg


def ref_pool_backward(dy, arg, shape, kh, kw, s, p, mode):
    N, C, H, W = shape
    dx = np.zeros((N, C, H + 2 * p[0], W + 2 * p[1]), dtype=dy.dtype)
    for idx in np.ndindex(*dy.shape):
        n, c, oy, ox = idx
        if mode == "max":
            ky, kx = divmod(int(arg[idx]), kw)
            dx[n, c, oy * s[0] + ky, ox * s[1] + kx] += dy[idx]
        else:
            dx[n, c, oy * s[0]:oy * s[0] + kh, ox * s[1]:ox * s[1] + kw] += dy[idx] / (kh * kw)
    return dx[:, :, p[0]:p[0] + H, p[1]:p[1] + W]


GEOMETRIES = [((3, 2), (1, 1), (0, 0)), ((3, 2), (2, 1), (1, 1)), ((2, 2), (2, 2), (1, 0)),
              ((3, 3), (1, 2), (1, 1)), ((1, 1), (2, 2), (0, 0))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k,s,p", GEOMETRIES)
def test_gpu_im2col_conv(cp, dtype, k, s, p):
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    Wt = rng.standard_normal((4, 3) + k).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    col = ck.im2col(cp.asarray(x), k[0], k[1], s, p)
    np.testing.assert_array_equal(cp.asnumpy(col), ref_im2col(x, k[0], k[1], s, p))
    back = ck.col2im(col, x.shape, k[0], k[1], s, p)
    np.testing.assert_allclose(cp.asnumpy(back), ref_col2im(ref_im2col(x, k[0], k[1], s, p),
                                                            x.shape, k[0], k[1], s, p), **tol)
    ws = {}
    for step in range(2):                     # the second step reuses the workspace
        y, ctx = ck.conv2d_forward(cp.asarray(x), cp.asarray(Wt), cp.asarray(b), s, p, ws)
        want_y, rcol = ref_conv(x, Wt, b, s, p)
        np.testing.assert_allclose(cp.asnumpy(y), want_y, **tol)
        dy = rng.standard_normal(want_y.shape).astype(dtype)
        dx, dW, db = ck.conv2d_backward(cp.asarray(dy), ctx, cp.asarray(Wt), x.shape, s, p,
                                        True, ws)
        want = ref_conv_backward(dy, rcol, Wt, x.shape, s, p)
        for got, w in zip((dx, dW, db), want):
            np.testing.assert_allclose(cp.asnumpy(got), w, **tol)
        none, dW2, _ = ck.conv2d_backward(cp.asarray(dy), ctx, cp.asarray(Wt), x.shape, s, p,
                                          False, ws)
        assert none is None
        np.testing.assert_allclose(cp.asnumpy(dW2), want[1], **tol)
    y, _ = ck.conv2d_forward(cp.asarray(x), cp.asarray(Wt), None, s, p, None)
    np.testing.assert_allclose(cp.asnumpy(y), ref_conv(x, Wt, 0 * b, s, p)[0], **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k,s,p", [g for g in GEOMETRIES if 2 * g[2][0] <= g[0][0]
                                   and 2 * g[2][1] <= g[0][1]])
def test_gpu_pooling(cp, dtype, k, s, p):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    x[0, 0, :2, :2] = 1.5                     # ties: the first maximum wins
    for mode in ("max", "avg"):
        want_y, arg = ref_pool(x, k[0], k[1], s, p, mode)
        dy = rng.standard_normal(want_y.shape).astype(dtype)
        want_dx = ref_pool_backward(dy, arg, x.shape, k[0], k[1], s, p, mode)
        if mode == "max":
            y, ctx = ck.max_pool_forward(cp.asarray(x), k[0], k[1], s, p)
            np.testing.assert_array_equal(cp.asnumpy(y), want_y)
            np.testing.assert_array_equal(cp.asnumpy(ctx), arg)
            dx = ck.max_pool_backward(cp.asarray(dy), ctx, x.shape, k[0], k[1], s, p)
            # overlapping windows: the same terms, summed in another order
            np.testing.assert_allclose(cp.asnumpy(dx), want_dx, rtol=1e-6, atol=1e-6)
        else:
            y = ck.avg_pool_forward(cp.asarray(x), k[0], k[1], s, p)
            np.testing.assert_allclose(cp.asnumpy(y), want_y, rtol=1e-6, atol=1e-7)
            dx = ck.avg_pool_backward(cp.asarray(dy), x.shape, k[0], k[1], s, p)
            np.testing.assert_allclose(cp.asnumpy(dx), want_dx, rtol=1e-6, atol=1e-7)


def test_gpu_relu_affine(cp):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6))
    x[0, 0] = np.nan
    y, ctx = ck.relu_forward(cp.asarray(x))
    np.testing.assert_array_equal(cp.asnumpy(y), np.maximum(x, 0))
    dy = rng.standard_normal(x.shape)
    dx = ck.relu_backward(cp.asarray(dy), ctx)
    np.testing.assert_array_equal(cp.asnumpy(dx), np.where(np.maximum(x, 0) > 0, dy, 0))
    y0, _ = ck.relu_forward(cp.asarray(np.float64(-2.0)))       # 0-d stays 0-d
    assert y0.shape == () and float(cp.asnumpy(y0)) == 0.0
    yt, ctx_t = ck.relu_forward(cp.asarray(x).T)                 # not contiguous
    np.testing.assert_array_equal(cp.asnumpy(yt), np.maximum(x.T, 0))
    np.testing.assert_array_equal(cp.asnumpy(ck.relu_backward(cp.asarray(dy).T, ctx_t)),
                                  np.where(np.maximum(x.T, 0) > 0, dy.T, 0))
    W, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    out = ck.affine_forward(cp.asarray(x[1:]), cp.asarray(W), cp.asarray(b))
    np.testing.assert_allclose(cp.asnumpy(out), x[1:] @ W + b, rtol=1e-12)
    d = rng.standard_normal((3, 3))
    dx2, dW, db = ck.affine_backward(cp.asarray(d), cp.asarray(x[1:]), cp.asarray(W), True)
    np.testing.assert_allclose(cp.asnumpy(dx2), d @ W.T, rtol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(dW), x[1:].T @ d, rtol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(db), d.sum(axis=0), rtol=1e-12)
    assert ck.affine_backward(cp.asarray(d), cp.asarray(x[1:]), cp.asarray(W), False)[0] is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rule,n_state", ALL_RULES, ids=[r.__name__ for r, _ in ALL_RULES])
def test_gpu_apply_update(cp, dtype, rule, n_state):
    rng = np.random.default_rng(4)
    shape = (5, 7)
    p, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    state = [np.abs(rng.standard_normal(shape)).astype(dtype) for _ in range(n_state)]
    scalars = tuple(float(v) for v in rng.uniform(0.1, 0.9, _n_scalars(rule, n_state)))
    want = rule(np, p, g, *state, *scalars)
    dp, ds = cp.asarray(p), [cp.asarray(s) for s in state]
    ck.apply_update(rule, dp, cp.asarray(g), {"st%d" % k: s for k, s in enumerate(ds)}, scalars)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for got, w in zip([dp] + ds, want):
        np.testing.assert_allclose(cp.asnumpy(got), w, rtol=tol, atol=tol)
