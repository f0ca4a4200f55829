"""The backend seam: the one place that knows one array library from another.

Each array library is one class (`base.Backend`: NumPy, CuPy, PyTorch and
array_api_strict in `libraries`, JAX in `jax_backend`), kept in a registry
(`register`). Everything else in xpnet asks this package:
- which device (`get_device`, `set_device`, `using_device`, ``XPNET_DEVICE``);
- which library and device an array has (`device_of`) and its Array API namespace
  (`namespace`);
- how to move arrays (`to_device`, `asnumpy`) and draw random numbers (`seed`, `uniform`);
- which kernels run a layer's heavy work on an input (`provider`).

Kernel providers are classes: `reference.ReferenceKernels` (Array API standard only,
readable like the book, never writes in place), `numpy_fast.NumpyKernels` (the CPU
fast path) and `cuda_kernels.CudaKernels` (CuPy) override only what they speed up.
No layer, net, optimizer or trainer imports an array library or branches on one.
Adding a library: docs/architecture.md.
"""
from . import devices as _devices
from .devices import (DEVICE_HELP, Device, DeviceError, backend_named, current_device,
                      device_help, get_device, gpu_available, load_library, register, registered,
                      set_device, unregister, using_device)
from .base import Backend, GenericBackend
from .arrays import (asnumpy, backend_of, device_of, dtype_name, get_array_module, host_zeros,
                     is_array, is_floating, is_numeric, kind_of, on_host, namespace,
                     native_device, placement, synchronize, to_device)
from .rng import host_rng, new_host_rng, seed, uniform
from . import libraries, jax_backend                  # noqa: F401  (they register themselves)
from .reference import ReferenceKernels

_devices.CPU = CPU = Device("cpu")
DEVICE_HELP = _devices.DEVICE_HELP

from . import cuda_kernels, numpy_fast, reference    # noqa: E402,F401  (the providers)

__all__ = [
    "Device", "DeviceError", "CPU", "DEVICE_HELP", "device_help", "get_device", "set_device",
    "using_device", "current_device", "gpu_available", "load_library", "namespace",
    "get_array_module", "kind_of", "device_of", "is_array", "asnumpy", "to_device",
    "synchronize", "dtype_name", "is_floating", "is_numeric", "on_host", "native_device",
    "placement", "host_zeros", "seed", "host_rng", "new_host_rng", "uniform", "provider",
    "register", "unregister", "registered", "backend_named", "backend_of", "Backend",
    "GenericBackend", "ReferenceKernels", "device_dtypes",
]


def provider(x):
    """The kernel provider (an instance) for array `x`: its library's fast one, or the
    reference kernels on a ``-reference`` device and on libraries with no fast path."""
    dev = device_of(x)
    return dev.backend.provider(dev)


def device_dtypes(device=None):
    """The dtype names a device (a name, a Device, or None for the current one) can hold:
    what ``xpnet info`` prints."""
    return get_device(device).dtypes
