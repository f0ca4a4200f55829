"""A CPU stand-in for CuPy, for xpnet's tests only (never shipped in the library).

It lets every test that runs on the ``cupy`` backend run in CI without a GPU:
arrays are NumPy arrays with CuPy's device semantics (`ndarray`), ``RawKernel``
compiles xpnet's CUDA kernel sources with the host C++ compiler and runs each
launch serially in a shuffled thread order, checking every argument as CuPy
would marshal it against the kernel's C signature (`kernels`), and GEMMs and
everything else are NumPy's.

What it checks: xpnet's glue (which arrays go where, dtypes, contiguity, launch
arguments, grids, workspace reuse, device placement) and its kernels' arithmetic
(index decoding, bounds, gathers, fused optimizer steps).
What it does NOT check: the hardware, CuPy's own runtime (memory pool, streams,
NVRTC's compiler, its kernel cache), cuBLAS (GEMM order and precision), data
races between real threads, or speed. The first real GPU run checks those
(``python tools/gpu_check.py --all``).

Use it as the module ``cupy``: ``import cupy_standin as cp``; its Array API
namespace is `array_api.namespace` (what ``x.__array_namespace__()`` gives).
"""
import numpy as _numpy

from . import cuda, kernels
from ._array import ndarray
from ._wrap import Namespace as _Namespace, function as _function, is_standin
from .array_api import namespace as array_api_namespace
from .kernels import LaunchError, RawKernel

__version__ = "0.0-standin"
IS_STANDIN = True

_numpy_ns = _Namespace("cupy_standin", _numpy)


def __getattr__(name):
    """Every other ``cupy.<name>`` is NumPy's, on stand-in arrays."""
    return getattr(_numpy_ns, name)


def asnumpy(a, stream=None, order="C", out=None):
    """A host NumPy copy (``cupy.asnumpy``); host data passes through as NumPy."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return _numpy.asarray(a, order=order)


def get_array_module(*args):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _numpy


def get_default_memory_pool():
    return cuda.pool


def get_default_pinned_memory_pool():
    return cuda.pool


class _Generator:
    """``cupy.random.Generator``: NumPy's, its arrays on the current device."""

    def __init__(self, seed):
        self._g = _numpy.random.default_rng(seed)

    def __getattr__(self, name):
        return _function(getattr(self._g, name), name)


class _Random(_Namespace):
    def default_rng(self, seed=None):
        return _Generator(seed)


random = _Random("cupy_standin.random", _numpy.random)

__all__ = ["ndarray", "RawKernel", "LaunchError", "cuda", "kernels", "random", "asnumpy",
           "get_array_module", "get_default_memory_pool", "array_api_namespace", "is_standin"]
