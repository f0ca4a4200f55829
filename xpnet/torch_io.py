"""PyTorch weights in and out: `to_torch` builds a ``torch.nn.Sequential`` with an
xpnet net's layers and weights, `from_torch` copies such a module's weights back.

This is the one translation between xpnet layers and ``torch.nn`` modules; the
bench's twin (`xpnet.bench.torch_twin`) uses it. It reads a net's public layers
(`net.layers`, each layer's `params`, `buffers` and settings) through host copies
(`asnumpy`), so it works for a net on any device. It must never import PyTorch at
module import (PyTorch is optional and slow to import), and `to_torch` must never
change the xpnet net; `from_torch` changes it only after every shape has been checked.
"""
import math

from . import layers as L
from .backend import asnumpy

__all__ = ["import_torch", "to_torch", "from_torch", "count_params"]


def import_torch():
    """``(torch, '')``, or ``(None, reason)`` when PyTorch can't be imported."""
    try:
        import torch
    except Exception as e:   # ImportError, or a broken install (missing shared library)
        return None, "%s: %s" % (type(e).__name__, e)
    return torch, ""


def _need_torch(torch, who):
    if torch is not None:
        return torch
    torch, why = import_torch()
    if torch is None:
        raise ImportError("%s needs PyTorch, which can't be imported (%s); pip install torch"
                          % (who, why))
    return torch


def count_params(model):
    """Number of trained scalars in an xpnet net or a torch module."""
    if hasattr(model, "parameters") and callable(model.parameters):
        return int(sum(p.numel() for p in model.parameters()))
    return int(sum(math.prod(v.shape) for v in model.params.values() if v is not None))


def _dtype_name(dtype):
    return str(dtype).rsplit(".", 1)[-1]   # 'float32' from numpy's or torch's dtype


def _starts_spatial(net):
    """Whether the net's input is (N, C, H, W): its first shape-setting layer is a
    convolution or pooling (a BatchNorm before it must then be BatchNorm2d)."""
    for layer in net.layers:
        if isinstance(layer, (L.Convolution, L.Pooling)):
            return True
        if isinstance(layer, (L.Affine, L.Flatten)):
            return False
    return "input_dim" in getattr(net, "config", {})


def _conv(nn, layer, spatial):
    FN, C, FH, FW = layer.params["W"].shape
    return nn.Conv2d(C, FN, (FH, FW), stride=tuple(layer.stride), padding=tuple(layer.pad),
                     bias=layer.params["b"] is not None)


def _pool(nn, layer, spatial):
    k, s, pad = (layer.pool_h, layer.pool_w), tuple(layer.stride), tuple(layer.pad)
    if layer.mode == "max":
        return nn.MaxPool2d(k, stride=s, padding=pad)
    # xpnet's zero padding counts in the divisor
    return nn.AvgPool2d(k, stride=s, padding=pad, count_include_pad=True)


def _linear(nn, layer, spatial):
    n_in, n_out = layer.params["W"].shape
    return nn.Linear(n_in, n_out, bias=layer.params["b"] is not None)


def _batchnorm(nn, layer, spatial):
    # xpnet keeps `momentum` of the old value; PyTorch weighs the new one.
    cls = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    return cls(layer.params["gamma"].shape[0], eps=layer.eps, momentum=1.0 - layer.momentum)


def _simple(name):
    return lambda nn, layer, spatial: getattr(nn, name)()


# Looked up through the class hierarchy (`layers.for_class`): a subclass converts like
# its parent unless it defines its own ``torch_module``.
_MODULES = {L.Convolution: _conv, L.Pooling: _pool, L.Affine: _linear,
            L.BatchNormalization: _batchnorm,
            L.Dropout: lambda nn, layer, spatial: nn.Dropout(layer.dropout_ratio),
            L.LeakyRelu: lambda nn, layer, spatial: nn.LeakyReLU(layer.alpha),
            L.Relu: _simple("ReLU"), L.Sigmoid: _simple("Sigmoid"), L.Tanh: _simple("Tanh"),
            L.Flatten: _simple("Flatten")}


def _module_for(nn, layer, spatial):
    """The empty ``torch.nn`` module for one xpnet layer (weights are copied later): the
    layer's own ``torch_module`` hook, else the entry for its nearest class in `_MODULES`;
    None for a layer without an equivalent."""
    hook = getattr(type(layer), "torch_module", None)
    if hook is not None:
        return hook(layer, nn, spatial)
    make = L.for_class(_MODULES, layer)
    return None if make is None else make(nn, layer, spatial)


def _torch_arrays(layer, m):
    """``[(xpnet dict, key, torch tensor, transpose)]`` pairing a layer's arrays with
    the module's (nn.Linear keeps W as (out, in), xpnet as (in, out))."""
    p = layer.params
    if isinstance(layer, L.BatchNormalization):
        return [(layer.params, "gamma", m.weight, False), (layer.params, "beta", m.bias, False),
                (layer.buffers, "running_mean", m.running_mean, False),
                (layer.buffers, "running_var", m.running_var, False)]
    out = [(p, "W", m.weight, isinstance(layer, L.Affine))]
    if p.get("b") is not None:
        out.append((p, "b", m.bias, False))
    return out


