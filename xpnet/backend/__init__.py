"""The one place that knows NumPy from CuPy.

Everything else asks this module for an array module (`get_array_module`),
moves data with `to_device`/`asnumpy`, and gets kernels and random numbers
through it, so a CPU net and a GPU net can live in one process.

The default device comes from ``XPNET_DEVICE`` (``cpu``, ``gpu`` or ``auto``;
``cpu`` when unset) and can be overridden from code with `set_device` or the
`using_device` context manager.
"""
import contextlib
import functools
import os
import threading

import numpy

__all__ = [
    "Device", "DeviceError", "CPU", "VALID_DEVICES",
    "get_device", "set_device", "using_device", "current_device",
    "gpu_available", "get_array_module", "is_gpu_array", "to_device",
    "asnumpy", "synchronize", "seed", "host_rng", "device_rng",
    "elementwise_kernel", "raw_kernel", "reduction_kernel", "fuse",
]

VALID_DEVICES = ("cpu", "gpu", "auto")


class DeviceError(RuntimeError):
    """The requested device can't be used (bad name, CuPy or CUDA missing)."""


# --------------------------------------------------------------------------
# CuPy, imported lazily: importing it costs ~0.5 s and may fail in odd ways.

_cupy = None
_cupy_error = None
_cupy_tried = False
_lock = threading.Lock()


def _load_cupy():
    global _cupy, _cupy_error, _cupy_tried
    if not _cupy_tried:
        with _lock:
            if not _cupy_tried:
                try:
                    import cupy
                    _cupy = cupy
                except Exception as e:  # ImportError, or a broken CUDA install
                    _cupy_error = e
                _cupy_tried = True
    return _cupy


def _cupy_if_loaded():
    """CuPy only if something already imported it (no import cost on CPU runs)."""
    return _cupy if _cupy is not None else None


def gpu_available():
    """Return ``(True, '')`` if a CUDA device can be used, else ``(False, reason)``."""
    cp = _load_cupy()
    if cp is None:
        return False, ("CuPy is not installed or failed to import (%s: %s); install it with "
                       "`pip install \"xpnet[gpu]\"` (CUDA 12) or `pip install \"xpnet[gpu-cuda13]\"` "
                       "(CUDA 13)" % (type(_cupy_error).__name__, _cupy_error))
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # driver missing or too old
        return False, "CuPy imported but the CUDA driver failed: %s" % (e,)
    if n < 1:
        return False, "CuPy imported but no CUDA device is present"
    return True, ""


class Device:
    """A place arrays live: ``Device('cpu')`` or ``Device('gpu', id)``."""

    __slots__ = ("kind", "id")

    def __init__(self, kind, id=0):
        if kind not in ("cpu", "gpu"):
            raise DeviceError("device kind must be 'cpu' or 'gpu', got %r" % (kind,))
        self.kind = kind
        self.id = int(id) if kind == "gpu" else 0

    @property
    def xp(self):
        return _load_cupy() if self.kind == "gpu" else numpy

    @property
    def name(self):
        return "cpu" if self.kind == "cpu" else "gpu:%d" % self.id

    def send(self, x):
        return to_device(x, self)

    def __eq__(self, other):
        return isinstance(other, Device) and (self.kind, self.id) == (other.kind, other.id)

    def __hash__(self):
        return hash((self.kind, self.id))

    def __repr__(self):
        return "Device(%r)" % self.name

    __str__ = lambda self: self.name


CPU = Device("cpu")


def _parse(spec):
    if isinstance(spec, Device):
        return spec
    if spec is None:
        return current_device()
    if not isinstance(spec, str):
        raise DeviceError("device must be a str like 'cpu', 'gpu', 'gpu:1' or 'auto', got %r"
                          % (spec,))
    s = spec.strip().lower()
    if s == "cpu":
        return CPU
    if s == "auto":
        ok, _ = gpu_available()
        return Device("gpu", 0) if ok else CPU
    if s == "gpu" or s.startswith("gpu:") or s == "cuda" or s.startswith("cuda:"):
        idx = 0
        if ":" in s:
            try:
                idx = int(s.split(":", 1)[1])
            except ValueError:
                raise DeviceError("bad device %r: the part after ':' must be an integer" % spec)
        ok, why = gpu_available()
        if not ok:
            raise DeviceError("device %r was requested but the GPU can't be used: %s" % (spec, why))
        n = _cupy.cuda.runtime.getDeviceCount()
        if idx >= n:
            raise DeviceError("device %r was requested but only %d CUDA device(s) exist" % (spec, n))
        return Device("gpu", idx)
    raise DeviceError("unknown device %r; valid values are %s (or 'gpu:N')"
                      % (spec, ", ".join(VALID_DEVICES)))


_default = None   # resolved lazily from XPNET_DEVICE
_local = threading.local()


