"""Compiled training steps: ``step = compile_step(net, optimizer)``, ``loss = step(x, t)``.

One call is one training step (forward, backward, the optimizer's update), as
``net.gradient`` + ``optimizer.update`` do it, compiled where the net's library has a
compiler:

- JAX: ``jax.jit`` over xpnet's own layer code, traced once per input shape. Parameters,
  optimizer state, BatchNorm's running statistics and the random key of the Dropout
  layers are the program's inputs and outputs;
- torch: ``torch.compile`` of the same function (on the CPU inductor needs a C++
  compiler; the first step compiles for minutes, see `_Torch`). If compiling fails, the
  step warns once (`CompileWarning`) and runs eagerly (``mode='jit'``: raises);
- NumPy, CuPy and the other libraries: the eager step (xpnet's kernels are its fast path).

Value checks (label ranges, NaN/inf in the input) run on host inputs before the
program, never inside it. After each step the new arrays are bound into the net and
the optimizer (rebinding references: no copy), so the net is always current;
`Step.sync` does it again on request. What a compiled step does not keep: the layers'
gradients (``net.grads``) and forward caches.
"""
import warnings

import numpy

from . import backend
from . import functions as F
from . import layers as L
from .backend import asnumpy, device_of, to_device

__all__ = ["compile_step", "Step", "CompileWarning"]


class CompileWarning(UserWarning):
    """A step that was asked to compile runs eagerly instead (the reason is in the text)."""


def compile_step(net, optimizer, mode="auto"):
    """The training step of `net` with `optimizer`: ``step(x, t)`` returns the loss as a
    Python float. `mode`: ``'auto'`` (the net's library's compiler: JAX, torch; eager
    elsewhere), ``'jit'`` (the library's compiler, or ValueError where there is none;
    a failed compile raises) or ``'eager'``."""
    if mode not in ("auto", "jit", "eager"):
        raise ValueError("compile_step: mode must be 'auto', 'jit' or 'eager', got %r" % (mode,))
    params = getattr(net, "params", None)
    if not params or not callable(getattr(net, "gradient", None)):
        raise TypeError("compile_step: net must be a net with params and gradient(x, t), "
                        "got %s" % type(net).__name__)
    if not callable(getattr(optimizer, "update", None)):
        raise TypeError("compile_step: optimizer must have update(params, grads) (an "
                        "xpnet optimizer such as xpnet.Adam()), got %s" % type(optimizer).__name__)
    library = device_of(next(iter(params.values()))).library
    compiler = _COMPILERS.get(library) if mode != "eager" else None
    if compiler is not None and mode == "auto" and not compiler.pays:
        compiler = None
    if compiler is not None and not hasattr(net, "_names"):
        if mode == "jit":
            raise TypeError("compile_step: only xpnet nets (Sequential and its subclasses) "
                            "compile, got %s" % type(net).__name__)
        compiler = None
    if compiler is None and mode == "jit":
        raise ValueError("compile_step: no compiler for %s arrays (compiled: %s)"
                         % (library, ", ".join(sorted(_COMPILERS))))
    return Step(net, optimizer, compiler, strict=(mode == "jit"))


