"""JAX: immutable arrays on CPUs, GPUs and TPUs, on the reference kernels.

Devices ``jax`` (JAX's default platform), ``jax:cpu``, ``jax:gpu[:N]``,
``jax:tpu[:N]``. JAX arrays can't be written in place, so they run on the reference
kernels, which never write (`reference`), and optimizers store what `apply_update`
returns. Dropout masks come from JAX keys split from one key per device.

float64: JAX keeps 64-bit types off unless ``jax_enable_x64`` is set, and then turns
float64 data into float32 without an error. xpnet doesn't flip that process-wide
switch for you: a float64 array (a float64 net) sent to a JAX device while it is off
raises a DeviceError saying to set ``JAX_ENABLE_X64=1`` (or to call
``jax.config.update('jax_enable_x64', True)`` before any JAX array is made), or to
use float32, which trains the same.
"""
import array_api_compat
import numpy

from . import rng as _rng
from .base import ALL_DTYPES, Backend
from .devices import Device, current_device, register

__all__ = ["JaxBackend"]


@register
class JaxBackend(Backend):
    """JAX (see the module docstring)."""

    name = "jax"
    kind = "jax"
    help = "jax, jax:cpu, jax:gpu[:N], jax:tpu[:N]"
    module = "jax"
    install = "pip install -e \".[jax]\" from the xpnet checkout"
    modules = ("jax", "jaxlib")
    types = ("cpu", "gpu", "tpu")
    mutable = False

    def owns(self, x):
        return array_api_compat.is_jax_array(x)

    def namespace(self):
        return self.load().numpy

    def parse(self, spec, rest, reference):
        jax = self.load()
        if not rest:
            rest = jax.default_backend()
        return super().parse(spec, rest, reference)

    def device_count(self, type):
        try:
            return len(self.load().devices(type))
        except RuntimeError:          # no such platform here
            return 0

    def device_of(self, x):
        try:
            d = next(iter(x.devices()))
        except Exception:             # a tracer inside jax.jit: it has no device yet
            cur = current_device()
            return cur if cur.library == self.name else Device(self.kind, 0)
        return Device(self.kind, self.load().devices(d.platform).index(d), type=d.platform)

    def same_place(self, x, dev):
        try:
            return x.devices() == {self.native(dev)}
        except Exception:
            return True

    def device_name(self, dev):
        head = self.kind + ("-reference" if dev.reference else "")
        return "%s:%s" % (head, dev.type) + (":%d" % dev.id if dev.type != "cpu" or dev.id else "")

    def native(self, dev):
        return self.load().devices(dev.type)[dev.id]

    def x64(self):
        """True when JAX's 64-bit types are on (``jax_enable_x64``)."""
        return bool(self.load().config.jax_enable_x64)

    def dtypes(self, dev):
        wide = ("float64", "int64", "uint64")
        return tuple(d for d in ALL_DTYPES if self.x64() or d not in wide)

    def no_float64(self, dev):
        return ("JAX's 64-bit mode is off on %s (it would turn float64 into float32): set "
                "JAX_ENABLE_X64=1 in the environment, or call "
                "jax.config.update('jax_enable_x64', True) before making any JAX array" % dev)

    def to_host(self, x):
        return numpy.asarray(self.load().device_get(x))

    def from_host(self, host, dev):
        return self.load().device_put(host, self.native(dev))

    def uniform(self, shape, like, dev):
        jax = self.load()
        box = _rng.device_generator(dev, lambda seed: [jax.random.key(seed % (2 ** 32))])
        box[0], sub = jax.random.split(box[0])
        xp = jax.numpy
        dt = like.dtype if xp.isdtype(like.dtype, "real floating") else xp.float32
        u = jax.random.uniform(sub, tuple(shape), dtype=dt)
        return xp.astype(jax.device_put(u, self.native(dev)), like.dtype)
