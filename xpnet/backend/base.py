"""`Backend`: everything xpnet knows about one array library, in one class.

A subclass per library (`xpnet.backend.libraries`, `xpnet.backend.jax_backend`),
registered with `xpnet.backend.register`. The defaults here serve any library that
follows the Array API standard and speaks DLPack, so a new library overrides only
what differs: its import, its device names, its RNG, its fast kernels. See
docs/architecture.md, "Adding a backend".
"""
import contextlib
import importlib
import importlib.util
import re
import threading

import array_api_compat
import numpy

from . import rng as _rng
from .devices import Device, DeviceError
from .reference import REFERENCE

__all__ = ["Backend", "GenericBackend", "RefusedBackend", "ALL_DTYPES"]

ALL_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64")

_lock = threading.Lock()


class Backend:
    """One array library. Class attributes describe it; methods answer for it."""

    name = None            # Device.library, the registry key: "torch"
    kind = None            # Device.kind and the first word of its device names: "torch"
    heads = ()             # other first words of its device names ("gpu", "cuda", ...)
    help = ""              # its part of DEVICE_HELP
    module = None          # what `load` imports
    install = ""           # how to install it (shown when the import fails)
    modules = ()           # top-level modules its array types come from (cheap ownership test)
    types = ("cpu",)       # device types it has; the first is the default
    mutable = True         # arrays can be written in place
    float64 = True         # has float64 at all (see `dtypes` for one device)
    auto = 0               # rank for ``auto`` (0: never chosen by it)
    kernels = None         # fast kernel provider class (None: the reference kernels)
    nccl = False           # its device arrays can be all-reduced by NCCL (distributed)
    tracemalloc_counted = False  # its arrays' memory shows in tracemalloc (bench memory)

    def __init__(self):
        self._module = None
        self._error = None
        self._kernels = None

    # ------------------------------------------------------------ the import

    def load(self, required=True):
        """The library's module, imported on first use; None (or DeviceError if
        `required`) when it can't be imported."""
        if self._module is None and self._error is None:
            with _lock:
                if self._module is None and self._error is None:
                    try:
                        self._module = self._import()
                    except Exception as e:  # ImportError, or a broken CUDA install
                        self._error = e
        if self._module is None and required:
            e = self._error
            raise DeviceError("%s is not installed or failed to import (%s: %s); install it "
                              "with: %s" % (self.name, type(e).__name__, e, self.install))
        return self._module

    def _import(self):
        return importlib.import_module(self.module)

    def loaded(self):
        """The module if it was imported already, else None (never imports)."""
        return self._module

    def available(self):
        """``(True, '')`` when the library can be used, else ``(False, why)``. Without
        importing it when it wasn't yet: is it installed? (GPU classes also probe the
        hardware.)"""
        if self._module is None and (self._error is not None
                                     or importlib.util.find_spec(self.module) is None):
            try:
                self.load()
            except DeviceError as e:
                return False, str(e)
        return True, ""

    def test_cases(self):
        """``[(id, device name)]``: the cases of the test suite's `backend` fixture for this
        library (its default device, and its reference kernels when it has fast ones)."""
        cases = [(self.name.replace("_", "-"), self.kind)]
        if self.kernels is not None:
            cases.append((self.name.replace("_", "-") + "-reference", self.kind + "-reference"))
        return cases

    # ------------------------------------------------------------ arrays

    def owns(self, x):
        """True when `x` is an array of this library (asked once per array type)."""
        return (type(x).__module__.partition(".")[0] in self.modules
                and array_api_compat.is_array_api_obj(x))

    def namespace(self):
        """The library's Array API namespace."""
        mod = self.load()
        try:
            return importlib.import_module("array_api_compat." + self.module)
        except ImportError:
            return mod

    def device_of(self, x):
        """The `Device` array `x` is on (reference flag unset)."""
        return Device(self.kind, 0)

    def same_place(self, x, dev):
        """True when `x` already lives on `dev` (so `to_device` returns it as it is)."""
        return self.device_of(x)._key()[:3] == dev._key()[:3]

    # ------------------------------------------------------------ devices

    def place(self, type, id):
        """``(type, id)`` of a device, checked: `type` None means the default."""
        type = type or self.types[0]
        if type not in self.types:
            raise DeviceError("%s device type must be one of %s, got %r"
                              % (self.name, ", ".join(self.types), type))
        return type, int(id)

    def parse(self, spec, rest, reference):
        """The `Device` named by `spec`, given the part after the first ``:`` (`rest`,
        lower case): ``''``, ``'N'``, ``'type'`` or ``'type:N'``."""
        where, _, num = rest.partition(":")
        if where and where not in self.types and not num and (
                where.isdigit() or len(self.types) == 1):
            where, num = "", where              # 'N' (a one-type library: else not an integer)
        if where and where not in self.types:
            raise DeviceError("unknown %s device %r; use %s" % (self.name, spec, self.help))
        return self.indexed(spec, where or self.types[0], num, reference)

    def indexed(self, spec, type, num, reference):
        """Device `num` (a string, '' for 0) of `type`, checked against `device_count`:
        the one path for ``gpu:N``, ``torch:cuda:N``, ``jax:gpu:N`` and strict's ``deviceN``."""
        idx = self.index(spec, num)
        n = self.device_count(type)
        if idx >= n:
            raise DeviceError("device %r was requested but %s sees %d %s device(s)"
                              % (spec, self.name, n, type))
        return Device(self.kind, idx, reference, type=type)

    @staticmethod
    def index(spec, num):
        """Device index `num` ('' for 0) of name `spec`, or a DeviceError."""
        if num and not re.fullmatch(r"\d+", num):
            raise DeviceError("bad device %r: the part after ':' must be an integer" % spec)
        return int(num) if num else 0

    def device_count(self, type):
        """How many devices of `type` the library has."""
        return 1

    def device_name(self, dev):
        """The name `get_device` parses back to `dev`."""
        ref = "-reference" if dev.reference else ""
        if dev.type == self.types[0] and dev.id == 0 and len(self.types) == 1:
            return self.kind + ref
        return "%s%s:%s:%d" % (self.kind, ref, dev.type, dev.id)

    def native(self, dev):
        """What the library calls `dev` (for ``device=`` arguments)."""
        return None

    def dtypes(self, dev):
        """The dtype names `dev` can hold."""
        return tuple(d for d in ALL_DTYPES if self.float64 or d != "float64")

    def no_float64(self, dev):
        """Why `dev` has no float64 (a sentence for the error)."""
        return "%s has no float64" % dev

    def rank_device(self, dev, local_rank):
        """The device for distributed rank `local_rank` on this host: index = rank."""
        if dev.type == "cpu":
            return dev
        n = self.device_count(dev.type)
        if local_rank >= n:
            raise DeviceError("rank %d needs %s:%d but %s sees %d %s device(s)"
                              % (local_rank, self.kind, local_rank, self.name, n, dev.type))
        return Device(self.kind, local_rank, dev.reference, type=dev.type)

    def hardware_name(self, dev):
        """The accelerator's name ('NVIDIA H100 ...') for reports, or None on the host."""
        return None

    def is_gpu(self, dev):
        """True when `dev` is a GPU: one per distributed rank, counted before the ranks start."""
        return False

    def memory_pool(self, dev):
        """``(release_unused, total_bytes)`` of the library's device memory pool, or None
        where it keeps none that xpnet reads (the bench's memory column)."""
        return None

    def report_facts(self, dev):
        """Extra ``{name: value}`` facts about the library for benchmark reports."""
        return {}

    def torch_place(self, dev):
        """Where PyTorch would run the same work: ``'cpu'``, ``'cuda:N'``, ``'mps'`` (the
        benchmark's PyTorch twin)."""
        return "cpu" if dev.type == "cpu" else "%s:%d" % (dev.type, dev.id)

    def scope(self, dev):
        """A context in which the library's own default device is `dev`."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------ moves

    def to_host(self, x):
        """A host NumPy array of `x` (may share memory), by DLPack."""
        try:
            return numpy.from_dlpack(x)
        except BufferError:
            # NumPy 1.x exports no read-only array (such as one that came in by DLPack):
            # a writable copy on the same device goes through
            return numpy.from_dlpack(self.namespace().asarray(x, copy=True))

    def from_host(self, host, dev):
        """Host NumPy array `host` as an array on `dev`."""
        return self.namespace().asarray(host, device=self.native(dev))

    def synchronize(self, dev=None, x=None):
        """Wait for queued work on `dev` (None: every device of the library), or until
        array `x` is computed."""

    # ------------------------------------------------------------ random numbers

    def uniform(self, shape, like, dev):
        """Uniform [0, 1) numbers of `shape` in `like`'s dtype on `dev`. The default
        draws on the host from xpnet's seeded generator and moves them."""
        xp = self.namespace()
        f64 = str(like.dtype).endswith("float64")
        u = _rng.host_rng().random(shape, dtype=numpy.float64 if f64 else numpy.float32)
        return xp.astype(self.from_host(u, dev), like.dtype)

    # ------------------------------------------------------------ kernels

    def provider(self, dev):
        """The kernel provider (an instance) for arrays on `dev`."""
        if dev.reference:
            return REFERENCE
        k = self._kernels                 # asked on every layer call
        if k is None:
            cls = self.kernels
            if cls is None:
                return REFERENCE
            k = self._kernels = cls(self)
        return k


class GenericBackend(Backend):
    """An array library with no class of its own, met through array-api-compat and able
    to reach the host by DLPack: it runs on the reference kernels, on the device its
    arrays report."""

    help = ""

    def __init__(self, module_name, ns):
        super().__init__()
        self.name = self.kind = module_name
        self.modules = (module_name,)
        self._ns = ns
        self._module = ns

    def namespace(self):
        return self._ns

    def device_of(self, x):
        return Device(self.kind, 0)

    def same_place(self, x, dev):
        return True

    def device_name(self, dev):
        return "%s (generic)" % self.name


class RefusedBackend(GenericBackend):
    """An array library xpnet can't serve: every use raises a DeviceError that names it
    and the supported libraries, so its arrays are never turned into NumPy quietly."""

    def __init__(self, module_name, ns, type_name, why, supported):
        super().__init__(module_name, ns)
        self._msg = ("xpnet has no backend for %s arrays (%s): %s. Supported: %s; a library "
                     "can be added with xpnet.backend.register (docs/architecture.md)"
                     % (module_name, type_name, why, supported))

    def refuse(self, *_a, **_k):
        raise DeviceError(self._msg)

    namespace = device_of = to_host = from_host = uniform = provider = refuse
