"""Shared fixtures: every numeric test runs once per available backend.

``backend`` is parametrized over "numpy" (always) and "cupy" (only when CuPy
and a CUDA device work; otherwise that case is skipped with the reason from
`xpnet.gpu_available`). ``xp`` and ``device`` are derived from it. While a
test runs, `xpnet.using_device` makes the backend's device the default, so a
net built without ``device=`` lands there even when ``XPNET_DEVICE=gpu``.
"""
import numpy as np
import pytest

import xpnet
from xpnet import backend as B


class Backend:
    """One backend under test: its array module, device name and small helpers."""

    def __init__(self, name):
        self.name = name
        self.device = "gpu" if name == "cupy" else "cpu"

    @property
    def xp(self):
        return xpnet.get_device(self.device).xp

    @property
    def is_gpu(self):
        return self.device == "gpu"

    def asarray(self, a, dtype=None):
        """A copy of host data `a` on this backend's device."""
        a = np.array(xpnet.asnumpy(a) if B.is_gpu_array(a) else a, dtype=dtype, copy=True)
        return self.xp.asarray(a)

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
    return [
        pytest.param("numpy", id="numpy"),
        pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu] + (
            [] if ok else [pytest.mark.skip(reason="cupy backend: %s" % why)])),
    ]


@pytest.fixture(params=_params())
def backend(request):
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
