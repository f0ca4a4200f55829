"""tests/cupy_standin, the CPU stand-in for CuPy, checked itself: a launch that CuPy
would marshal into the wrong bytes fails (scalar widths, pointer types, strides,
devices, grids), thread order is shuffled, its arrays behave as device arrays; and the
switches that turn would-be skips into failures (XPNET_CI=1 in CI, XPNET_REQUIRE_GPU=1
on a GPU)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cupy_standin
from cupy_standin import kernels as standin_kernels
from cupy_standin import pytest_plugin as standin_plugin
from cupy_standin.backend import CupyStandinBackend
from xpnet.backend import cuda_kernels as ck
from xpnet.backend import gpu_available
from xpnet.backend.libraries import CupyBackend

_GPU_OK = gpu_available()[0]


@pytest.fixture
def standin(monkeypatch):
    """The stand-in as cuda_kernels' module-level `cupy`."""
    if standin_kernels.compiler() is None:
        why = "no host C++ compiler (g++ or c++, or CXX) to run the kernel sources"
        if os.environ.get("XPNET_CI") == "1":
            pytest.fail(why + " (XPNET_CI=1: CI must run the CuPy stand-in)")
        pytest.skip(why)
    monkeypatch.setattr(ck, "_cp", lambda: cupy_standin)
    return cupy_standin


# ---------------------------------------------------------------- the stand-in's own checks
# A launch that CuPy would marshal into the wrong bytes must fail here, in CI.

def _relu_kernel(dtype="float32"):
    return cupy_standin.RawKernel(ck.render_source("xpnet_relu_fwd", dtype), "xpnet_relu_fwd")


def _arrays(n=300, dtype="float32"):
    x = cupy_standin.asarray(np.linspace(-1, 1, n).astype(dtype))
    return x, cupy_standin.empty_like(x)


@pytest.mark.parametrize("total,why", [
    (300, r"argument 2 \(const I total\) is int \(int32, 4 bytes\) but CuPy would pass int64 "
          r"\(8 bytes\) from a int"),
    (np.int64(300), r"is int \(int32, 4 bytes\) but CuPy would pass int64"),
    (np.float32(300), r"is int .* but CuPy would pass float32"),
    (np.array([300], dtype=np.int64), r"is int .* but CuPy would pass int64"),
    (np.arange(3, dtype=np.int32), r"numpy.ndarray of shape \(3,\); CuPy refuses it"),
    ("300", "unsupported type str"),
])
def test_standin_refuses_a_wrong_scalar(standin, total, why):
    x, y = _arrays()
    with pytest.raises(cupy_standin.LaunchError, match=why):
        _relu_kernel()((2,), (256,), (x, y, total))


def test_standin_refuses_a_wrong_pointer(standin):
    x, y = _arrays()
    k = _relu_kernel()
    with pytest.raises(cupy_standin.LaunchError, match=r"pointer to float, got a float64 array"):
        k((2,), (256,), (x.astype("float64"), y, np.int32(300)))
    with pytest.raises(cupy_standin.LaunchError, match=r"is a pointer but CuPy would pass a "
                                                       r"int32 by value"):
        k((2,), (256,), (np.int32(1), y, np.int32(300)))
    with pytest.raises(cupy_standin.LaunchError, match="is a int value but got an array"):
        k((2,), (256,), (x, y, y))
    with pytest.raises(cupy_standin.LaunchError, match="numpy.ndarray of shape"):
        k((2,), (256,), (x.get(), y, np.int32(300)))
    with pytest.raises(cupy_standin.LaunchError, match="takes 3 arguments, got 2"):
        k((2,), (256,), (x, y))


def test_standin_refuses_a_strided_array(standin):
    a = cupy_standin.asarray(np.ones((20, 15), dtype=np.float32))
    y = cupy_standin.empty((15, 20), dtype=np.float32)
    with pytest.raises(cupy_standin.LaunchError, match=r"argument 0 .* not C-contiguous "
                                                       r"\(shape \(15, 20\), strides \(4, 60\)\)"):
        _relu_kernel()((2,), (256,), (a.T, y, np.int32(300)))


@pytest.mark.parametrize("grid,block,why", [
    ((0,), (256,), "outside CUDA's limits"), ((2,), (2048,), "outside CUDA's limits"),
    ((2,), (64, 32), "more than 1024 threads"), ([2], (256,), "grid must be a tuple"),
    ((2 ** 31,), (256,), "outside CUDA's limits"), ((2,), (0,), "outside CUDA's limits"),
])
def test_standin_refuses_bad_grids(standin, grid, block, why):
    x, y = _arrays()
    with pytest.raises(cupy_standin.LaunchError, match=why):
        _relu_kernel()(grid, block, (x, y, np.int32(300)))


def test_standin_refuses_another_devices_array(standin):
    x, y = _arrays()
    with cupy_standin.cuda.Device(1):
        x1 = cupy_standin.asarray(x.get())
    assert x1.device.id == 1 and x.device.id == 0
    with pytest.raises(cupy_standin.LaunchError, match="array on device 1, launch on device 0"):
        _relu_kernel()((2,), (256,), (x1, y, np.int32(300)))
    with pytest.raises(ValueError, match=r"arrays on devices \[0, 1\]"):
        x + x1


