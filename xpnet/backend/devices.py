"""Devices: where arrays live and which array library holds them.

A `Device` is an array library plus a place in it: NumPy on the CPU, CuPy on a
CUDA GPU, PyTorch on ``cpu``/``cuda:N``/``mps``, or ``array_api_strict`` (the
standard's own strict implementation, for tests). A ``-reference`` device keeps
the library's arrays but runs xpnet's plain reference kernels instead of the
fast ones. This module imports no optional library until a device asks for it,
and never falls back to the CPU when another device was asked for.
"""
import contextlib
import importlib
import os
import threading

import numpy

__all__ = ["Device", "DeviceError", "CPU", "get_device", "set_device", "using_device",
           "current_device", "gpu_available", "load_library", "DEVICE_HELP"]

DEVICE_HELP = ("cpu, gpu, gpu:N, auto, numpy-reference, cupy-reference[:N], torch, "
               "torch:cpu, torch:cuda[:N], torch:mps, array-api-strict")

# library -> (module name, the install hint shown when it is missing)
_LIBRARIES = {
    "numpy": ("numpy", "pip install numpy"),
    "cupy": ("cupy", "pip install -e \".[gpu]\" (CUDA 12) or -e \".[gpu-cuda13]\" (CUDA 13), "
                     "from the xpnet checkout"),
    "torch": ("torch", "pip install -e \".[torch]\" from the xpnet checkout (for a CPU-only "
                       "build first: pip install torch --index-url "
                       "https://download.pytorch.org/whl/cpu)"),
    "array_api_strict": ("array_api_strict", "pip install -e \".[strict]\" from the xpnet "
                                             "checkout"),
}


class DeviceError(RuntimeError):
    """The requested device can't be used (bad name, library or hardware missing)."""


_loaded = {"numpy": numpy}
_load_errors = {}
_lock = threading.Lock()


def load_library(library, required=True):
    """The module of `library`, imported on first use; None (or DeviceError if
    `required`) when it can't be imported."""
    mod = _loaded.get(library)
    if mod is None and library not in _load_errors:
        with _lock:
            if library not in _loaded and library not in _load_errors:
                try:
                    _loaded[library] = importlib.import_module(_LIBRARIES[library][0])
                except Exception as e:  # ImportError, or a broken CUDA install
                    _load_errors[library] = e
        mod = _loaded.get(library)
    if mod is None and required:
        e = _load_errors[library]
        raise DeviceError("%s is not installed or failed to import (%s: %s); install it with: %s"
                          % (library, type(e).__name__, e, _LIBRARIES[library][1]))
    return mod


def gpu_available():
    """``(True, '')`` if CuPy can use a CUDA device, else ``(False, reason)``."""
    if _gpu_state:
        return _gpu_state[0]
    _gpu_state.append(_probe_gpu())
    return _gpu_state[0]


_gpu_state = []      # the probe's answer: the driver and device count don't change


def _probe_gpu():
    try:
        cp = load_library("cupy")
    except DeviceError as e:
        return False, str(e)
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # driver missing or too old
        return False, "CuPy imported but the CUDA driver failed: %s" % (e,)
    if n < 1:
        return False, "CuPy imported but no CUDA device is present"
    return True, ""


