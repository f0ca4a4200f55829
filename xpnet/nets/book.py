"""The book's ready-made networks, built on `Sequential`.

Weights are drawn as float64 on the host (one seed gives the same net on every
device), then cast to the net's dtype and moved to its device.
"""
import math

from .. import backend
from .. import layers as L
from ..backend import current_device
from ..validate import positive_int as _positive_int
from .params import _dtype_name, init_std
from .sequential import Sequential


def _finish(net, device, dtype):
    # built as float64 host arrays, then cast and moved: one seed, one net, any device
    dt = _dtype_name(dtype)
    for layer in net.layers:
        for d in (layer.params, layer.buffers):
            for k, v in d.items():
                d[k] = v.astype(dt)
    net.config["dtype"] = dt
    net.to(device if device is not None else current_device())
    return net


def _rng(seed):
    # weights are drawn on the host so a seed gives the same net on every device
    return backend.new_host_rng(seed) if seed is not None else backend.host_rng()


def _weights(rng, shape, std):
    return rng.standard_normal(shape) * std


def _zeros(n):
    return backend.host_zeros(n)


def _activation(name):
    acts = {"relu": L.Relu, "sigmoid": L.Sigmoid, "tanh": L.Tanh}
    try:
        return acts[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError("activation must be one of %s, got %r" % (", ".join(acts), name)) from None


class MultiLayerNetExtend(Sequential):
    """Fully connected net: (Affine [BatchNorm] act [Dropout]) x len(hidden_size_list),
    Affine, SoftmaxWithLoss. The book's ``dropout_ration`` spelling is accepted."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, l1_lambda=0, dtype="float32",
                 device=None, seed=None, dropout_ratio=None):
        if dropout_ratio is not None:
            dropout_ration = dropout_ratio
        input_size = _positive_int(input_size, "input_size")
        output_size = _positive_int(output_size, "output_size")
        hidden_size_list = [_positive_int(h, "hidden_size_list entry") for h in hidden_size_list]
        act = _activation(activation)
        self.config = dict(type=type(self).__name__, input_size=input_size,
                           hidden_size_list=hidden_size_list, output_size=output_size,
                           activation=activation, weight_init_std=weight_init_std,
                           weight_decay_lambda=weight_decay_lambda, use_dropout=use_dropout,
                           dropout_ratio=dropout_ration, use_batchnorm=use_batchnorm,
                           l1_lambda=l1_lambda)
        rng = _rng(seed)
        sizes = [input_size] + hidden_size_list + [output_size]
        layers = []
        for i in range(1, len(sizes)):
            n_in, n_out = sizes[i - 1], sizes[i]
            std = init_std(weight_init_std, n_in, n_out)
            layers.append(L.Affine(_weights(rng, (n_in, n_out), std), _zeros(n_out)))
            if i == len(sizes) - 1:
                break
            if use_batchnorm:
                layers.append(L.BatchNormalization(_zeros(n_out) + 1, _zeros(n_out)))
            layers.append(act())
            if use_dropout:
                layers.append(L.Dropout(dropout_ration))
        super().__init__(layers, L.SoftmaxWithLoss(), weight_decay_lambda, l1_lambda)
        _finish(self, device, dtype)


class MultiLayerNet(MultiLayerNetExtend):
    """The book's plain fully connected net (no BatchNorm, no Dropout)."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, l1_lambda=0, dtype="float32",
                 device=None, seed=None):
        super().__init__(input_size, hidden_size_list, output_size, activation, weight_init_std,
                         weight_decay_lambda, l1_lambda=l1_lambda, dtype=dtype, device=device,
                         seed=seed)
        self.config = {k: v for k, v in self.config.items()
                       if k not in ("use_dropout", "dropout_ratio", "use_batchnorm")}
        self.config["type"] = type(self).__name__
        self.config["dtype"] = _dtype_name(dtype)