def test_standin_arrays_behave_as_device_arrays(standin):
    x, _ = _arrays(4)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        x + np.ones(4, dtype=np.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones(4, dtype=np.float32) * x
    h = np.ones(4)
    d = cupy_standin.asarray(h)
    h[0] = 5.0                                   # a copy, not a view of host memory
    assert float(d[0]) == 1.0 and type(d.get()) is np.ndarray


def test_standin_launches_the_providers_grid(standin):
    """The provider's grid (ceil(total / 256) blocks, at most 65536) reaches the kernel."""
    x = cupy_standin.asarray(np.linspace(-1, 1, 1000))
    y, _ = ck.relu_forward(x)
    k = ck._raw_kernel(cupy_standin, "xpnet_relu_fwd", "float64", "int")
    assert k.last_launch == (4, 256) and k.launches == 1
    np.testing.assert_array_equal(y.get(), np.maximum(x.get(), 0))


_ORDER_DEPENDENT = r"""
typedef int I;
extern "C" __global__ void chain(int* out, const I total)
{
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < total;
         i += (I)blockDim.x * (I)gridDim.x) {
        out[i] = i == 0 ? 1 : out[i - 1] + 1;      // reads another thread's result
    }
}
"""


def test_standin_shuffles_thread_order(standin):
    """A kernel that depends on thread order gives a wrong answer on the stand-in, as it
    may on a GPU; run in order it would give 1..n."""
    n = 16 * 256
    k = cupy_standin.RawKernel(_ORDER_DEPENDENT, "chain")
    out = cupy_standin.zeros(n, dtype=np.int32)
    k((16,), (256,), (out, np.int32(n)))
    assert not np.array_equal(out.get(), np.arange(1, n + 1)), \
        "thread order was not shuffled (seed %d)" % standin_kernels.order_seed()


# ---------------------------------------------------------------- no silent skips

_PROBE = """
def test_probe(backend):
    x = backend.asarray([1.0, -2.0])
    assert backend.np(x).tolist() == [1.0, -2.0]
"""


def _pytest(tmp_path, k, **env):
    """pytest on one tiny test that takes the ``backend`` fixture (tests/conftest.py
    loaded as a plugin), cases chosen by `k`; `env` set, other XPNET_ switches unset."""
    tests = os.path.dirname(os.path.abspath(__file__))
    (tmp_path / "test_probe.py").write_text(_PROBE)
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, os.path.dirname(tests)]), **env)
    for name in ("XPNET_CI", "XPNET_REQUIRE_GPU"):
        if name not in env:
            e.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "conftest", "--tb=line", "-rs", "-k", k,
                           str(tmp_path / "test_probe.py")], cwd=str(tmp_path),
                          capture_output=True, text=True, env=e)


def test_missing_compiler_fails_in_ci(tmp_path):
    r = _pytest(tmp_path, "cupy-standin", CXX="/nonexistent/c++", XPNET_CI="1")
    assert r.returncode == 1 and "1 error" in r.stdout, r.stdout
    assert "the CuPy stand-in needs a host C++ compiler" in r.stdout, r.stdout


def test_missing_compiler_skips_outside_ci(monkeypatch):
    """Without a compiler the stand-in is unavailable (conftest skips its case, saying why)
    unless XPNET_CI=1 says it must run."""
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    ok, why = CupyStandinBackend().available()
    assert not ok and "the CuPy stand-in needs a host C++ compiler" in why
    monkeypatch.delenv("XPNET_CI", raising=False)
    assert not standin_plugin.must_run(CupyStandinBackend())
    monkeypatch.setenv("XPNET_CI", "1")
    assert standin_plugin.must_run(CupyStandinBackend())
    assert not standin_plugin.must_run(CupyBackend())


def test_require_gpu_turns_gpu_skips_into_failures(tmp_path):
    """XPNET_REQUIRE_GPU=1 (a GPU run): a cupy case that would skip fails instead."""
    if _GPU_OK:
        pytest.skip("a GPU is present: the cupy cases run")
    strict = _pytest(tmp_path, "cupy and not standin", XPNET_REQUIRE_GPU="1")
    assert strict.returncode == 1 and "2 errors" in strict.stdout, strict.stdout
    assert "XPNET_REQUIRE_GPU=1 but this GPU case would skip" in strict.stdout, strict.stdout


@pytest.mark.parametrize("require,gpu,backend,want", [
    ("1", True, None, "failed"), ("1", True, "cupy", "failed"),
    ("1", True, "cupy-reference", "failed"), ("", True, "cupy", "skipped"),
    ("1", False, None, "skipped"), ("1", True, "numpy", "skipped"),
    ("1", True, "cupy-standin", "skipped"), ("1", True, ("cupy", "gpu"), "failed"),
    ("1", True, ("cupy-standin", "cupy-standin"), "skipped")])
def test_require_gpu_hook(monkeypatch, require, gpu, backend, want):
    class Report:
        skipped, outcome, longrepr = True, "skipped", ("f.py", 1, "Skipped: no GPU")

    class Item:
        if backend is not None:
            callspec = type("CallSpec", (), {"params": {"backend": backend}})

        def get_closest_marker(self, name):
            return object() if gpu and name == "gpu" else None

    class Outcome:
        def get_result(self):
            return rep

    rep = Report()
    monkeypatch.setenv("XPNET_REQUIRE_GPU", require)
    hook = standin_plugin.pytest_runtest_makereport(Item(), None)
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(Outcome())
    assert rep.outcome == want
    if want == "failed":
        assert rep.longrepr == "XPNET_REQUIRE_GPU=1 but this GPU case would skip: Skipped: no GPU"
