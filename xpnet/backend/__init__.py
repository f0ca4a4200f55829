"""The backend seam: the one place that knows one array library from another.

Everything else in xpnet asks this package:
- which device (`get_device`, `set_device`, `using_device`, ``XPNET_DEVICE``);
- which kind an array is (`device_of`) and its Array API namespace (`namespace`);
- how to move arrays (`to_device`, `asnumpy`) and draw random numbers (`seed`, `uniform`);
- which kernels run a layer's heavy work on an input (`provider`).

Kernel providers share one set of function signatures (see `reference`):
`reference` (Array API standard only, readable like the book), `numpy_fast` (the
CPU fast path: strided views, threads, blocked GEMMs) and `cuda_kernels` (CuPy).
Adding a backend means adding a provider module and a line in `provider`.
No layer, net, optimizer or trainer imports an array library or branches on one.
"""
from . import cuda_kernels, numpy_fast, reference
from .arrays import (asnumpy, device_of, dtype_name, get_array_module, host_zeros, is_array,
                     is_floating, is_numeric, kind_of, on_host, namespace, native_device, placement, synchronize, to_device)
from .devices import (CPU, DEVICE_HELP, Device, DeviceError, current_device, get_device,
                      gpu_available, load_library, set_device, using_device)
from .rng import host_rng, new_host_rng, seed, uniform

__all__ = [
    "Device", "DeviceError", "CPU", "DEVICE_HELP", "get_device", "set_device", "using_device",
    "current_device", "gpu_available", "load_library", "namespace", "get_array_module",
    "kind_of", "device_of", "is_array", "asnumpy", "to_device", "synchronize", "dtype_name",
    "is_floating", "is_numeric", "on_host", "native_device", "placement", "host_zeros", "seed", "host_rng",
    "new_host_rng", "uniform", "provider",
]


def provider(x):
    """The kernel provider for array `x`: the fast one of its library, or the
    reference kernels on a ``-reference`` device and on libraries with no fast path."""
    dev = device_of(x)
    if dev.reference:
        return reference
    if dev.library == "numpy":
        return numpy_fast
    if dev.library == "cupy":
        return cuda_kernels
    return reference