class TwoLayerNet(Sequential):
    """Chapter 5's net: Affine - Relu - Affine - SoftmaxWithLoss."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 dtype="float32", device=None, seed=None):
        input_size = _positive_int(input_size, "input_size")
        hidden_size = _positive_int(hidden_size, "hidden_size")
        output_size = _positive_int(output_size, "output_size")
        self.config = dict(type="TwoLayerNet", input_size=input_size, hidden_size=hidden_size,
                           output_size=output_size, weight_init_std=weight_init_std)
        rng = _rng(seed)
        s1 = init_std(weight_init_std, input_size)
        s2 = init_std(weight_init_std, hidden_size)
        layers = [L.Affine(_weights(rng, (input_size, hidden_size), s1), _zeros(hidden_size)),
                  L.Relu(),
                  L.Affine(_weights(rng, (hidden_size, output_size), s2), _zeros(output_size))]
        super().__init__(layers, L.SoftmaxWithLoss())
        _finish(self, device, dtype)


def _conv_param(p, name, default):
    q = dict(default)
    if p is not None:
        unknown = set(p) - set(default)
        if unknown:
            raise ValueError("%s: unknown keys %s; valid: %s"
                             % (name, sorted(unknown), sorted(default)))
        q.update(p)
    return q


def _input_dim(input_dim):
    if len(input_dim) != 3:
        raise ValueError("input_dim must be (C, H, W), got %r" % (input_dim,))
    return tuple(_positive_int(v, "input_dim entry") for v in input_dim)


class SimpleConvNet(Sequential):
    """Chapter 7's net: Conv - Relu - Pool(2x2) - Affine - Relu - Affine - SoftmaxWithLoss."""

    def __init__(self, input_dim=(1, 28, 28), conv_param=None, hidden_size=100, output_size=10,
                 weight_init_std=0.01, weight_decay_lambda=0, dtype="float32", device=None,
                 seed=None):
        input_dim = _input_dim(input_dim)
        cp = _conv_param(conv_param, "conv_param",
                         {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1})
        hidden_size = _positive_int(hidden_size, "hidden_size")
        output_size = _positive_int(output_size, "output_size")
        self.config = dict(type="SimpleConvNet", input_dim=list(input_dim), conv_param=cp,
                           hidden_size=hidden_size, output_size=output_size,
                           weight_init_std=weight_init_std,
                           weight_decay_lambda=weight_decay_lambda)
        rng = _rng(seed)
        C, H, W = input_dim
        fn, fs = _positive_int(cp["filter_num"], "filter_num"), _positive_int(cp["filter_size"],
                                                                              "filter_size")
        conv = L.Convolution(_weights(rng, (fn, C, fs, fs), init_std(weight_init_std, C * fs * fs)),
                             _zeros(fn), cp["stride"], cp["pad"])
        shape = conv.output_shape(input_dim)
        pool = L.Pooling(2, 2, stride=2)
        shape = pool.output_shape(shape)
        flat = shape[0] * shape[1] * shape[2]
        layers = [conv, L.Relu(), pool,
                  L.Affine(_weights(rng, (flat, hidden_size), init_std(weight_init_std, flat)),
                           _zeros(hidden_size)),
                  L.Relu(),
                  L.Affine(_weights(rng, (hidden_size, output_size),
                                    init_std(weight_init_std, hidden_size)), _zeros(output_size))]
        super().__init__(layers, L.SoftmaxWithLoss(), weight_decay_lambda)
        _finish(self, device, dtype)


class DeepConvNet(Sequential):
    """Chapter 8's net (He init; about 99.4% on MNIST in the book):
    conv-relu-conv-relu-pool-conv-relu-conv-relu-pool-conv-relu-conv-relu-pool-
    affine-relu-dropout-affine-dropout-softmax."""

    _DEFAULTS = (
        {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
        {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    )

    def __init__(self, input_dim=(1, 28, 28), conv_param_1=None, conv_param_2=None,
                 conv_param_3=None, conv_param_4=None, conv_param_5=None, conv_param_6=None,
                 hidden_size=50, output_size=10, dropout_ratio=0.5, weight_decay_lambda=0,
                 dtype="float32", device=None, seed=None):
        input_dim = _input_dim(input_dim)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                 conv_param_6)
        cps = [_conv_param(p, "conv_param_%d" % (i + 1), d)
               for i, (p, d) in enumerate(zip(given, self._DEFAULTS))]
        hidden_size = _positive_int(hidden_size, "hidden_size")
        output_size = _positive_int(output_size, "output_size")
        self.config = dict(type="DeepConvNet", input_dim=list(input_dim),
                           **{"conv_param_%d" % (i + 1): c for i, c in enumerate(cps)},
                           hidden_size=hidden_size, output_size=output_size,
                           dropout_ratio=dropout_ratio, weight_decay_lambda=weight_decay_lambda)
        rng = _rng(seed)
        layers = []
        shape = input_dim
        for i, cp in enumerate(cps):
            C = shape[0]
            fn, fs = cp["filter_num"], cp["filter_size"]
            conv = L.Convolution(_weights(rng, (fn, C, fs, fs), math.sqrt(2.0 / (C * fs * fs))),
                                 _zeros(fn), cp["stride"], cp["pad"])
            shape = conv.output_shape(shape)
            layers += [conv, L.Relu()]
            if i % 2 == 1:
                pool = L.Pooling(2, 2, stride=2)
                shape = pool.output_shape(shape)
                layers.append(pool)
        flat = shape[0] * shape[1] * shape[2]
        layers += [L.Affine(_weights(rng, (flat, hidden_size), math.sqrt(2.0 / flat)),
                            _zeros(hidden_size)),
                   L.Relu(), L.Dropout(dropout_ratio),
                   L.Affine(_weights(rng, (hidden_size, output_size),
                                     math.sqrt(2.0 / hidden_size)), _zeros(output_size)),
                   L.Dropout(dropout_ratio)]
        super().__init__(layers, L.SoftmaxWithLoss(), weight_decay_lambda)
        _finish(self, device, dtype)


NETS = {"TwoLayerNet": TwoLayerNet, "MultiLayerNet": MultiLayerNet,
        "MultiLayerNetExtend": MultiLayerNetExtend, "SimpleConvNet": SimpleConvNet,
        "DeepConvNet": DeepConvNet}
