"""Random numbers for every device.

Weights and shuffles come from one host NumPy generator, so a seed gives the
same net and the same batches on every device. Masks made during a step
(dropout) come from the array's own library (`Backend.uniform`): a library with a
generator of its own keeps one per device here (`device_generator`), since
copying masks from the host every step would cost a transfer. The Array API
standard has no random numbers.
"""
import numpy

__all__ = ["seed", "host_rng", "new_host_rng", "uniform", "device_generator"]

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


def device_generator(dev, make):
    """The generator of device `dev`: ``make(seed)`` the first time after each `seed`."""
    g = _state["device"].get(dev)
    if g is None:
        g = _state["device"][dev] = make(_device_seed())
    return g


def set_device_generator(dev, g):
    """Replace `dev`'s generator (libraries whose generator is a value, such as JAX keys)."""
    _state["device"][dev] = g


def uniform(shape, like):
    """Uniform [0, 1) numbers of `shape` in `like`'s dtype, on `like`'s device."""
    from .arrays import device_of
    dev = device_of(like)
    return dev.backend.uniform(shape, like, dev)
