"""Optimizers of the book's chapter 6: ``update(params, grads)``.

Each update rule is written once, as a small function of arrays (`adam_rule`
...) that returns new arrays; the kernel provider of the parameter applies it
(`apply_update`): plain array math on the reference path, which never writes into
an array (so immutable libraries work), in place on NumPy, one fused elementwise
kernel per parameter on CuPy. The optimizer stores what the provider returns
through ``params[key] = new``, so ``update(net.params, grads)`` updates the net on
every library, and in place on NumPy and CuPy as in the book. State arrays live
on the parameters' device and keep their dtype; hyper-parameters are Python
floats, so they never promote a float32 update.
"""
import math

from . import backend
from .backend import asnumpy, device_of, to_device
from .validate import fraction, positive_float

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "AdamW",
           "get_optimizer", "OPTIMIZERS", "RULES"]


def _number(opt, name, v):
    if isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float)) \
            and not hasattr(v, "__float__"):
        raise TypeError("%s: %s must be a number, got %r" % (type(opt).__name__, name, v))
    return float(v)


def _positive(opt, name, v):
    return positive_float(_number(opt, name, v), "%s: %s" % (type(opt).__name__, name))


def _unit(opt, name, v):
    return fraction(_number(opt, name, v), "%s: %s" % (type(opt).__name__, name))


def _copy(a):
    return backend.namespace(a).asarray(a, copy=True)


class Optimizer:
    """Base class. Subclasses name their hyper-parameters (`_hyper`) and per-parameter
    state arrays (`_slots`), and give a `rule` and the `_scalars` it takes."""

    _hyper = ("lr",)
    _slots = ()          # per-parameter state arrays
    rule = None

    def __init__(self, lr=0.01):
        self.lr = _positive(self, "lr", lr)
        self.state = {}   # name -> {slot: array}
        self.t = 0        # number of update() calls

    def _scalars(self):
        raise NotImplementedError

    def _state_for(self, key, p):
        st = self.state.get(key)
        if st is None or any(tuple(st[s].shape) != tuple(p.shape) for s in self._slots):
            xp = backend.namespace(p)
            st = self.state[key] = {s: xp.zeros_like(p) for s in self._slots}
        elif any(device_of(a) != device_of(p) for a in st.values()):
            # the net was moved (net.to) without the optimizer: the state follows it
            st = self.state[key] = {s: to_device(a, device_of(p)) for s, a in st.items()}
        return st

    def update(self, params, grads):
        """Update every array in `params` from ``grads[key]`` (keys without a gradient,
        or with ``None``, are skipped): ``params[key] = new`` (the same array, updated
        in place, where the provider's kernels are in-place ones)."""
        self.t += 1
        scalars = self._scalars()
        for key, p in params.items():
            g = grads.get(key)
            if g is None:
                continue
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError("%s: gradient %r has shape %s but the parameter has %s"
                                 % (type(self).__name__, key, tuple(g.shape), tuple(p.shape)))
            if device_of(p) != device_of(g):
                raise ValueError("%s: gradient %r is on %s but its parameter is on %s"
                                 % (type(self).__name__, key, device_of(g), device_of(p)))
            if not backend.is_floating(p):
                raise TypeError("%s: parameter %r has dtype %s; only floating-point parameters "
                                "can be trained" % (type(self).__name__, key,
                                                    backend.dtype_name(p.dtype)))
            if g.dtype != p.dtype:
                g = backend.namespace(g).astype(g, p.dtype)
            st = self._state_for(key, p)
            # the provider returns the new p and rebinds the state's entries (on NumPy and
            # CuPy it writes in place and returns p itself)
            slots = {s: st[s] for s in self._slots}          # in the rule's order
            new = backend.provider(p).apply_update(self.rule, p, g, slots, scalars)
            st.update(slots)
            if new is not p:
                params[key] = new

    # -- checkpoints

    def state_dict(self):
        """Hyper-parameters, step count and state as host NumPy arrays (npz/JSON friendly)."""
        return {
            "type": type(self).__name__,
            "hyper": {h: getattr(self, h) for h in self._hyper},
            "t": self.t,
            # copies: on the CPU asnumpy would hand out the live arrays, not a snapshot
            "state": {k: {s: asnumpy(a).copy() for s, a in st.items()}
                      for k, st in self.state.items()},
        }

    def load_state_dict(self, sd, device=None):
        if sd.get("type") != type(self).__name__:
            raise ValueError("optimizer state is for %r, this optimizer is %s"
                             % (sd.get("type"), type(self).__name__))
        for h in sd["hyper"]:
            if h not in self._hyper:
                raise ValueError("%s: unknown hyper-parameter %r in state" % (type(self).__name__, h))
        checked = type(self)(**sd["hyper"])       # the constructor's checks, before any change
        for h in sd["hyper"]:
            setattr(self, h, getattr(checked, h))
        self.t = int(sd["t"])
        # copies, so two optimizers loaded from one dict don't share state
        self.state = {k: {s: _copy(to_device(a, device)) for s, a in st.items()}
                      for k, st in sd["state"].items()}
        return self

    def to(self, device):
        self.state = {k: {s: to_device(a, device) for s, a in st.items()}
                      for k, st in self.state.items()}
        return self

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%g" % (h, getattr(self, h)) for h in self._hyper))


