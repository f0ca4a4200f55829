"""Random numbers for every device.

Weights and shuffles come from one host NumPy generator, so a seed gives the
same net and the same batches on every device. Masks made during a step
(dropout) come from a generator on the array's own device, since copying them
from the host every step would cost a transfer. The Array API standard has no
random numbers: this module is where each library's own generator is used.
"""
import numpy

from .arrays import device_of, native_device
from .devices import load_library

__all__ = ["seed", "host_rng", "new_host_rng", "uniform"]

_state = {"host": numpy.random.default_rng(), "seed": None, "device": {}}


def seed(s):
    """Seed xpnet's generators (the host one and every device's)."""
    _state["host"] = numpy.random.default_rng(s)
    _state["seed"] = s
    _state["device"].clear()


def host_rng():
    """The host NumPy Generator (weights, shuffles, and masks for host arrays)."""
    return _state["host"]


def new_host_rng(seed):
    """A fresh host NumPy Generator from `seed` (a net's own weights, a run's shuffles)."""
    return numpy.random.default_rng(seed)


def _device_seed():
    s = _state["seed"]
    return int(host_rng().integers(2 ** 63)) if s is None else int(s)


def _generator(dev):
    g = _state["device"].get(dev)
    if g is None:
        if dev.library == "cupy":
            cp = load_library("cupy")
            with cp.cuda.Device(dev.id):
                g = cp.random.default_rng(_device_seed())
        else:
            torch = load_library("torch")
            g = torch.Generator(device=native_device(dev))
            g.manual_seed(_device_seed() % (2 ** 63))
        _state["device"][dev] = g
    return g


def uniform(shape, like):
    """Uniform [0, 1) numbers of `shape` in `like`'s dtype, on `like`'s device."""
    dev = device_of(like)
    if dev.library == "cupy":
        cp = load_library("cupy")
        dt = like.dtype if like.dtype in (cp.float32, cp.float64) else cp.float32
        return _generator(dev).random(shape, dtype=dt).astype(like.dtype, copy=False)
    if dev.library == "torch":
        torch = load_library("torch")
        u = torch.rand(shape, generator=_generator(dev), device=like.device,
                       dtype=like.dtype if like.dtype in (torch.float32, torch.float64)
                       else torch.float32)
        return u.to(like.dtype)
    dt = numpy.float64 if str(like.dtype).endswith("float64") else numpy.float32
    u = host_rng().random(shape, dtype=dt)
    if dev.library == "numpy":
        return u.astype(like.dtype, copy=False)
    xp = load_library("array_api_strict")
    return xp.astype(xp.asarray(u), like.dtype)