class Step:
    """A training step; see `compile_step`. ``mode`` says how it runs ('jax.jit',
    'torch.compile' or 'eager')."""

    def __init__(self, net, optimizer, compiler, strict=False):
        self.net, self.optimizer = net, optimizer
        self._compiler, self._strict = compiler, strict
        self._program = None
        self._key = None
        self._classes = None
        self._one_hot = None
        self.mode = compiler.name if compiler is not None else "eager"

    def __repr__(self):
        return "Step(%s, %s, mode=%r)" % (type(self.net).__name__, self.optimizer, self.mode)

    # -- one step

    def __call__(self, x, t):
        if self._compiler is None:
            return self._eager(x, t)
        x, t = self._checked(x, t)
        if self._program is None:
            self._program = self._compiler.compile(self._pure)
            self._key = self._compiler.new_key(x)
        net, opt = self.net, self.optimizer
        params = {k: p for k, p in net.params.items() if p is not None}
        state = {}
        for k, p in params.items():
            st = opt._state_for(k, p)
            state[k] = tuple(st[s] for s in opt._slots)
        opt.t += 1
        scalars = self._compiler.scalars(opt._scalars(), x)
        try:
            out = self._program(params, net.buffers, state, x, t, scalars, self._key)
        except Exception as e:
            opt.t -= 1
            if self._strict or not self._compiler.may_fall_back(e):
                raise
            warnings.warn("compile_step: %s failed (%s: %s); this step runs eagerly from now on"
                          % (self.mode, type(e).__name__, str(e).splitlines()[0] if str(e)
                             else ""), CompileWarning, stacklevel=2)
            self._compiler, self.mode = None, "eager"
            return self._eager(x, t)
        loss, self._new_params, self._new_buffers, self._new_state, self._key = out
        self.sync()
        net.last_loss = loss
        return float(loss)

    def _eager(self, x, t):
        grads = self.net.gradient(x, t)
        self.optimizer.update(self.net.params, grads)
        return float(self.net.last_loss)

    def sync(self):
        """Bind the latest parameters, BatchNorm statistics and optimizer state into the
        net and the optimizer (each step does it; it costs no copy)."""
        new = getattr(self, "_new_params", None)
        if new is None:
            return
        net, opt = self.net, self.optimizer
        for k, a in new.items():
            layer, local = net._names[k]
            layer.params[local] = a
        for k, a in self._new_buffers.items():
            layer, local = net._buffer_names[k]
            layer.buffers[local] = a
        for k, arrays in self._new_state.items():
            opt.state[k] = dict(zip(opt._slots, arrays))
        self._new_params = None

    # -- host checks, before the program

    def _checked(self, x, t):
        net = self.net
        if not backend.is_array(x):
            x = numpy.asarray(x)
        if backend.on_host(x) and backend.is_numeric(x):
            h = asnumpy(x)
            if not numpy.isfinite(h).all():
                bad = numpy.argwhere(~numpy.isfinite(h))[0]
                raise ValueError("compile_step: input has a non-finite value %r at index %s"
                                 % (float(h[tuple(bad)]), tuple(int(i) for i in bad)))
        x = net._prepare(x)
        if not backend.is_array(t):
            t = numpy.asarray(t)
        if t.shape[:1] != x.shape[:1]:
            raise ValueError("compile_step: %d samples but %d labels" % (x.shape[0], t.shape[0]))
        if isinstance(net.last_layer, L.SoftmaxWithLoss) and _integral(t):
            n = x.shape[0]
            if t.ndim == 2 and tuple(t.shape) == (n, 1):
                t = backend.namespace(t).reshape(t, (n,))
            classes = self._num_classes(x)
            if t.ndim != 1:
                raise ValueError("SoftmaxWithLoss: integer labels must have shape (%d,), got %s"
                                 % (n, tuple(t.shape)))
            F.check_labels(t, classes, "SoftmaxWithLoss")
            self._one_hot = classes      # made in the program: no label read there
        else:
            self._one_hot = None
        return x, net._prepare_t(t)

    def _num_classes(self, x):
        if self._classes is None:
            n = (getattr(self.net, "config", None) or {}).get("output_size")
            if not isinstance(n, int):
                n = int(self.net.predict(x[:1, ...]).shape[1])
            self._classes = n
        return self._classes

    # -- the function that is compiled: arrays in, arrays out, the net left as it was

    def _pure(self, params, buffers, state, x, t, scalars, key):
        net, opt = self.net, self.optimizer
        xp = backend.namespace(x)
        if self._one_hot is not None:
            # one-hot targets: the same loss and gradient as labels, and SoftmaxWithLoss
            # reads no label value (its range check ran on the host)
            classes = xp.arange(self._one_hot, device=backend.placement(t))
            t = xp.astype(t[:, None] == classes[None, :], x.dtype)
        saved = _bind(net, params, buffers)
        draws = []
        if key is not None:
            for layer in net.layers:
                if isinstance(layer, L.Dropout):
                    layer.draw = self._compiler.drawer(key, len(draws), draws)
        try:
            grads = net.gradient(x, t)
            loss = net.last_loss_array     # the array: last_loss is a float
            new_buffers = dict(net.buffers)
        finally:
            _restore(net, saved)
        new_params, new_state = {}, {}
        for k, p in params.items():
            g = grads.get(k)
            if g is None:
                new_params[k], new_state[k] = p, state[k]
                continue
            if g.dtype != p.dtype:
                g = xp.astype(g, p.dtype)
            out = opt.rule(xp, p, g, *state[k], *scalars)
            new_params[k], new_state[k] = out[0], tuple(out[1:])
        new_key = self._compiler.next_key(key) if key is not None else None
        return loss, new_params, new_buffers, new_state, new_key


