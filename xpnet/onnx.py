"""ONNX export: an xpnet net as a standard ONNX model, to serve with onnxruntime
(on a server, in a browser, on a phone) or any other ONNX runtime.

`to_onnx` translates ``net.layers`` one by one into standard ONNX operators (table
in docs/export.md), computing every intermediate shape on the way so that a net
that can't run on the declared input fails here, naming the layer. The graph is
built with ``onnx.helper`` and checked with ``onnx.checker``; `export` writes it
atomically. The batch dimension is dynamic; metadata records the xpnet version, the
architecture and what the input must look like.

This module must never change the net (it reads host copies of its arrays, so a net
on any device exports), never import ``onnx`` at xpnet's import (it is optional:
``pip install -e ".[onnx]"``), never write protobuf by hand, and never guess: a layer
without an exact ONNX translation is refused by name.
"""
import json
import math
import os

import numpy as np

from . import layers as L
from .backend import asnumpy, dtype_name
from .serialization import atomic_write_bytes
from .version import __version__

__all__ = ["export", "to_onnx", "write_model", "supported_opsets", "DEFAULT_OPSET", "MIN_OPSET",
           "INPUT_NAME"]

#: Supported by onnxruntime 1.13 and later (2022) and by most other runtimes.
DEFAULT_OPSET = 17
#: Softmax/Squeeze/Unsqueeze took their current form in opset 13.
MIN_OPSET = 13
INPUT_NAME = "input"
_INSTALL = 'pip install -e ".[onnx]" (or pip install onnx onnxruntime)'


def _import_onnx():
    # `import onnx` is absolute: it finds the onnx package, never this module
    try:
        import onnx
        from onnx import helper, numpy_helper
    except Exception as e:   # ImportError, or a broken install (protobuf mismatch ...)
        raise ImportError("ONNX export needs the onnx package, which can't be imported "
                          "(%s: %s); %s" % (type(e).__name__, e, _INSTALL)) from None
    return onnx, helper, numpy_helper


def _sample_shape(net, input_shape):
    """One sample's shape (no batch axis): `input_shape`, else the net's config, else
    the first Affine's input size."""
    if input_shape is not None:
        shape = tuple(input_shape)
        if shape and shape[0] is None:       # (None, C, H, W): the batch axis given too
            shape = shape[1:]
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                for d in shape):
            raise ValueError("input_shape must be one sample's shape, positive ints such as "
                             "(1, 28, 28) or (784,), got %r" % (input_shape,))
        return shape
    cfg = getattr(net, "config", None) or {}
    if cfg.get("input_dim"):
        return tuple(int(d) for d in cfg["input_dim"])
    if cfg.get("input_size"):
        return (int(cfg["input_size"]),)
    for layer in net.layers:
        if isinstance(layer, L.Affine):
            return (int(layer.params["W"].shape[0]),)
        if isinstance(layer, (L.Convolution, L.Pooling, L.Flatten)):
            break
    raise ValueError("export: can't tell the input shape of this %s; pass input_shape=(C, H, W) "
                     "(one sample, without the batch axis)" % type(net).__name__)


class _Graph:
    """The nodes and initializers being built, the current tensor and its sample shape."""

    def __init__(self, helper, numpy_helper, net, shape):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.x, self.shape = INPUT_NAME, tuple(shape)
        self.net_name = type(net).__name__
        self._names = {}                     # (id(layer), key) -> W1, b1, running_mean2 ...
        for table in (net._names, net._buffer_names):
            for name, (layer, key) in table.items():
                self._names[(id(layer), key)] = name
        self._count = 0

    def fail(self, layer, i, msg):
        raise ValueError("export: layer %s of %s (net.layers[%d]): %s"
                         % (layer.name, self.net_name, i, msg))

    def weight(self, layer, key):
        """An initializer holding the layer's `key` parameter or buffer, named as in
        ``net.params`` / ``net.buffers``."""
        name = self._names[(id(layer), key)]
        a = asnumpy(layer.params[key] if key in layer.params else layer.buffers[key])
        self.inits.append(self.numpy_helper.from_array(np.array(a, copy=True), name))
        return name

    def constant(self, name, array):
        if name not in [t.name for t in self.inits]:
            self.inits.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, layer_tag, inputs=(), **attrs):
        """Append one node reading the current tensor (and `inputs`); it becomes current."""
        self._count += 1
        out = "%s_%d" % (op_type.lower(), self._count)
        self.nodes.append(self.helper.make_node(op_type, [self.x] + list(inputs), [out],
                                                name="%s/%s" % (layer_tag, op_type), **attrs))
        self.x = out


