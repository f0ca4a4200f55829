"""The array libraries xpnet ships a class for: NumPy, CuPy, PyTorch, array_api_strict.

(JAX is in `jax_backend`.) Each class is all xpnet knows about its library; see
`base.Backend` for what each method answers.
"""
import array_api_compat
import numpy

from . import devices as _devices
from . import rng as _rng
from .base import Backend
from .devices import Device, DeviceError, register

__all__ = ["NumpyBackend", "CupyBackend", "TorchBackend", "StrictBackend"]

_CHECKOUT = "from the xpnet checkout"


@register
class NumpyBackend(Backend):
    """NumPy on the host: the fast CPU kernels (`numpy_fast.NumpyKernels`)."""

    name = "numpy"
    kind = "cpu"
    heads = ("numpy",)
    help = "cpu, numpy-reference"
    module = "numpy"
    install = "pip install numpy"
    modules = ("numpy",)
    tracemalloc_counted = True

    def __init__(self):
        super().__init__()
        self._module = numpy

    @property
    def kernels(self):
        from .numpy_fast import NumpyKernels
        return NumpyKernels

    def owns(self, x):
        return isinstance(x, numpy.ndarray)         # NumPy scalars are values, not arrays

    def namespace(self):
        import array_api_compat.numpy as ns
        return ns

    def device_of(self, x):
        return _devices.CPU

    def same_place(self, x, dev):
        return True

    def parse(self, spec, rest, reference):
        if rest:
            raise DeviceError("unknown device %r; the CPU has no index (use cpu or "
                              "numpy-reference)" % spec)
        return Device("cpu", reference=reference)

    def device_name(self, dev):
        return "numpy-reference" if dev.reference else "cpu"

    def test_cases(self):
        return [("numpy", "cpu"), ("numpy-reference", "numpy-reference")]

    def native(self, dev):
        return "cpu"

    def to_host(self, x):
        return x

    def from_host(self, host, dev):
        return host

    def uniform(self, shape, like, dev):
        f64 = like.dtype == numpy.float64
        u = _rng.host_rng().random(shape, dtype=numpy.float64 if f64 else numpy.float32)
        return u.astype(like.dtype, copy=False)


