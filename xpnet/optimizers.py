"""Optimizers of the book's chapter 6: ``update(params, grads)`` in place.

State arrays live on the parameters' device and keep their dtype. Scalars are
cast to the parameter dtype before use (NumPy 2 would otherwise promote a
float32 update to float64). On CuPy every update is one fused elementwise
kernel per parameter.
"""
import math

from .backend import (asnumpy, device_of, elementwise_kernel, get_array_module, is_gpu_array,
                      to_device)

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam",
           "get_optimizer", "OPTIMIZERS"]


class Optimizer:
    """Base class. Subclasses define `_hyper` names and `_update_one`."""

    _hyper = ("lr",)
    _slots = ()          # per-parameter state arrays

    def __init__(self, lr=0.01):
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError("%s: lr must be a positive finite number, got %r"
                             % (type(self).__name__, lr))
        self.lr = float(lr)
        self.state = {}   # name -> {slot: array}
        self.t = 0        # number of update() calls

    def _state_for(self, key, p):
        st = self.state.get(key)
        if st is None or any(st[s].shape != p.shape for s in self._slots):
            xp = get_array_module(p)
            st = self.state[key] = {s: xp.zeros_like(p) for s in self._slots}
        elif any(is_gpu_array(a) != is_gpu_array(p) for a in st.values()):
            # the net was moved (net.to) without the optimizer: the state follows it
            st = self.state[key] = {s: to_device(a, device_of(p)) for s, a in st.items()}
        return st

    def update(self, params, grads):
        """Update every array in `params` in place from ``grads[key]`` (keys without a
        gradient, or with ``None``, are skipped)."""
        self.t += 1
        for key, p in params.items():
            g = grads.get(key)
            if g is None:
                continue
            if g.shape != p.shape:
                raise ValueError("%s: gradient %r has shape %s but the parameter has %s"
                                 % (type(self).__name__, key, tuple(g.shape), tuple(p.shape)))
            if g.dtype != p.dtype:
                g = g.astype(p.dtype)
            if is_gpu_array(p) != is_gpu_array(g):
                raise ValueError("%s: gradient %r is on a different device than its parameter"
                                 % (type(self).__name__, key))
            self._update_one(key, p, g, self._state_for(key, p))

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
        for h, v in sd["hyper"].items():
            if h not in self._hyper:
                raise ValueError("%s: unknown hyper-parameter %r in state" % (type(self).__name__, h))
            setattr(self, h, v)
        self.t = int(sd["t"])
        # copies, so two optimizers loaded from one dict don't share state
        self.state = {k: {s: to_device(a, device).copy() for s, a in st.items()}
                      for k, st in sd["state"].items()}
        return self

    def to(self, device):
        self.state = {k: {s: to_device(a, device) for s, a in st.items()}
                      for k, st in self.state.items()}
        return self

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%g" % (h, getattr(self, h)) for h in self._hyper))


def _s(p, v):
    return p.dtype.type(v)


class SGD(Optimizer):
    """``p -= lr * g``"""

    def _update_one(self, key, p, g, st):
        if is_gpu_array(p):
            elementwise_kernel("T g, T lr", "T p", "p -= lr * g", "xpnet_sgd")(g, _s(p, self.lr), p)
            return
        p -= _s(p, self.lr) * g


class Momentum(Optimizer):
    """``v = momentum*v - lr*g; p += v``"""
    _hyper = ("lr", "momentum")
    _slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = float(momentum)

    def _update_one(self, key, p, g, st):
        v = st["v"]
        if is_gpu_array(p):
            elementwise_kernel("T g, T lr, T mo", "T p, T v", "v = mo * v - lr * g; p += v",
                               "xpnet_momentum")(g, _s(p, self.lr), _s(p, self.momentum), p, v)
            return
        v *= _s(p, self.momentum)
        v -= _s(p, self.lr) * g
        p += v


