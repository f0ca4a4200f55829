"""Shared fixtures: every numeric test runs once per available backend.

``backend`` is parametrized over:
- ``numpy``: NumPy arrays through the fast CPU kernels;
- ``numpy-reference``: NumPy arrays through the reference kernels (fast paths off);
- ``array-api-strict``: the Array API standard's strict implementation (always: it is in
  the dev extra), so no NumPy-only call can hide in the layers, nets or trainer;
- ``torch-cpu``: PyTorch tensors through array-api-compat, when torch is installed;
- ``cupy`` and ``cupy-reference``: when CuPy and a CUDA device work;
- ``cupy-standin``: the CuPy backend and its CUDA kernels on tests/cupy_standin, a CPU
  stand-in for CuPy (host-compiled kernels), in every run: it checks xpnet's glue and
  kernel arithmetic, not the GPU, CuPy's runtime or cuBLAS.
Unavailable ones are skipped with the reason. ``xp`` (the Array API namespace) and
``device`` are derived from it. While a test runs, `xpnet.using_device` makes the
backend's device the default, so a net built without ``device=`` lands there even
when ``XPNET_DEVICE`` says otherwise.
"""
import contextlib
import importlib.util

import numpy as np
import pytest

import xpnet
from xpnet import backend as B
from xpnet.backend.libraries import CupyBackend

from cupy_standin.backend import registered_standin as standin_backend
from cupy_standin.pytest_plugin import (pytest_collection_modifyitems,  # noqa: F401 (hooks)
                                        pytest_report_header, pytest_runtest_makereport,
                                        standin_param)

DEVICES = {"numpy": "cpu", "numpy-reference": "numpy-reference",
           "array-api-strict": "array-api-strict", "torch-cpu": "torch:cpu",
           "cupy": "gpu", "cupy-reference": "cupy-reference", "cupy-standin": "cupy-standin"}


class Backend:
    """One backend under test: its namespace, device name and small helpers."""

    def __init__(self, name):
        self.name = name
        self.device = DEVICES[name]

    @property
    def dev(self):
        return xpnet.get_device(self.device)

    @property
    def xp(self):
        """The Array API namespace of this backend's arrays."""
        return self.dev.namespace

    @property
    def is_gpu(self):
        return isinstance(self.dev.backend, CupyBackend)      # CuPy or its stand-in

    @property
    def is_numpy(self):
        """NumPy arrays (fast or reference kernels)."""
        return self.dev.library == "numpy"

    def asarray(self, a, dtype=None):
        """A copy of host data `a` on this backend's device."""
        a = np.array(xpnet.asnumpy(a) if B.is_array(a) else a, dtype=dtype, copy=True)
        return xpnet.to_device(a, self.dev)

    def copy(self, a):
        """A copy of `a` on its device."""
        return xpnet.namespace(a).asarray(a, copy=True)

    @staticmethod
    def dtype(a):
        """The dtype name of array `a` ('float32' ...), whatever its library."""
        return B.dtype_name(a.dtype)

    def strided(self, a):
        """A non-contiguous device array equal to host `a` (a transposed, stepped view)."""
        base = np.zeros(a.shape[::-1] + (2,))
        base[..., 0] = a.T
        xp = self.xp
        view = xp.permute_dims(self.asarray(base)[..., 0], tuple(range(a.ndim))[::-1])
        if self.is_numpy:
            assert not view.flags.c_contiguous
        np.testing.assert_array_equal(self.np(view), a)
        return view

    @staticmethod
    def np(a):
        """Host NumPy copy of `a` (any backend)."""
        return np.array(xpnet.asnumpy(a), copy=True)

    def assert_close(self, actual, expected, rtol=1e-7, atol=0.0, what=""):
        np.testing.assert_allclose(self.np(actual), self.np(expected), rtol=rtol, atol=atol,
                                   err_msg=what)

    def __repr__(self):
        return "Backend(%s)" % self.name


def _params():
    ok, why = B.gpu_available()
    torch = importlib.util.find_spec("torch") is not None
    strict = importlib.util.find_spec("array_api_strict") is not None
    gpu = [pytest.mark.gpu] + ([] if ok else [pytest.mark.skip(reason="cupy backend: %s" % why)])
    return [
        pytest.param("numpy", id="numpy"),
        pytest.param("numpy-reference", id="numpy-reference"),
        pytest.param("array-api-strict", id="array-api-strict", marks=[] if strict else [
            pytest.mark.skip(reason="array-api-strict is not installed (dev extra)")]),
        pytest.param("torch-cpu", id="torch-cpu", marks=[] if torch else [
            pytest.mark.skip(reason="torch is not installed (pip install -e '.[torch]')")]),
        pytest.param("cupy", id="cupy", marks=gpu),
        pytest.param("cupy-reference", id="cupy-reference", marks=gpu),
        standin_param(),
    ]


@pytest.fixture(params=_params())
def backend(request):
    with contextlib.ExitStack() as stack:
        if request.param == "cupy-standin":
            stack.enter_context(standin_backend())
        be = Backend(request.param)
        with xpnet.using_device(be.device):
            yield be


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture
def device(backend):
    return backend.device


@pytest.fixture(autouse=True)
def _seed_rngs():
    """Deterministic tests: xpnet's host and device generators and NumPy's legacy one."""
    xpnet.seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture
def rng():
    """A fresh, seeded host generator for test data."""
    return np.random.default_rng(20240601)