@register
class CupyBackend(Backend):
    """CuPy on CUDA GPUs: `cuda_kernels.CudaKernels`, which takes its module from `load`,
    so a subclass can run them on another CuPy-like module (tests' CPU stand-in). Such a
    subclass sets its own ``name`` and ``kind`` (its device names become ``KIND:N`` and
    ``NAME-reference:N``), ``heads = ()`` and ``auto = 0`` (so ``gpu``, ``cupy`` and
    ``auto`` still mean real CuPy), and overrides ``_import`` (its module), ``available``
    (no driver to probe) and ``owns`` (its array type)."""

    name = "cupy"
    kind = "gpu"
    heads = ("cuda", "cupy")
    help = "gpu, gpu:N, cupy-reference[:N]"
    module = "cupy"
    install = ("pip install -e \".[gpu]\" (CUDA 12) or -e \".[gpu-cuda13]\" (CUDA 13), "
               + _CHECKOUT)
    modules = ("cupy",)
    types = ("cuda",)
    auto = 1
    nccl = True

    def __init__(self):
        super().__init__()
        self._probe = None

    @property
    def kernels(self):
        from .cuda_kernels import CudaKernels
        return CudaKernels

    def available(self):
        if self._probe is None:         # the driver and device count don't change
            self._probe = self._probe_gpu()
        return self._probe

    def _probe_gpu(self):
        try:
            cp = self.load()
        except DeviceError as e:
            return False, str(e)
        try:
            n = cp.cuda.runtime.getDeviceCount()
        except Exception as e:  # driver missing or too old
            return False, "CuPy imported but the CUDA driver failed: %s" % (e,)
        if n < 1:
            return False, "CuPy imported but no CUDA device is present"
        return True, ""

    def indexed(self, spec, type, num, reference):
        self.index(spec, num)                  # a bad name first, then the hardware
        ok, why = self.available()
        if not ok:
            raise DeviceError("device %r was requested but the GPU can't be used: %s"
                              % (spec, why))
        return super().indexed(spec, type, num, reference)

    def device_count(self, type):
        return int(self.load().cuda.runtime.getDeviceCount())

    def device_of(self, x):
        return Device("gpu", x.device.id)

    def same_place(self, x, dev):
        return x.device.id == dev.id

    def device_name(self, dev):
        return ("%s-reference:%d" % (self.name, dev.id) if dev.reference
                else "%s:%d" % (self.kind, dev.id))

    def native(self, dev):
        return self.load().cuda.Device(dev.id)

    def scope(self, dev):
        return self.load().cuda.Device(dev.id)

    def hardware_name(self, dev):
        name = self.load().cuda.runtime.getDeviceProperties(dev.id).get("name", b"")
        return name.decode() if isinstance(name, bytes) else str(name)

    def torch_place(self, dev):
        return "cuda:%d" % dev.id

    def is_gpu(self, dev):
        return True

    def memory_pool(self, dev):
        pool = self.load().get_default_memory_pool()
        return pool.free_all_blocks, pool.total_bytes

    def report_facts(self, dev):
        cp = self.load()
        try:
            runtime = cp.cuda.runtime.runtimeGetVersion()
        except Exception:   # informative only
            runtime = None
        return {"cupy": cp.__version__, "cuda_runtime": runtime}

    def namespace(self):
        import array_api_compat.cupy as ns
        return ns

    def to_host(self, x):
        return x.get()

    def from_host(self, host, dev):
        cp = self.load()
        with cp.cuda.Device(dev.id):
            return cp.asarray(host)

    def synchronize(self, dev=None, x=None):
        cp = self.loaded()
        if cp is not None and self.available()[0]:
            cp.cuda.get_current_stream().synchronize()

    def uniform(self, shape, like, dev):
        cp = self.load()

        def make(seed):
            with cp.cuda.Device(dev.id):
                return cp.random.default_rng(seed)
        dt = like.dtype if like.dtype in (cp.float32, cp.float64) else cp.float32
        return _rng.device_generator(dev, make).random(shape, dtype=dt).astype(like.dtype,
                                                                               copy=False)


@register
class TorchBackend(Backend):
    """PyTorch tensors (cpu, cuda:N, mps) through array-api-compat, on the reference
    kernels. MPS has no float64."""

    name = "torch"
    kind = "torch"
    help = "torch, torch:cpu, torch:cuda[:N], torch:mps"
    module = "torch"
    install = ("pip install -e \".[torch]\" %s (for a CPU-only build first: pip install torch "
               "--index-url https://download.pytorch.org/whl/cpu)" % _CHECKOUT)
    modules = ("torch",)
    types = ("cpu", "cuda", "mps")

    def owns(self, x):
        return array_api_compat.is_torch_array(x)

    def test_cases(self):
        return [("torch-cpu", "torch:cpu")]

    def place(self, type, id):
        type, id = super().place(type, id)
        return type, (id if type == "cuda" else 0)

    def parse(self, spec, rest, reference):
        where, _, num = (rest or "cpu").partition(":")
        if where not in self.types or (num and where != "cuda"):
            raise DeviceError("unknown torch device %r; use torch:cpu, torch:cuda[:N] or "
                              "torch:mps" % spec)
        torch = self.load()
        if where == "mps" and not (getattr(torch.backends, "mps", None)
                                   and torch.backends.mps.is_available()):
            raise DeviceError("device %r was requested but PyTorch's MPS backend is not "
                              "available" % spec)
        return self.indexed(spec, where, num, reference)

    def device_count(self, type):
        torch = self.load()
        if type == "cuda":
            return torch.cuda.device_count() if torch.cuda.is_available() else 0
        return 1

    def device_of(self, x):
        d = x.device
        return Device("torch", d.index or 0, type=d.type)

    def same_place(self, x, dev):
        return x.device.type == dev.type and (dev.type != "cuda" or x.device.index == dev.id)

    def device_name(self, dev):
        where = "cuda:%d" % dev.id if dev.type == "cuda" else dev.type
        return "torch%s:%s" % ("-reference" if dev.reference else "", where)

    def native(self, dev):
        torch = self.load()
        return torch.device(dev.type, dev.id) if dev.type == "cuda" else torch.device(dev.type)

    def dtypes(self, dev):
        return tuple(d for d in super().dtypes(dev) if dev.type != "mps" or d != "float64")

    def hardware_name(self, dev):
        if dev.type == "cuda":
            return self.load().cuda.get_device_name(dev.id)
        return "Apple MPS" if dev.type == "mps" else None

    def torch_place(self, dev):
        return str(self.native(dev))

    def is_gpu(self, dev):
        return dev.type == "cuda"

    def no_float64(self, dev):
        return "PyTorch's MPS backend has no float64"

    def to_host(self, x):
        return x.detach().cpu().numpy()

    def from_host(self, host, dev):
        return self.load().as_tensor(host, device=self.native(dev))

    def synchronize(self, dev=None, x=None):
        torch = self.loaded()
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def uniform(self, shape, like, dev):
        torch = self.load()

        def make(seed):
            g = torch.Generator(device=self.native(dev))
            g.manual_seed(seed % (2 ** 63))
            return g
        dt = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
        u = torch.rand(shape, generator=_rng.device_generator(dev, make), device=like.device,
                       dtype=dt)
        return u.to(like.dtype)