class Device:
    """A place arrays live. ``Device('cpu')``, ``Device('gpu', 1)``,
    ``Device('torch', 0, type='cuda')``, ``Device('array-api-strict')``; add
    ``reference=True`` for the reference kernels. `get_device` parses names."""

    __slots__ = ("library", "type", "id", "reference")
    _KINDS = {"cpu": "numpy", "gpu": "cupy", "torch": "torch", "array-api-strict": "array_api_strict"}

    def __init__(self, kind, id=0, reference=False, type=None):
        library = self._KINDS.get(kind, kind)
        if library not in _LIBRARIES:
            raise DeviceError("device kind must be one of %s, got %r" % (", ".join(self._KINDS), kind))
        if library == "torch":
            type = type or "cpu"
            if type not in ("cpu", "cuda", "mps"):
                raise DeviceError("torch device type must be cpu, cuda or mps, got %r" % (type,))
        else:
            type = "cuda" if library == "cupy" else "cpu"
        self.library = library
        self.type = type
        self.id = int(id) if type == "cuda" else 0
        self.reference = bool(reference)

    @property
    def kind(self):
        """``'cpu'`` (NumPy), ``'gpu'`` (CuPy), ``'torch'`` or ``'array-api-strict'``."""
        return {"numpy": "cpu", "cupy": "gpu", "array_api_strict": "array-api-strict"}.get(
            self.library, self.library)

    @property
    def xp(self):
        """The library's own module (numpy, cupy, torch, array_api_strict)."""
        return load_library(self.library)

    @property
    def namespace(self):
        """The library's Array API namespace (what `xpnet.namespace` gives for its arrays)."""
        mod = self.xp
        if self.library == "array_api_strict":
            return mod
        return importlib.import_module("array_api_compat." + self.library)

    @property
    def name(self):
        ref = "-reference" if self.reference else ""
        if self.library == "numpy":
            return "numpy-reference" if ref else "cpu"
        if self.library == "cupy":
            return ("cupy-reference:%d" if ref else "gpu:%d") % self.id
        if self.library == "torch":
            where = "cuda:%d" % self.id if self.type == "cuda" else self.type
            return "torch%s:%s" % (ref, where)
        return "array-api-strict"

    def __eq__(self, other):
        return isinstance(other, Device) and self._key() == other._key()

    def _key(self):
        return (self.library, self.type, self.id, self.reference)

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "Device(%r)" % self.name

    def __str__(self):
        return self.name


CPU = Device("cpu")


def _index(spec, text):
    try:
        return int(text)
    except ValueError:
        raise DeviceError("bad device %r: the part after ':' must be an integer" % spec) from None


def _cuda(spec, idx, reference):
    ok, why = gpu_available()
    if not ok:
        raise DeviceError("device %r was requested but the GPU can't be used: %s" % (spec, why))
    n = _loaded["cupy"].cuda.runtime.getDeviceCount()
    if idx >= n:
        raise DeviceError("device %r was requested but only %d CUDA device(s) exist" % (spec, n))
    return Device("gpu", idx, reference)


def _torch(spec, rest, reference):
    where, _, num = (rest or "cpu").partition(":")
    if where not in ("cpu", "cuda", "mps") or (num and where != "cuda"):
        raise DeviceError("unknown torch device %r; use torch:cpu, torch:cuda[:N] or torch:mps"
                          % spec)
    torch = load_library("torch")
    if where == "cpu" and not num:
        return Device("torch", reference=reference)
    if where == "cuda":
        idx = _index(spec, num) if num else 0
        if not torch.cuda.is_available() or idx >= torch.cuda.device_count():
            raise DeviceError("device %r was requested but PyTorch sees %d CUDA device(s)"
                              % (spec, torch.cuda.device_count()))
        return Device("torch", idx, reference, type="cuda")
    if where == "mps" and not num:
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("device %r was requested but PyTorch's MPS backend is not available"
                              % spec)
        return Device("torch", reference=reference, type="mps")


def _parse(spec):
    if isinstance(spec, Device):
        return spec
    if spec is None:
        return current_device()
    if not isinstance(spec, str):
        raise DeviceError("device must be a str such as %s, got %r" % (DEVICE_HELP, spec))
    s = spec.strip().lower()
    head, _, rest = s.partition(":")
    reference = head.endswith("-reference")
    head = head[:-len("-reference")] if reference else head
    if head in ("cpu", "numpy") and not rest:
        return Device("cpu", reference=reference)
    if head == "auto" and not rest and not reference:
        return Device("gpu", 0) if gpu_available()[0] else CPU
    if head in ("gpu", "cuda", "cupy"):
        return _cuda(spec, _index(spec, rest) if rest else 0, reference)
    if head == "torch":
        return _torch(spec, rest, reference)
    if head in ("array-api-strict", "array_api_strict", "strict") and not rest:
        load_library("array_api_strict")
        return Device("array-api-strict", reference=reference)
    raise DeviceError("unknown device %r; valid values are %s" % (spec, DEVICE_HELP))


_default = None   # resolved lazily from XPNET_DEVICE
_local = threading.local()


def get_device(spec=None):
    """Resolve a device name (see `DEVICE_HELP`), a `Device`, or None (the current one)."""
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
    """``with xpnet.using_device('gpu'): ...``: a temporary default device (per thread)."""
    dev = _parse(spec)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(dev)
    try:
        if dev.library == "cupy":
            with _loaded["cupy"].cuda.Device(dev.id):
                yield dev
        else:
            yield dev
    finally:
        stack.pop()