def to_torch(net, device="cpu", torch=None):
    """The same architecture as xpnet `net` as a ``torch.nn.Sequential``, with
    xpnet's current weights copied in (same layer shapes, padding, strides, dropout
    ratios, BatchNorm settings and running statistics), on `device` in the net's
    dtype. ImportError without PyTorch; ValueError naming a layer without an
    equivalent. The softmax/loss layer is left out: the copy returns scores, like
    ``net.predict``. Call ``.eval()`` on it for inference (dropout, BatchNorm)."""
    torch = _need_torch(torch, "to_torch")
    nn = torch.nn
    dtype = getattr(torch, _dtype_name(net.dtype))
    mods, flat, spatial = [], False, _starts_spatial(net)
    with torch.no_grad():
        for i, layer in enumerate(net.layers):
            m = _module_for(nn, layer, spatial)
            if m is None:
                raise ValueError("to_torch: layer %s of %s has no PyTorch equivalent here "
                                 "(net.layers[%d])" % (layer.name, type(net).__name__, i))
            if isinstance(layer, L.Affine) and not flat:
                mods.append(nn.Flatten())   # xpnet's Affine flattens N-D input itself
            if isinstance(layer, (L.Affine, L.Flatten)):
                flat, spatial = True, False
            m = m.to(dtype=dtype)
            if layer.params:
                for d, key, t, transpose in _torch_arrays(layer, m):
                    src = torch.from_numpy(asnumpy(d[key]).copy())
                    t.copy_(src.T if transpose else src)
            mods.append(m)
    model = nn.Sequential(*mods).to(device=device)
    n_x, n_t = count_params(net), count_params(model)
    if n_x != n_t:
        raise RuntimeError("to_torch: %s has %d parameters but the PyTorch copy has %d"
                           % (type(net).__name__, n_x, n_t))
    return model


_TORCH_KIND = {L.Affine: "Linear", L.Convolution: "Conv2d",
               L.BatchNormalization: "BatchNorm1d/BatchNorm2d"}


def _matches(layer, m, nn):
    if isinstance(layer, L.Affine):
        return isinstance(m, nn.Linear)
    if isinstance(layer, L.Convolution):
        return isinstance(m, nn.Conv2d)
    return isinstance(m, _batchnorms(nn))


def _batchnorms(nn):
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def from_torch(module, net, torch=None):
    """Copy the weights of `module` (a ``torch.nn.Module`` laid out like
    ``to_torch(net)``: its Linear, Conv2d and BatchNorm modules, in order, match the
    net's Affine, Convolution and BatchNormalization layers) into xpnet `net`, on the
    net's device and in its dtype; returns `net`.

    Everything is checked before anything is written: the number and kinds of weight
    layers, every shape, bias presence, and each convolution's stride and padding. A
    mismatch is a ValueError naming the xpnet layer and the torch module."""
    torch = _need_torch(torch, "from_torch")
    nn = torch.nn
    names = {}                                    # (id(layer), key) -> the net's name
    for kind in (net._names, net._buffer_names):
        for name, (layer, key) in kind.items():
            names[(id(layer), key)] = name
    for i, layer in enumerate(net.layers):   # weights no module here can take
        if (layer.params or layer.buffers) and L.for_class(_TORCH_KIND, layer) is None:
            raise ValueError("from_torch: layer %s of %s has no PyTorch equivalent here "
                             "(net.layers[%d])" % (layer.name, type(net).__name__, i))
    ours = [(i, l) for i, l in enumerate(net.layers) if L.for_class(_TORCH_KIND, l)]
    theirs = [(n, m) for n, m in module.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d) + _batchnorms(nn))]
    if len(ours) != len(theirs):
        raise ValueError("from_torch: %s has %d weight layers (%s) but the module has %d (%s)"
                         % (type(net).__name__, len(ours), ", ".join(l.name for _, l in ours),
                            len(theirs), ", ".join(type(m).__name__ for _, m in theirs)))
    arrays = {}
    for (i, layer), (mname, m) in zip(ours, theirs):
        where = "from_torch: layer %d (%s) of %s and module %r (%s)" % (
            i, layer.name, type(net).__name__, mname, type(m).__name__)
        if not _matches(layer, m, nn):
            raise ValueError("%s: expected a %s" % (where, L.for_class(_TORCH_KIND, layer)))
        if isinstance(layer, L.Convolution) and (tuple(m.stride) != tuple(layer.stride) or
                                                 tuple(m.padding) != tuple(layer.pad)):
            raise ValueError("%s: stride/padding %s/%s differ from xpnet's %s/%s"
                             % (where, tuple(m.stride), m.padding, layer.stride, layer.pad))
        if not isinstance(layer, L.BatchNormalization) and \
                (m.bias is None) != (layer.params.get("b") is None):
            raise ValueError("%s: one has a bias and the other has none" % where)
        for d, key, t, transpose in _torch_arrays(layer, m):
            if t is None:
                raise ValueError("%s: the module has no %s (affine=False or "
                                 "track_running_stats=False?)" % (where, key))
            a = t.detach().to("cpu").numpy()
            a = a.T if transpose else a
            want = tuple(d[key].shape)
            if tuple(a.shape) != want:
                raise ValueError("%s: %s (xpnet's %s) has shape %s in torch%s, xpnet expects %s"
                                 % (where, key, names[(id(layer), key)], tuple(t.shape),
                                    ", %s transposed" % (tuple(a.shape),) if transpose else "",
                                    want))
            arrays[names[(id(layer), key)]] = a
    # not strict: a layer without a bias lists "b" as None, which nothing can fill
    net.load_state_dict(arrays, strict=False)
    return net
