"""Layers with forward/backward, as in the book's ``common/layers.py``.

Every layer keeps its parameters in ``self.params`` and the matching gradients
(after `backward`) in ``self.grads``; the book's attribute names (``W``, ``b``,
``dW``, ``db``, ``gamma``, ``dgamma`` ...) read and write the same arrays.

A layer takes its array namespace from its input and uses standard calls only;
heavy work (ReLU, Affine, convolution, pooling) goes to the kernel provider of
its input (`xpnet.backend.provider`), so a layer never imports an array library
and never asks which one it is running on. It keeps the input's dtype and never
writes into its input or into the incoming gradient.

One module a kind: `base` (the `Layer` class), `activations`, `affine`, `loss`,
`convolution` (and pooling), `regularization` (Dropout, BatchNormalization).
"""
from .base import DtypeWarning, Layer, for_class
from .activations import Flatten, LeakyRelu, Relu, Sigmoid, Tanh
from .affine import Affine
from .loss import IdentityWithLoss, SoftmaxWithLoss
from .convolution import AvgPooling, Convolution, Pooling
from .regularization import BatchNormalization, Dropout, running_stats

__all__ = [
    "DtypeWarning", "Layer", "Affine", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "SoftmaxWithLoss",
    "IdentityWithLoss", "Convolution", "Pooling", "AvgPooling", "Dropout",
    "BatchNormalization", "Flatten", "running_stats", "for_class",
]


def __getattr__(name):      # the synchronized BatchNorm, loaded when asked for by name
    if name == "SyncBatchNormalization":
        from ..sync_batchnorm import SyncBatchNormalization
        return SyncBatchNormalization
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
