"""Shared fixtures: every numeric test runs once per available backend.

``backend`` is parametrized over the cases of every registered array-library class
(`xpnet.backend.registered()`, each class's `test_cases()`), so a library added with
`xpnet.backend.register` is tested by the whole suite. Today:
- ``numpy``: NumPy arrays through the fast CPU kernels;
- ``numpy-reference``: NumPy arrays through the reference kernels (fast paths off);
- ``array-api-strict``: the Array API standard's strict implementation (always: it is in
  the dev extra), so no NumPy-only call can hide in the layers, nets or trainer;
- ``torch-cpu``: PyTorch tensors through array-api-compat, when torch is installed;
- ``cupy`` and ``cupy-reference``: when CuPy and a CUDA device work;
- ``cupy-standin``: the CuPy backend class and its CUDA kernels on tests/cupy_standin, a
  CPU stand-in for CuPy (kernels built by the host C++ compiler), in every run. It checks
  xpnet's glue and kernel arithmetic, not the GPU, CuPy's runtime or cuBLAS.
(JAX runs its own file, tests/test_jax_backend.py: eager JAX is too slow for every test.)
Unavailable ones are skipped with the reason. ``xp`` (the Array API namespace) and
``device`` are derived from it. While a test runs, `xpnet.using_device` makes the
backend's device the default, so a net built without ``device=`` lands there even
when ``XPNET_DEVICE`` says otherwise.
"""
import numpy as np
import pytest

import xpnet
from xpnet import backend as B
from xpnet.backend.libraries import CupyBackend, NumpyBackend

from cupy_standin.backend import CupyStandinBackend
from cupy_standin.pytest_plugin import (must_run, pytest_collection_modifyitems,  # noqa: F401
                                        pytest_report_header, pytest_runtest_makereport)

B.register(CupyStandinBackend)       # the cupy-standin case (tests only)


def backend_cases():
    """``[(id, device name, library class)]`` over the registered libraries, in
    registration order."""
    return [(case, device, b) for b in B.registered()[::-1] for case, device in b.test_cases()]


class Backend:
    """One backend under test: its namespace, device name and small helpers."""

    def __init__(self, name, device):
        self.name = name
        self.device = device

    @property
    def dev(self):
        return xpnet.get_device(self.device)

    @property
    def xp(self):
        """The Array API namespace of this backend's arrays."""
        return self.dev.namespace

    @property
    def is_gpu(self):
        """CuPy arrays (or a stand-in's: a subclass of the CuPy class)."""
        return isinstance(self.dev.backend, CupyBackend)

    @property
    def is_numpy(self):
        """NumPy arrays (fast or reference kernels)."""
        return isinstance(self.dev.backend, NumpyBackend)

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
    params = []
    for case, device, b in backend_cases():
        ok, why = b.available()
        marks = [pytest.mark.gpu] if b.types[0] != "cpu" and not getattr(b, "standin", False) else []
        if not ok and not must_run(b):
            marks.append(pytest.mark.skip(reason="%s backend: %s" % (case, why)))
        params.append(pytest.param((case, device), id=case, marks=marks))
    return params


@pytest.fixture(params=_params())
def backend(request):
    be = Backend(*request.param)
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