def _integral(t):
    return backend.namespace(t).isdtype(t.dtype, "integral")


def _bind(net, params, buffers):
    """Put `params` and `buffers` into the layers; returns what `_restore` puts back."""
    saved = []
    for layer in net.layers + [net.last_layer]:
        saved.append((layer, dict(layer.params), dict(layer.grads), dict(layer.buffers),
                      {k: v for k, v in vars(layer).items() if k.startswith("_c_")},
                      getattr(layer, "loss", None)))
    for k, a in params.items():
        layer, local = net._names[k]
        layer.params[local] = a
    for k, a in buffers.items():
        layer, local = net._buffer_names[k]
        layer.buffers[local] = a
    return saved, net.last_loss_array


def _restore(net, saved):
    layers, last_loss = saved
    for layer, params, grads, buffers, caches, loss in layers:
        layer.params.update(params)
        layer.grads.update(grads)
        layer.buffers.update(buffers)
        for k in [k for k in vars(layer) if k.startswith("_c_")]:
            delattr(layer, k)
        for k, v in caches.items():
            setattr(layer, k, v)
        if hasattr(layer, "loss"):
            layer.loss = loss
        if "draw" in vars(layer):
            del layer.draw
    net.last_loss_array = last_loss


# ------------------------------------------------------------------ compilers

class _Jax:
    name = "jax.jit"
    pays = True

    @staticmethod
    def compile(fn):
        import jax
        return jax.jit(fn)

    @staticmethod
    def new_key(like):
        import jax
        key = jax.random.key(int(backend.host_rng().integers(2 ** 31)))
        # on `like`'s device, as the program's outputs are: else the 2nd call recompiles
        return jax.device_put(key, like.sharding)

    @staticmethod
    def next_key(key):
        import jax
        return jax.random.split(key, 1)[0]

    @staticmethod
    def drawer(key, i, draws):
        import jax
        draws.append(i)

        def draw(shape, like):
            return jax.random.uniform(jax.random.fold_in(key, i + 1), shape, dtype=like.dtype)
        return draw

    @staticmethod
    def scalars(values, like):
        return tuple(float(v) for v in values)   # weakly typed: never promote float32

    @staticmethod
    def may_fall_back(error):
        return False      # a failed trace is a bug to see, not a reason to run 30x slower


class _Torch:
    name = "torch.compile"
    # Measured on a 2-core CPU (heavily loaded): the first step compiles for 1-2.5 min
    # (dynamo splits xpnet's layer code into many graphs: the net's pass lock, device
    # scopes, array-api-compat's dispatch); then a SimpleConvNet batch-100 step took
    # 0.81 s against 1.37 s eager, equal to 6e-8. Never tried on a GPU.
    pays = True

    @staticmethod
    def compile(fn):
        import torch
        return torch.compile(fn, dynamic=False)

    @staticmethod
    def new_key(like):
        return None       # torch's own generator draws Dropout's numbers

    @staticmethod
    def scalars(values, like):
        # 0-d tensors: Python floats would be baked in, and Adam's change every step
        xp = backend.namespace(like)
        return tuple(xp.asarray(v, dtype=like.dtype, device=backend.placement(like))
                     for v in values)

    @staticmethod
    def may_fall_back(error):
        return True       # e.g. no C++ compiler for inductor on this CPU


_COMPILERS = {"jax": _Jax, "torch": _Torch}
