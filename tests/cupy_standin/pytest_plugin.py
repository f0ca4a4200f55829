"""pytest hooks for GPU runs and the stand-in (imported by tests/conftest.py).

- The report header names the stand-in's thread-order seed, so a failure that
  depends on the order can be rerun (``XPNET_STANDIN_SEED=<seed>``).
- `KNOWN_GPU_BUGS`: cupy-standin cases that fail because of a bug the stand-in
  found in xpnet's CuPy route (it would fail on a GPU too); marked strict xfail,
  so the run stays green, the count shows in every summary, and a fix turns the
  case into an XPASS failure until its entry is removed here.
- ``XPNET_REQUIRE_GPU=1`` (what ``tools/gpu_check.py`` sets): a ``gpu``-marked case
  that skips is reported as a failure, so a broken CuPy on a GPU machine can't
  pass as a run of skips.
"""
import os

import pytest

from . import kernels


KNOWN_GPU_BUGS = {
    # none known: the labels range check and float16 on CudaKernels were fixed
}


def must_run(backend):
    """True for the stand-in's case in CI (``XPNET_CI=1``): without a host compiler it
    fails there instead of skipping."""
    return getattr(backend, "standin", False) and os.environ.get("XPNET_CI") == "1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        why = KNOWN_GPU_BUGS.get(item.nodeid)
        if why is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason="known GPU-route bug: " + why))


def pytest_report_header(config):
    return "cupy-standin: thread-order seed %d (XPNET_STANDIN_SEED=%d reruns it)" % (
        kernels.order_seed(), kernels.order_seed())


GPU_CASES = ("cupy", "cupy-reference", "torch-cuda")


def is_gpu_case(item):
    """A ``gpu``-marked test whose backend (``backend`` or ``cp`` parameter), if any, is a
    GPU one: the numpy case of a gpu-marked test may skip, its cupy case may not."""
    if item.get_closest_marker("gpu") is None:
        return False
    params = getattr(getattr(item, "callspec", None), "params", {})
    cases = [params[k] for k in ("backend", "cp") if k in params]
    # the backend fixture's parameter is (case id, device name)
    return all((c[0] if isinstance(c, tuple) else c) in GPU_CASES for c in cases)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and os.environ.get("XPNET_REQUIRE_GPU") == "1" and is_gpu_case(item):
        why = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = "XPNET_REQUIRE_GPU=1 but this GPU case would skip: %s" % why