class Nesterov(Optimizer):
    """Nesterov accelerated gradient (the book's corrected form):
    ``p += mo*mo*v - (1+mo)*lr*g; v = mo*v - lr*g``"""
    _hyper = ("lr", "momentum")
    _slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = float(momentum)

    def _update_one(self, key, p, g, st):
        v = st["v"]
        mo, lr = self.momentum, self.lr
        if is_gpu_array(p):
            elementwise_kernel("T g, T lr, T mo", "T p, T v",
                               "p += mo * mo * v - ((T)1 + mo) * lr * g; v = mo * v - lr * g",
                               "xpnet_nesterov")(g, _s(p, lr), _s(p, mo), p, v)
            return
        p += _s(p, mo * mo) * v
        p -= _s(p, (1 + mo) * lr) * g
        v *= _s(p, mo)
        v -= _s(p, lr) * g


class AdaGrad(Optimizer):
    """``h += g*g; p -= lr * g / (sqrt(h) + eps)``"""
    _hyper = ("lr", "eps")
    _slots = ("h",)

    def __init__(self, lr=0.01, eps=1e-7):
        super().__init__(lr)
        self.eps = float(eps)

    def _update_one(self, key, p, g, st):
        h = st["h"]
        if is_gpu_array(p):
            elementwise_kernel("T g, T lr, T eps", "T p, T h",
                               "h += g * g; p -= lr * g / (sqrt(h) + eps)",
                               "xpnet_adagrad")(g, _s(p, self.lr), _s(p, self.eps), p, h)
            return
        xp = get_array_module(p)
        h += g * g
        p -= _s(p, self.lr) * g / (xp.sqrt(h) + _s(p, self.eps))


class RMSprop(Optimizer):
    """``h = rho*h + (1-rho)*g*g; p -= lr * g / (sqrt(h) + eps)``"""
    _hyper = ("lr", "decay_rate", "eps")
    _slots = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-7):
        super().__init__(lr)
        self.decay_rate = float(decay_rate)
        self.eps = float(eps)

    def _update_one(self, key, p, g, st):
        h = st["h"]
        rho = self.decay_rate
        if is_gpu_array(p):
            elementwise_kernel("T g, T lr, T rho, T eps", "T p, T h",
                               "h = rho * h + ((T)1 - rho) * g * g; p -= lr * g / (sqrt(h) + eps)",
                               "xpnet_rmsprop")(g, _s(p, self.lr), _s(p, rho), _s(p, self.eps), p, h)
            return
        xp = get_array_module(p)
        h *= _s(p, rho)
        h += _s(p, 1 - rho) * g * g
        p -= _s(p, self.lr) * g / (xp.sqrt(h) + _s(p, self.eps))


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction folded into the step size, as in the book:
    ``m += (1-b1)(g-m); v += (1-b2)(g*g-v); p -= lr_t * m / (sqrt(v) + eps)``,
    ``lr_t = lr * sqrt(1-b2^t) / (1-b1^t)``."""
    _hyper = ("lr", "beta1", "beta2", "eps")
    _slots = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update_one(self, key, p, g, st):
        t = self.t
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        m, v = st["m"], st["v"]
        if is_gpu_array(p):
            elementwise_kernel(
                "T g, T lr_t, T one_b1, T one_b2, T eps", "T p, T m, T v",
                "m += one_b1 * (g - m); v += one_b2 * (g * g - v); p -= lr_t * m / (sqrt(v) + eps)",
                "xpnet_adam")(g, _s(p, lr_t), _s(p, 1 - self.beta1), _s(p, 1 - self.beta2),
                              _s(p, self.eps), p, m, v)
            return
        xp = get_array_module(p)
        m += _s(p, 1 - self.beta1) * (g - m)
        v += _s(p, 1 - self.beta2) * (g * g - v)
        p -= _s(p, lr_t) * m / (xp.sqrt(v) + _s(p, self.eps))


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad,
              "rmsprop": RMSprop, "adam": Adam}


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