def _conv(g, layer, i, tag):
    W, b = layer.params["W"], layer.params["b"]
    if len(g.shape) != 3 or g.shape[0] != W.shape[1]:
        g.fail(layer, i, "expects (C=%d, H, W) samples, gets %s" % (W.shape[1], g.shape))
    out = layer.output_shape(g.shape)
    ins = [g.weight(layer, "W")] + ([g.weight(layer, "b")] if b is not None else [])
    ph, pw = layer.pad
    g.op("Conv", tag, ins, kernel_shape=list(W.shape[2:]), strides=list(layer.stride),
         pads=[ph, pw, ph, pw], dilations=[1, 1], group=1)
    g.shape = out


def _pool(g, layer, i, tag):
    if len(g.shape) != 3:
        g.fail(layer, i, "expects (C, H, W) samples, gets %s" % (g.shape,))
    out = layer.output_shape(g.shape)
    ph, pw = layer.pad
    window = dict(kernel_shape=[layer.pool_h, layer.pool_w], strides=list(layer.stride),
                  pads=[ph, pw, ph, pw])
    if layer.mode == "max":   # ONNX MaxPool ignores padding: xpnet's -inf padding
        g.op("MaxPool", tag, **window)
    else:                     # xpnet's zero padding counts in the divisor
        g.op("AveragePool", tag, count_include_pad=1, **window)
    g.shape = out


def _flatten(g, layer, i, tag):
    if len(g.shape) > 1:
        g.op("Flatten", tag, axis=1)
        g.shape = (math.prod(g.shape),)


def _affine(g, layer, i, tag):
    W, b = layer.params["W"], layer.params["b"]
    _flatten(g, layer, i, tag)          # xpnet's Affine flattens N-D input itself
    if g.shape[0] != W.shape[0]:
        g.fail(layer, i, "W expects %d features per sample, gets %d" % (W.shape[0], g.shape[0]))
    ins = [g.weight(layer, "W")] + ([g.weight(layer, "b")] if b is not None else [])
    g.op("Gemm", tag, ins)
    g.shape = (W.shape[1],)


def _batchnorm(g, layer, i, tag):
    D = layer.params["gamma"].shape[0]
    if len(g.shape) not in (1, 3) or g.shape[0] != D:
        g.fail(layer, i, "expects (%d,) or (%d, H, W) samples, gets %s" % (D, D, g.shape))
    ins = [g.weight(layer, k) for k in ("gamma", "beta", "running_mean", "running_var")]
    flat = len(g.shape) == 1
    if flat:   # ONNX BatchNormalization wants (N, C, ...): (N, D) -> (N, D, 1) and back
        axes = g.constant("axes_2", np.asarray([2], dtype=np.int64))
        g.op("Unsqueeze", tag, [axes])
    g.op("BatchNormalization", tag, ins, epsilon=layer.eps)
    if flat:
        g.op("Squeeze", tag, [axes])


def _simple(op_type):
    def emit(g, layer, i, tag):
        g.op(op_type, tag)
    return emit


def _leaky_relu(g, layer, i, tag):
    g.op("LeakyRelu", tag, alpha=layer.alpha)


def _dropout(g, layer, i, tag):
    pass   # inference: inverted dropout is the identity


# Looked up through the class hierarchy (`layers.for_class`): a subclass exports like its
# parent unless it defines its own ``onnx_nodes``.
_TRANSLATE = {L.Convolution: _conv, L.Pooling: _pool, L.Affine: _affine,
              L.Flatten: _flatten, L.BatchNormalization: _batchnorm, L.Dropout: _dropout,
              L.Relu: _simple("Relu"), L.Sigmoid: _simple("Sigmoid"), L.Tanh: _simple("Tanh"),
              L.LeakyRelu: _leaky_relu}


def _translation(layer):
    """``emit(graph, layer, index, tag)`` for `layer`: its own ``onnx_nodes`` hook, else
    the entry for its nearest class in `_TRANSLATE`; None when it has neither."""
    hook = getattr(type(layer), "onnx_nodes", None)
    if hook is not None:
        return lambda g, layer, i, tag: hook(layer, g, i, tag)
    return L.for_class(_TRANSLATE, layer)


def supported_opsets():
    """``range`` of the opsets `to_onnx` can write with the installed onnx package."""
    onnx = _import_onnx()[0]
    return range(MIN_OPSET, onnx.defs.onnx_opset_version() + 1)


