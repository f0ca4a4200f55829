"""The trainer's random streams: a host NumPy generator for the shuffling order,
xpnet's host generator (dropout masks) and, with augmentation, a host generator for
its random choices; saved and restored for exact resumes.

The shuffling generator is always host NumPy, so a seed gives the same order on
every device. This module must never draw numbers itself or touch the net's arrays.
"""
from ..backend import host_rng, new_host_rng, seed as seed_xpnet

__all__ = ["shuffle_rng", "augment_rng", "state", "check", "check_state", "restore"]


def shuffle_rng(seed):
    """The shuffling generator; `seed` also seeds xpnet's generators. Without a seed it
    is drawn from xpnet's host generator, so ``xpnet.seed(s)`` gives a repeatable run."""
    if seed is not None:
        seed_xpnet(seed)
        return new_host_rng([int(seed), 1])
    return new_host_rng(int(host_rng().integers(2 ** 63)))


def augment_rng(seed):
    """The augmentation generator: from `seed`, else drawn from xpnet's host generator."""
    if seed is not None:
        return new_host_rng([int(seed), 3])
    return new_host_rng(int(host_rng().integers(2 ** 63)))


def check_state(gen, st, name):
    """What is wrong with `st` as a state of `gen`'s kind (text naming `name`), or None."""
    kind = type(gen.bit_generator)
    try:
        kind().state = st
    except Exception as e:     # NumPy raises TypeError, ValueError or KeyError here
        return "%s is not a valid %s state (%s: %s)" % (name, kind.__name__, type(e).__name__, e)
    return None


def state(shuffle):
    """JSON-able states of both streams (NumPy bit-generator dicts)."""
    return {"shuffle": shuffle.bit_generator.state, "host": host_rng().bit_generator.state}


def check(shuffle, st):
    """What is wrong with the stored states `st` (text naming the field), or None.
    Each state is tried on a new generator of the same kind; nothing is changed."""
    if not isinstance(st, dict):
        return "rng must be an object with 'shuffle' and 'host' states, got %r" % (st,)
    for name, gen in (("shuffle", shuffle), ("host", host_rng())):
        if name not in st:
            return "rng/%s is missing" % name
        problem = check_state(gen, st[name], "rng/" + name)
        if problem:
            return problem
    return None


def restore(shuffle, st):
    shuffle.bit_generator.state = st["shuffle"]
    # host_rng() is looked up again: xpnet.seed replaces the generator object.
    host_rng().bit_generator.state = st["host"]
