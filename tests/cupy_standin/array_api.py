"""The stand-in's Array API namespace (what array-api-compat's ``cupy`` wrapper is for
CuPy): array-api-compat's NumPy namespace, on stand-in arrays."""
import array_api_compat.numpy as _np_api

from . import cuda
from ._wrap import Namespace


class _Info:
    """``__array_namespace_info__()``: NumPy's answers, with the stand-in's devices."""

    def __init__(self):
        self._info = _np_api.__array_namespace_info__()

    def capabilities(self):
        return self._info.capabilities()

    def default_device(self):
        return cuda.Device()

    def devices(self):
        return [cuda.Device(i) for i in range(cuda.DEVICE_COUNT)]

    def default_dtypes(self, *, device=None):
        return self._info.default_dtypes()

    def dtypes(self, *, device=None, kind=None):
        return self._info.dtypes(kind=kind)


namespace = Namespace("cupy_standin.array_api", _np_api,
                      {"__array_namespace_info__": _Info, "__array_api_version__":
                       getattr(_np_api, "__array_api_version__", "2024.12")})