def _check_opset(opset):
    ok = supported_opsets()
    if opset is None:
        return min(DEFAULT_OPSET, ok[-1])
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in ok:
        raise ValueError("opset must be an int from %d to %d (the newest the installed onnx "
                         "knows), got %r" % (ok[0], ok[-1], opset))
    return opset


def _architecture(net):
    cfg = dict(getattr(net, "config", None) or {})
    if "type" not in cfg:    # a hand-built Sequential has no config: list its layers
        cfg = {"type": type(net).__name__, "layers": [repr(l) for l in net.layers]}
    cfg.setdefault("dtype", dtype_name(net.dtype))
    return cfg


def to_onnx(net, input_shape=None, opset=None, softmax=False, input_normalization=None,
            metadata=None):
    """The ONNX ``ModelProto`` of `net` in inference mode (dropout off, BatchNorm on
    its running statistics), checked by ``onnx.checker``; the net is not changed.

    input_shape: one sample's shape, e.g. ``(1, 28, 28)`` (default: from the net's
      config); the batch axis is dynamic ("batch").
    opset: ONNX opset, `MIN_OPSET` .. the newest the installed onnx knows
      (default `DEFAULT_OPSET`).
    softmax: end with Softmax over axis 1 (output "probabilities") instead of the
      scores ``net.predict`` returns (output "logits").
    input_normalization: how raw data becomes the input (any JSON-able value),
      recorded in the metadata.
    metadata: more ``{key: value}`` metadata (values not str are stored as JSON).

    ImportError (saying what to install) without onnx; TypeError naming a layer
    without an ONNX equivalent; ValueError for a shape the net can't take."""
    onnx, helper, numpy_helper = _import_onnx()
    opset = _check_opset(opset)
    for i, layer in enumerate(net.layers):
        if _translation(layer) is None:
            raise TypeError("export: layer %s of %s (net.layers[%d]) has no ONNX equivalent; "
                            "exportable layers: %s" % (layer.name, type(net).__name__, i,
                                                        ", ".join(sorted(
                                                            t.__name__ for t in _TRANSLATE))
                                                        + " (and layers with onnx_nodes)"))
    shape = _sample_shape(net, input_shape)
    g = _Graph(helper, numpy_helper, net, shape)
    for i, layer in enumerate(net.layers):
        _translation(layer)(g, layer, i, "%d_%s" % (i, layer.name))
    out_name = "probabilities" if softmax else "logits"
    if softmax:
        g.op("Softmax", "softmax", axis=1)
    # the last node writes the output name (a net of dropouts only needs an Identity)
    if g.nodes:
        g.nodes[-1].output[0] = out_name
    else:
        g.nodes.append(helper.make_node("Identity", [g.x], [out_name], name="identity"))

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype_name(net.dtype)))
    graph = helper.make_graph(
        g.nodes, type(net).__name__,
        [helper.make_tensor_value_info(INPUT_NAME, elem, ["batch"] + list(shape))],
        [helper.make_tensor_value_info(out_name, elem, ["batch"] + list(g.shape))],
        initializer=g.inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="xpnet",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets),
                              doc_string="%s exported by xpnet %s" % (type(net).__name__,
                                                                      __version__))
    props = {
        "xpnet_version": __version__,
        "xpnet_architecture": json.dumps(_architecture(net), sort_keys=True),
        "xpnet_input": json.dumps({
            "name": INPUT_NAME, "shape": ["batch"] + list(shape),
            "dtype": dtype_name(net.dtype),
            "layout": "NCHW" if len(shape) == 3 else "N,features",
            "normalization": input_normalization}, sort_keys=True),
        "xpnet_output": json.dumps({"name": out_name, "shape": ["batch"] + list(g.shape),
                                    "softmax": bool(softmax)}, sort_keys=True),
    }
    for k, v in (metadata or {}).items():
        props[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def export(net, path, input_shape=None, opset=None, softmax=False, input_normalization=None,
           metadata=None):
    """Write `net` as an ONNX model to `path` (atomically) and return the path; the
    arguments are `to_onnx`'s."""
    return write_model(to_onnx(net, input_shape, opset, softmax, input_normalization, metadata),
                       path)


def write_model(model, path):
    """Write an ONNX ``ModelProto`` to `path` atomically (a crash never leaves half a
    model under the final name); returns the path."""
    path = os.fspath(path)
    atomic_write_bytes(path, model.SerializeToString())
    return path
