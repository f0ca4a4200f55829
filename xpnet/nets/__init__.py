"""Networks: a `Sequential` net and the book's ready-made architectures.

Layers own their parameters; ``net.params`` is a live view named as in the
book (``W1``, ``b1``, ``gamma1`` ...), so ``optimizer.update(net.params,
grads)`` and ``net.params['W1'][...] = ...`` act on the layers' arrays.

`sequential` holds `Sequential`, `book` the book's nets, `build` the rebuilding
of a ready net from its config (`build_net`, `load_net`), `params` the pieces
they share.
"""
from .params import init_std
from .sequential import Sequential
from .book import (NETS, DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet,
                   TwoLayerNet)
from .build import (MAX_BUILD_BYTES, MAX_PARAMETERS, build_net, config_for_shapes, load_net,
                    state_shapes)

__all__ = ["Sequential", "TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet",
           "DeepConvNet", "init_std", "NETS", "build_net", "load_net", "config_for_shapes",
           "state_shapes", "MAX_PARAMETERS", "MAX_BUILD_BYTES"]
