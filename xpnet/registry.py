"""The one list of the models and optimizers that `xpnet train` and `xpnet bench` offer.

A `Model` row names a network for the command line (``simple_conv``), ties it to
its class in `xpnet.nets.NETS` and holds the arguments that build it; the bench
lists the rows it times under their class names and also takes `aliases`.
Optimizer names are the keys of `xpnet.optimizers.OPTIMIZERS`; this module only
adds the command line's default learning rates.

Adding a model is one `Model(...)` line in `MODELS`; adding an optimizer is its
line in `optimizers.OPTIMIZERS` (plus one in `_LR` if the class default lr is not
the one wanted on the command line).

This module must never hold its own copy of a class list (it reads `nets.NETS`
and `optimizers.OPTIMIZERS`), nor import the command line or the bench: both
import it.
"""
import copy
import dataclasses
import inspect

from . import nets, optimizers

__all__ = ["IMAGE_SHAPE", "N_CLASSES", "Model", "MODELS", "CLI_MODELS", "BENCH_MODELS",
           "cli_model", "bench_model", "OPTIMIZERS", "DEFAULT_LR", "default_lr"]

IMAGE_SHAPE = (1, 28, 28)   # MNIST / Fashion-MNIST
N_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Model:
    """One network as the command line and the bench build it."""

    name: str                # `xpnet train --model NAME`; unique
    net: str                 # its class: a key of xpnet.nets.NETS
    kwargs: dict             # constructor arguments besides device, dtype, seed, weight decay
    aliases: tuple = ()      # more names `xpnet bench --models` takes (any case)
    cli: bool = True         # offered by `xpnet train --model`
    bench: bool = True       # timed by `xpnet bench`, listed under the class name
    lr: dict = dataclasses.field(default_factory=dict)   # optimizer -> default lr, if not DEFAULT_LR

    @property
    def cls(self):
        return nets.NETS[self.net]

    def _takes(self, arg):
        return arg in inspect.signature(self.cls).parameters

    @property
    def flat_input(self):
        """True when the net takes flat (N, 784) rows instead of (N, 1, 28, 28) images."""
        return not self._takes("input_dim")

    @property
    def weight_decay(self):
        """True when the net has L2 weight decay (the book's TwoLayerNet has none)."""
        return self._takes("weight_decay_lambda")

    def build(self, device=None, seed=None, dtype=None, **overrides):
        """A new net; `overrides` replace or add constructor arguments."""
        kw = copy.deepcopy(self.kwargs)   # the row's lists must not be shared with a net
        kw.update(overrides)
        if dtype is not None:
            kw["dtype"] = dtype
        return self.cls(device=device, seed=seed, **kw)

    def __call__(self, device=None, seed=None):
        return self.build(device=device, seed=seed)


MODELS = (
    Model("simple_conv", "SimpleConvNet", {"input_dim": IMAGE_SHAPE}, aliases=("simple", "cnn")),
    Model("deep_conv", "DeepConvNet", {"input_dim": IMAGE_SHAPE}, aliases=("deep",),
          lr={"adam": 0.001}),
    Model("mlp", "MultiLayerNetExtend", {"input_size": 784, "hidden_size_list": [100] * 3,
                                         "output_size": N_CLASSES, "use_batchnorm": True},
          bench=False),
    Model("two_layer", "TwoLayerNet", {"input_size": 784, "hidden_size": 50,
                                       "output_size": N_CLASSES}, bench=False),
    # The book's chapter-6 deep MLP: 784-100x5-10, ReLU, He init (6 affine layers).
    Model("deep_mlp", "MultiLayerNet", {"input_size": 784, "hidden_size_list": [100] * 5,
                                        "output_size": N_CLASSES, "activation": "relu"},
          aliases=("mlp",), cli=False),
)

CLI_MODELS = tuple(m.name for m in MODELS if m.cli)
BENCH_MODELS = {m.net: m for m in MODELS if m.bench}


def _check_table():
    names = [m.name for m in MODELS]
    if len(set(names)) != len(names):
        raise ValueError("xpnet.registry: model names repeat: %s" % names)
    if len(BENCH_MODELS) != sum(m.bench for m in MODELS):
        raise ValueError("xpnet.registry: two bench models share a class name")
    unknown = [m.net for m in MODELS if m.net not in nets.NETS]
    if unknown:
        raise ValueError("xpnet.registry: %s not in xpnet.nets.NETS" % ", ".join(unknown))


_check_table()   # a bad row fails on import, not halfway through a command


def cli_model(name):
    """The `Model` of a command-line name (``simple_conv``)."""
    for m in MODELS:
        if m.cli and m.name == name:
            return m
    raise ValueError("unknown model %r; valid: %s" % (name, ", ".join(CLI_MODELS)))


def bench_model(name):
    """The bench `Model` of a class name, row name or alias, in any case."""
    key = str(name).strip().lower()
    for m in BENCH_MODELS.values():
        if key in (m.net.lower(), m.name) or key in m.aliases:
            return m
    aliases = sorted({a for m in BENCH_MODELS.values() for a in (m.net.lower(), m.name)
                      + m.aliases})
    raise ValueError("unknown model %r; valid: %s (or %s)"
                     % (name, ", ".join(BENCH_MODELS), ", ".join(aliases)))


# ---------------------------------------------------------------------------
# Optimizers

OPTIMIZERS = tuple(optimizers.OPTIMIZERS)

# Command-line learning rates where they differ from the class default (book
# chapter 6 values), except Adam: 0.003 takes SimpleConvNet past 96% on the
# embedded sample within 10 epochs (0.001 needs about twice as many).
_LR = {"rmsprop": 0.001, "adam": 0.003}

DEFAULT_LR = {name: _LR.get(name, inspect.signature(cls).parameters["lr"].default)
              for name, cls in optimizers.OPTIMIZERS.items()}


def default_lr(optimizer, model=None):
    """The command line's learning rate for `optimizer` (a name), for `model`
    (a `Model` or a command-line name) if it wants its own."""
    name = str(optimizer).lower()
    if name not in DEFAULT_LR:
        raise ValueError("unknown optimizer %r; valid: %s" % (optimizer, ", ".join(OPTIMIZERS)))
    if isinstance(model, str):
        model = cli_model(model)
    if model is not None and name in model.lr:
        return model.lr[name]
    return DEFAULT_LR[name]