@register
class StrictBackend(Backend):
    """array_api_strict: the standard's strict implementation, for tests. Its devices
    ``device1``/``device2`` test placement without GPUs; ``no_float64`` is a device
    without float64, like MPS. All are host memory (type ``cpu``); the index names them."""

    name = "array_api_strict"
    kind = "array-api-strict"
    heads = ("array_api_strict", "strict")
    help = "array-api-strict[:device1|:device2|:no_float64]"
    module = "array_api_strict"
    install = "pip install -e \".[strict]\" " + _CHECKOUT
    modules = ("array_api_strict",)
    _NAMES = ("CPU_DEVICE", "device1", "device2", "no_float64")   # index -> strict's name
    _NUMBERED = 3                                                  # CPU_DEVICE, device1, 2

    def namespace(self):
        return self.load()

    def parse(self, spec, rest, reference):
        self.load()
        if rest in self._NAMES[self._NUMBERED:]:
            return Device(self.kind, self._NAMES.index(rest), reference)
        if rest and not rest.startswith("device"):
            raise DeviceError("unknown array-api-strict device %r; use %s" % (spec, self.help))
        return self.indexed(spec, "cpu", rest[len("device"):], reference)

    def device_count(self, type):
        return self._NUMBERED

    def place(self, type, id):
        type, id = super().place(type, id)
        if not 0 <= id < len(self._NAMES):
            raise DeviceError("array-api-strict has no device %d" % id)
        return type, id

    def device_of(self, x):
        return Device(self.kind, self._NAMES.index(x.device._device))

    def same_place(self, x, dev):
        return x.device == self.native(dev)

    def device_name(self, dev):
        head = self.kind + ("-reference" if dev.reference else "")
        if dev.id >= self._NUMBERED:
            return "%s:%s" % (head, self._NAMES[dev.id])
        return head + (":device%d" % dev.id if dev.id else "")

    def native(self, dev):
        return self.load().Device(self._NAMES[dev.id])

    def dtypes(self, dev):
        have = self.load().__array_namespace_info__().dtypes(device=self.native(dev))
        return tuple(d for d in super().dtypes(dev) if d in have)

    def no_float64(self, dev):
        return "array-api-strict's no_float64 device has no float64, as MPS hasn't"

    def rank_device(self, dev, local_rank):
        if not 0 <= local_rank < self._NUMBERED - 1:
            raise DeviceError("rank %d needs array-api-strict:device%d, which does not exist "
                              "(device1 and device2 do)" % (local_rank, local_rank + 1))
        return Device(self.kind, local_rank + 1, dev.reference)
