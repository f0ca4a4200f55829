"""The ``cupy-standin`` backend: xpnet's CuPy backend class on the CPU stand-in module.

Everything but the module is the CuPy backend's own code (`CupyBackend`, and
`CudaKernels` as its provider), so the stand-in runs the same glue a GPU runs.
Devices are named ``cupy-standin[:N]`` and ``cupy-standin-reference[:N]``; it is
never chosen by ``auto`` and does not count as a GPU for `gpu_available`.
tests/conftest.py registers it for the whole run, so the ``backend`` fixture has a
``cupy-standin`` case; `registered_standin` registers it where conftest is not loaded.
"""
import contextlib

from xpnet import backend as B
from xpnet.backend.libraries import CupyBackend

from . import kernels

NAME = "cupy-standin"


class CupyStandinBackend(CupyBackend):
    """CuPy's backend class with `cupy_standin` as its module (tests only)."""

    name = kind = NAME
    heads = ()
    help = ""             # not listed in xpnet's device help: a test double
    module = "cupy_standin"
    install = "a host C++ compiler (g++ or c++, or set CXX)"
    modules = ("cupy_standin",)
    auto = 0
    standin = True        # tests/conftest.py: runs without a GPU, so no `gpu` mark
    nccl = False          # no NCCL in the stand-in: a distributed run all-reduces over MPI

    def test_cases(self):
        return [(NAME, NAME)]

    def _import(self):
        if kernels.compiler() is None:
            raise ImportError("the CuPy stand-in needs a host C++ compiler")
        import cupy_standin
        return cupy_standin

    def _probe_gpu(self):
        try:
            self.load()
        except B.DeviceError as e:
            return False, str(e)
        return True, ""

    def device_of(self, x):
        return B.Device(self.kind, x.device.id)

    def device_name(self, dev):
        return "%s%s:%d" % (NAME, "-reference" if dev.reference else "", dev.id)

    def namespace(self):
        return self.load().array_api_namespace


@contextlib.contextmanager
def registered_standin():
    """``with registered_standin(): ...``: the stand-in backend registered meanwhile
    (left registered if it already was)."""
    if any(isinstance(b, CupyStandinBackend) for b in B.registered()):
        yield B.backend_named(NAME)
        return
    B.register(CupyStandinBackend)
    try:
        yield B.backend_named(NAME)
    finally:
        B.unregister(NAME)