# Each update rule, written once as a function of arrays: ``rule(xp, p, g, *state,
# *scalars)`` returns the new ``(p, *state)``. Providers apply it (on CuPy as one
# fused kernel); only + - * /, Python floats and ``xp.sqrt`` appear in a rule.

def sgd_rule(xp, p, g, lr):
    return (p - lr * g,)


def momentum_rule(xp, p, g, v, lr, mo):
    v = mo * v - lr * g
    return p + v, v


def nesterov_rule(xp, p, g, v, lr, mo):
    return p + mo * mo * v - (1.0 + mo) * lr * g, mo * v - lr * g


def adagrad_rule(xp, p, g, h, lr, eps):
    h = h + g * g
    return p - lr * g / (xp.sqrt(h) + eps), h


def rmsprop_rule(xp, p, g, h, lr, rho, eps):
    h = rho * h + (1.0 - rho) * g * g
    return p - lr * g / (xp.sqrt(h) + eps), h


def adam_rule(xp, p, g, m, v, lr_t, one_b1, one_b2, eps):
    m = m + one_b1 * (g - m)
    v = v + one_b2 * (g * g - v)
    return p - lr_t * m / (xp.sqrt(v) + eps), m, v


def adamw_rule(xp, p, g, m, v, lr_t, one_b1, one_b2, eps, decay):
    m = m + one_b1 * (g - m)
    v = v + one_b2 * (g * g - v)
    return p - lr_t * m / (xp.sqrt(v) + eps) - decay * p, m, v


RULES = (sgd_rule, momentum_rule, nesterov_rule, adagrad_rule, rmsprop_rule, adam_rule,
         adamw_rule)


class SGD(Optimizer):
    """``p -= lr * g``"""
    rule = staticmethod(sgd_rule)

    def _scalars(self):
        return (self.lr,)


class Momentum(Optimizer):
    """``v = momentum*v - lr*g; p += v``"""
    _hyper = ("lr", "momentum")
    _slots = ("v",)
    rule = staticmethod(momentum_rule)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = _unit(self, "momentum", momentum)

    def _scalars(self):
        return self.lr, self.momentum


class Nesterov(Momentum):
    """Nesterov accelerated gradient (the book's corrected form):
    ``p += mo*mo*v - (1+mo)*lr*g; v = mo*v - lr*g``"""
    rule = staticmethod(nesterov_rule)


class AdaGrad(Optimizer):
    """``h += g*g; p -= lr * g / (sqrt(h) + eps)``"""
    _hyper = ("lr", "eps")
    _slots = ("h",)
    rule = staticmethod(adagrad_rule)

    def __init__(self, lr=0.01, eps=1e-7):
        super().__init__(lr)
        self.eps = _positive(self, "eps", eps)

    def _scalars(self):
        return self.lr, self.eps


class RMSprop(Optimizer):
    """``h = rho*h + (1-rho)*g*g; p -= lr * g / (sqrt(h) + eps)``"""
    _hyper = ("lr", "decay_rate", "eps")
    _slots = ("h",)
    rule = staticmethod(rmsprop_rule)

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-7):
        super().__init__(lr)
        self.decay_rate = _unit(self, "decay_rate", decay_rate)
        self.eps = _positive(self, "eps", eps)

    def _scalars(self):
        return self.lr, self.decay_rate, self.eps


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction folded into the step size, as in the book:
    ``m += (1-b1)(g-m); v += (1-b2)(g*g-v); p -= lr_t * m / (sqrt(v) + eps)``,
    ``lr_t = lr * sqrt(1-b2^t) / (1-b1^t)``."""
    _hyper = ("lr", "beta1", "beta2", "eps")
    _slots = ("m", "v")
    rule = staticmethod(adam_rule)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__(lr)
        self.beta1 = _unit(self, "beta1", beta1)
        self.beta2 = _unit(self, "beta2", beta2)
        self.eps = _positive(self, "eps", eps)

    def _scalars(self):
        t = self.t
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        return lr_t, 1.0 - self.beta1, 1.0 - self.beta2, self.eps


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): besides Adam's step,
    ``p -= lr * weight_decay * p`` with the weight before the step, as PyTorch's
    AdamW does (the decay is not scaled by Adam's statistics, unlike an L2 term
    added to the gradient)."""
    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    rule = staticmethod(adamw_rule)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.01):
        super().__init__(lr, beta1, beta2, eps)
        w = _number(self, "weight_decay", weight_decay)
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError("AdamW: weight_decay must be a finite number >= 0, got %r"
                             % (weight_decay,))
        self.weight_decay = w

    def _scalars(self):
        return super()._scalars() + (self.lr * self.weight_decay,)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad,
              "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def get_optimizer(name, **kwargs):
    """Build an optimizer by (case-insensitive) name, e.g. ``get_optimizer('adam', lr=1e-3)``."""
    if isinstance(name, Optimizer):
        return name
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError("unknown optimizer %r; valid: %s" % (name, ", ".join(
            c.__name__ for c in OPTIMIZERS.values())))
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TypeError("%s: bad optimizer_param %s (%s)" % (cls.__name__, kwargs, e)) from None