def get_device(spec=None):
    """Resolve a device spec ('cpu', 'gpu', 'gpu:1', 'auto', a Device, None=current)."""
    return _parse(spec)


def current_device():
    """The device new nets and arrays go to: innermost `using_device`, else `set_device`,
    else ``XPNET_DEVICE``."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    global _default
    if _default is None:
        env = os.environ.get("XPNET_DEVICE", "cpu") or "cpu"
        try:
            _default = _parse(env)
        except DeviceError as e:
            raise DeviceError("XPNET_DEVICE=%r: %s" % (env, e)) from None
    return _default


def set_device(spec):
    """Set the process-wide default device; returns the resolved `Device`."""
    global _default
    _default = _parse(spec)
    return _default


@contextlib.contextmanager
def using_device(spec):
    """``with xpnet.using_device('gpu'): ...`` - a temporary default device."""
    dev = _parse(spec)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(dev)
    try:
        if dev.kind == "gpu":
            with _cupy.cuda.Device(dev.id):
                yield dev
        else:
            yield dev
    finally:
        stack.pop()


# --------------------------------------------------------------------------
# Arrays

def is_gpu_array(x):
    cp = _cupy_if_loaded()
    return cp is not None and isinstance(x, cp.ndarray)


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    cp = _cupy_if_loaded()
    if cp is not None:
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return cp
    return numpy


def device_of(x):
    """The `Device` an array lives on."""
    if is_gpu_array(x):
        return Device("gpu", x.device.id)
    return CPU


def asnumpy(x):
    """A host NumPy copy (or the array itself if already on the host)."""
    if is_gpu_array(x):
        return x.get()
    if isinstance(x, numpy.ndarray):
        return x
    return numpy.asarray(x)


def to_device(x, device=None):
    """Move an array, a dict/list/tuple of arrays, or anything with ``.to(device)``
    (nets, optimizers) to `device`. Arrays already there are returned as they are."""
    dev = _parse(device)
    if hasattr(x, "to") and callable(x.to) and not isinstance(x, numpy.ndarray) \
            and not is_gpu_array(x):
        return x.to(dev)
    if isinstance(x, dict):
        return {k: to_device(v, dev) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, dev) for v in x)
    if dev.kind == "cpu":
        return asnumpy(x)
    cp = _load_cupy()
    with cp.cuda.Device(dev.id):
        if isinstance(x, cp.ndarray) and x.device.id == dev.id:
            return x
        return cp.asarray(x)


def synchronize(xp=None):
    """Wait for queued GPU work (no-op on the CPU)."""
    cp = _cupy_if_loaded()
    if cp is not None and (xp is None or xp is cp):
        cp.cuda.get_current_stream().synchronize()


# --------------------------------------------------------------------------
# Random numbers: host NumPy generator for init and shuffling (same stream on
# every device), a device generator for masks made on the GPU.

_host_rng = numpy.random.default_rng()
_device_rngs = {}


def seed(s):
    """Seed xpnet's generators (host and every GPU)."""
    global _host_rng
    _host_rng = numpy.random.default_rng(s)
    _device_rngs.clear()
    _device_rngs["seed"] = s


def host_rng():
    return _host_rng


def device_rng(xp):
    """A Generator-like object for `xp` (numpy: the host one)."""
    if xp is numpy:
        return _host_rng
    key = ("gpu", xp.cuda.Device().id)
    g = _device_rngs.get(key)
    if g is None:
        s = _device_rngs.get("seed")
        if s is None:
            s = int(_host_rng.integers(2 ** 63))
        g = _device_rngs[key] = xp.random.default_rng(s)
    return g


# --------------------------------------------------------------------------
# CuPy kernels, built once and cached (CuPy also caches the compiled binaries).

@functools.lru_cache(maxsize=None)
def elementwise_kernel(in_params, out_params, operation, name, preamble=""):
    return _load_cupy().ElementwiseKernel(in_params, out_params, operation, name,
                                          preamble=preamble)


@functools.lru_cache(maxsize=None)
def reduction_kernel(in_params, out_params, map_expr, reduce_expr, post_map_expr,
                     identity, name):
    return _load_cupy().ReductionKernel(in_params, out_params, map_expr, reduce_expr,
                                        post_map_expr, identity, name)


@functools.lru_cache(maxsize=None)
def raw_kernel(code, name, options=()):
    return _load_cupy().RawKernel(code, name, options=tuple(options))


def fuse(func):
    """`cupy.fuse(func)` for CuPy arguments, plain `func` for NumPy ones."""
    fused = []

    @functools.wraps(func)
    def wrapper(*args):
        for a in args:
            if is_gpu_array(a):
                if not fused:
                    fused.append(_cupy.fuse(func))
                return fused[0](*args)
        return func(*args)
    return wrapper
