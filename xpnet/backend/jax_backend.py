"""JAX: immutable arrays on CPUs, GPUs and TPUs, on the reference kernels.

Devices ``jax`` (JAX's default platform), ``jax:cpu``, ``jax:gpu[:N]``,
``jax:tpu[:N]``. JAX arrays can't be written in place, so they run on the reference
kernels, which never write (`reference`), each compiled with ``jax.jit``
(`JaxKernels`; ``jax-reference`` runs them uncompiled), and optimizers store what
`apply_update` returns. Dropout masks come from JAX keys split from one key per device.

float64: JAX keeps 64-bit types off unless ``jax_enable_x64`` is set, and then turns
float64 data into float32 without an error. xpnet doesn't flip that process-wide
switch for you: a float64 array (a float64 net) sent to a JAX device while it is off
raises a DeviceError saying to set ``JAX_ENABLE_X64=1`` (or to call
``jax.config.update('jax_enable_x64', True)`` before any JAX array is made), or to
use float32, which trains the same.
"""
import inspect

import array_api_compat
import numpy

from . import rng as _rng
from .base import ALL_DTYPES, Backend
from .devices import Device, current_device, register
from .reference import ReferenceKernels

__all__ = ["JaxBackend", "JaxKernels"]

# kernel -> (how many leading arguments it takes, which of them are static: shapes,
# window sizes, strides, flags); a trailing `workspace` is dropped
_KERNELS = {
    "relu_forward": (1, ()), "relu_backward": (2, ()),
    "affine_forward": (3, ()), "affine_backward": (4, (3,)),
    "im2col": (6, (1, 2, 3, 4, 5)), "col2im": (6, (1, 2, 3, 4, 5)),
    "conv2d_forward": (5, (3, 4)), "conv2d_backward": (7, (3, 4, 5, 6)),
    "max_pool_forward": (5, (1, 2, 3, 4)), "max_pool_backward": (7, (2, 3, 4, 5, 6)),
    "avg_pool_forward": (5, (1, 2, 3, 4)), "avg_pool_backward": (6, (1, 2, 3, 4, 5)),
}


class JaxKernels(ReferenceKernels):
    """The reference kernels, each compiled with ``jax.jit`` (once per shape): eager JAX
    pays a dispatch per array operation, a compiled kernel one per call. Same results
    as the reference (it is the reference's code); inside a jitted training step
    (`xpnet.compile_step`) they are simply inlined."""

    NAME = "jax"

    def __init__(self, backend):
        super().__init__(backend)
        jax = backend.load()
        for name, (n_args, static) in _KERNELS.items():
            setattr(self, name, _compiled(jax, getattr(ReferenceKernels, name).__get__(self),
                                          n_args, static))
        self._rules = {}

    def apply_update(self, rule, p, g, state, scalars):
        """The rule compiled once per (rule, number of state arrays); the scalars are
        traced, so a changing learning rate or bias correction doesn't recompile."""
        key = (rule, len(state))
        step = self._rules.get(key)
        if step is None:
            xp = self.backend.namespace()

            def run(p, g, st, sc):
                new = rule(xp, p, g, *st, *sc)
                return new[0], tuple(new[1:])
            step = self._rules[key] = self.backend.load().jit(run)
        new_p, new_state = step(p, g, tuple(state.values()), tuple(float(s) for s in scalars))
        for k, v in zip(list(state), new_state):
            state[k] = v
        return new_p


def _compiled(jax, method, n_args, static):
    fn = jax.jit(method, static_argnums=static)
    sig = inspect.signature(method)

    def call(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return fn(*list(bound.arguments.values())[:n_args])
    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = method.__doc__
    return call


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
    kernels = JaxKernels

    def owns(self, x):
        return array_api_compat.is_jax_array(x)

    def test_cases(self):
        return []       # eager JAX is too slow for every test: tests/test_jax_backend.py

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

    def torch_place(self, dev):
        return "cpu" if dev.type == "cpu" else "%s:%d" % ({"gpu": "cuda"}.get(dev.type, dev.type),
                                                          dev.id)

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

    def synchronize(self, dev=None, x=None):
        if x is not None:           # JAX dispatches asynchronously: wait for this result
            x.block_until_ready()

    def uniform(self, shape, like, dev):
        jax = self.load()
        box = _rng.device_generator(dev, lambda seed: [jax.random.key(seed % (2 ** 32))])
        box[0], sub = jax.random.split(box[0])
        xp = jax.numpy
        dt = like.dtype if xp.isdtype(like.dtype, "real floating") else xp.float32
        u = jax.random.uniform(sub, tuple(shape), dtype=dt)
        return xp.astype(jax.device_put(u, self.native(dev)), like.dtype)
