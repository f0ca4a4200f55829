"""The PyTorch twin of an xpnet net: a ``torch.nn.Sequential`` with the same layers
and a copy of the same weights, for the bench's ``--vs torch`` rows (and for any
export that goes through PyTorch).

`to_torch` reads a net's public layers (`net.layers`, each layer's `params`,
`buffers` and settings) and host copies of its arrays (`asnumpy`). It must never
change the xpnet net, and never import PyTorch at module import: PyTorch is
optional and slow to import.
"""
import math

from .. import layers as L
from ..backend import asnumpy

__all__ = ["import_torch", "to_torch", "torch_model", "count_params"]


def import_torch():
    """``(torch, '')``, or ``(None, reason)`` when PyTorch can't be imported."""
    try:
        import torch
    except Exception as e:   # ImportError, or a broken install (missing shared library)
        return None, "%s: %s" % (type(e).__name__, e)
    return torch, ""


def count_params(model):
    """Number of trained scalars in an xpnet net or a torch module."""
    if hasattr(model, "parameters") and callable(model.parameters):
        return int(sum(p.numel() for p in model.parameters()))
    return int(sum(math.prod(v.shape) for v in model.params.values() if v is not None))


def _dtype_name(dtype):
    return str(dtype).rsplit(".", 1)[-1]   # 'float32' from numpy's or torch's dtype


def to_torch(net, device="cpu", torch=None):
    """The same architecture as xpnet `net` as a ``torch.nn.Sequential``, with
    xpnet's current weights copied in (same layer shapes, padding, strides, dropout
    ratios, BatchNorm settings and running statistics), on `device` in the net's
    dtype. ImportError without PyTorch; ValueError for a layer without an
    equivalent. The softmax/loss layer is left out: the twin returns scores."""
    if torch is None:
        torch, why = import_torch()
        if torch is None:
            raise ImportError("to_torch needs PyTorch, which can't be imported (%s)" % why)
    nn = torch.nn

    def copy(dst, a, transpose=False):
        src = torch.tensor(asnumpy(a))
        dst.copy_(src.T if transpose else src)

    mods, flattened, spatial = [], False, True
    with torch.no_grad():
        for layer in net.layers:
            p = layer.params
            if isinstance(layer, L.Convolution):
                FN, C, FH, FW = p["W"].shape
                m = nn.Conv2d(C, FN, (FH, FW), stride=tuple(layer.stride),
                              padding=tuple(layer.pad), bias=p["b"] is not None)
                copy(m.weight, p["W"])
                if p["b"] is not None:
                    copy(m.bias, p["b"])
                spatial = True
            elif isinstance(layer, L.Pooling):
                k = (layer.pool_h, layer.pool_w)
                if layer.mode == "max":
                    m = nn.MaxPool2d(k, stride=tuple(layer.stride), padding=tuple(layer.pad))
                else:   # xpnet's zero padding counts in the divisor
                    m = nn.AvgPool2d(k, stride=tuple(layer.stride), padding=tuple(layer.pad),
                                     count_include_pad=True)
            elif isinstance(layer, L.Affine):
                if not flattened:   # xpnet's Affine flattens N-D input itself
                    mods.append(nn.Flatten())
                    flattened = True
                n_in, n_out = p["W"].shape
                m = nn.Linear(n_in, n_out, bias=p["b"] is not None)
                copy(m.weight, p["W"], transpose=True)
                if p["b"] is not None:
                    copy(m.bias, p["b"])
                spatial = False
            elif isinstance(layer, L.Flatten):
                m, flattened, spatial = nn.Flatten(), True, False
            elif isinstance(layer, L.Relu):
                m = nn.ReLU()
            elif isinstance(layer, L.Sigmoid):
                m = nn.Sigmoid()
            elif isinstance(layer, L.Tanh):
                m = nn.Tanh()
            elif isinstance(layer, L.Dropout):
                m = nn.Dropout(layer.dropout_ratio)
            elif isinstance(layer, L.BatchNormalization):
                D = p["gamma"].shape[0]
                cls = nn.BatchNorm2d if spatial and not flattened else nn.BatchNorm1d
                # xpnet keeps `momentum` of the old value; PyTorch weighs the new one.
                m = cls(D, eps=layer.eps, momentum=1.0 - layer.momentum)
                copy(m.weight, p["gamma"])
                copy(m.bias, p["beta"])
                copy(m.running_mean, layer.buffers["running_mean"])
                copy(m.running_var, layer.buffers["running_var"])
            else:
                raise ValueError("to_torch: layer %s of %s has no PyTorch equivalent here"
                                 % (layer.name, type(net).__name__))
            mods.append(m)
    model = nn.Sequential(*mods).to(device=device, dtype=getattr(torch, _dtype_name(net.dtype)))
    n_x, n_t = count_params(net), count_params(model)
    if n_x != n_t:
        raise RuntimeError("to_torch: %s has %d parameters but the PyTorch copy has %d"
                           % (type(net).__name__, n_x, n_t))
    return model


torch_model = to_torch   # the name the bench has always exported
