"""Naming a net's layers and running its passes without changing it (`_untouched`);
how the passes run is told in `xpnet.explain`'s docstring.
"""
import contextlib
import math
import operator
from collections import namedtuple

from .. import backend
from .. import layers as L


# ---------------------------------------------------------------- names

def layer_names(net):
    """The names of ``net.layers``: type name + 1-based position, e.g. ``['Convolution1',
    'Relu2', 'Pooling3', 'Affine4', 'Relu5', 'Affine6']`` for SimpleConvNet. They depend
    only on the net's architecture, so they are the same for every run of it."""
    layers = getattr(net, "layers", None)
    if not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError("expected a Sequential net (with a non-empty .layers list), got %s"
                        % type(net).__name__)
    return ["%s%d" % (type(layer).__name__, i + 1) for i, layer in enumerate(layers)]


def find_layer(net, name, what="layer"):
    """The index in ``net.layers`` of the layer called `name` (case-insensitive; an int
    index is accepted too). An unknown name is a ValueError that lists the valid ones."""
    names = layer_names(net)
    if isinstance(name, int) and not isinstance(name, bool):
        if -len(names) <= name < len(names):
            return name % len(names)
        raise ValueError("%s: index %d is out of range for a net of %d layers (%s)"
                         % (what, name, len(names), ", ".join(names)))
    if not isinstance(name, str):
        raise TypeError("%s must be a layer name such as %r, got %r" % (what, names[0], name))
    low = [n.lower() for n in names]
    if name.lower() not in low:
        raise ValueError("%s: no layer named %r; the net's layers are %s"
                         % (what, name, ", ".join(names)))
    return low.index(name.lower())


def default_cam_layer(net):
    """Grad-CAM's default layer: the last Convolution, whose output is taken before the
    activation. After a ReLU every blank part of an image holds the same values (relu of
    the biases), so for some digits the map lights the whole background evenly and has
    no peak; before it the sign is kept, and blank parts weigh in below the strokes (see
    docs/explain.md for the numbers). Name the ReLU (``layer='Relu2'``) to get the map
    after it."""
    names = layer_names(net)
    convs = [i for i, layer in enumerate(net.layers) if isinstance(layer, L.Convolution)]
    if not convs:
        raise ValueError("grad_cam: the net has no Convolution layer, so there is no default "
                         "layer; name one with (N, C, H, W) output (layers: %s)"
                         % ", ".join(names))
    return names[convs[-1]]


def activation_layer(net, layer=None):
    """The name of the activation (ReLU, LeakyReLU, sigmoid, tanh) right after `layer`
    (default: the last Convolution), or of `layer` itself when none follows: where "how
    strongly does this channel fire" is read (`top_activating`)."""
    names = layer_names(net)
    i = find_layer(net, default_cam_layer(net) if layer is None else layer, "layer")
    nxt = net.layers[i + 1] if i + 1 < len(names) else None
    return names[i + 1] if getattr(nxt, "activation", False) else names[i]


# ---------------------------------------------------------------- passes

@contextlib.contextmanager
def _untouched(net, input_grad=False):
    """Run a pass through `net`, then put back everything a pass changes in its layers:
    gradients, forward caches, workspaces (the provider reuses column buffers in place, and
    the saved caches point into them) and ``need_input_grad``."""
    with net._cpu_threads():        # the net's device and kernels; its passes take turns
        saved = []
        for layer in net.layers:
            caches = {k: v for k, v in vars(layer).items() if k.startswith("_c_")}
            ws = getattr(layer, "_workspace", None)
            saved.append((layer, dict(layer.grads), caches, ws, layer.need_input_grad))
            if ws is not None:
                layer._workspace = {}
        if input_grad:
            net.layers[0].need_input_grad = True
        try:
            yield
        finally:
            for layer, grads, caches, ws, need in saved:
                layer.grads.clear()
                layer.grads.update(grads)
                for k in [k for k in vars(layer) if k.startswith("_c_") and k not in caches]:
                    delattr(layer, k)
                for k, v in caches.items():
                    setattr(layer, k, v)
                if ws is not None:
                    layer._workspace = ws
                layer.need_input_grad = need


def _batchnorm_eval_backward(layer, dout):
    """Input gradient of an evaluation-mode BatchNorm (see the module docstring)."""
    xp = backend.namespace(dout)
    _, bshape = layer._axes(dout)
    g = xp.reshape(layer.params["gamma"], bshape)
    var = xp.reshape(layer.buffers["running_var"], bshape)
    return dout * (g / xp.sqrt(var + layer.eps))


def _backward(layer, dout):
    if isinstance(layer, L.BatchNormalization):
        return _batchnorm_eval_backward(layer, dout)
    return layer.backward(dout)


def _prepare(net, x, what, images=False):
    layer_names(net)           # a clear error for something that is not a Sequential
    x = net._prepare(x)
    if images and x.ndim != 4:
        raise ValueError("%s: x must be a batch of images (N, C, H, W), got shape %s%s"
                         % (what, tuple(x.shape), " (add a batch axis: x[None])"
                            if x.ndim == 3 else ""))
    return x


def _forward(net, x, keep=(), stop=None):
    """Evaluation forward through ``net.layers[:stop]``; returns the output, ``{index:
    that layer's output}`` for the indices in `keep`, and the shapes seen on the way."""
    kept, shapes = {}, [tuple(x.shape)]
    layers = net.layers if stop is None else net.layers[:stop]
    for i, layer in enumerate(layers):
        x = layer.forward(x, False)
        shapes.append(tuple(x.shape))
        if i in keep:
            kept[i] = x
    return x, kept, shapes


def _targets(target, scores, what):
    """Class indices (N,) int64 on the scores' device: the predicted class when `target`
    is None, else `target` (an int, or one int per image), checked against the classes."""
    xp = backend.namespace(scores)
    n, classes = scores.shape
    if target is None:
        return xp.argmax(scores, axis=1)
    if isinstance(target, bool):
        raise TypeError("%s: target must be a class index or one per image, got %r"
                        % (what, target))
    try:                               # one class for all (ints, NumPy ints, 0-d arrays)
        values = [operator.index(target)] * n
    except TypeError:
        try:
            values = [operator.index(v) for v in (backend.asnumpy(target).tolist()
                                                  if backend.is_array(target) else target)]
        except TypeError:
            raise TypeError("%s: target must be an int class index or a sequence of them "
                            "(one per image), got %r" % (what, target)) from None
        if len(values) != n:
            raise ValueError("%s: target has %d entries but x has %d images"
                             % (what, len(values), n))
    bad = [v for v in values if not 0 <= v < classes]
    if bad:
        raise ValueError("%s: target must be a class index in 0..%d (the net has %d outputs), "
                         "got %d" % (what, classes - 1, classes, bad[0]))
    return xp.asarray(values, dtype=xp.int64, device=backend.placement(scores))


def _one_hot(t, scores):
    xp = backend.namespace(scores)
    classes = xp.arange(scores.shape[1], device=backend.placement(scores))
    return xp.astype(t[:, None] == classes[None, :], scores.dtype)


LayerGradient = namedtuple("LayerGradient", "activation gradient target scores")
LayerGradient.__doc__ = """What `layer_gradient` returns: the layer's output (the input
itself for ``layer=None``), the gradient of the target class score with respect to it,
the target classes (N,) and the class scores (N, classes), all on the net's device."""


def _layer_gradient(net, x, index, target, what):
    """Gradient pass on an already prepared `x`; `index` -1 means the input."""
    with _untouched(net, input_grad=index < 0):
        scores, kept, shapes = _forward(net, x, keep=(index,))
        t = _targets(target, scores, what)
        dout = _one_hot(t, scores)
        for layer in reversed(net.layers[index + 1:]):
            dout = _backward(layer, dout)
    act = x if index < 0 else kept[index]
    return LayerGradient(act, dout, t, scores), shapes


def layer_gradient(net, x, layer=None, target=None):
    """The gradient of the target class score with respect to `layer`'s output (the input
    when `layer` is None), by backpropagation through the net's layers in evaluation mode.

    `target`: None (the predicted class), an int, or one int per image. Returns a
    `LayerGradient` ``(activation, gradient, target, scores)``."""
    what = "layer_gradient"
    x = _prepare(net, x, what)
    index = -1 if layer is None else find_layer(net, layer, what + ": layer")
    return _layer_gradient(net, x, index, target, what)[0]


# ---------------------------------------------------------------- shared checks

def _unit_max(m):
    """Each sample of `m` (>= 0) divided by its maximum (all-zero samples stay zero)."""
    xp = backend.namespace(m)
    n = m.shape[0]
    mx = xp.max(xp.reshape(m, (n, -1)), axis=1)
    mx = xp.reshape(xp.where(mx > 0, mx, xp.ones_like(mx)), (n,) + (1,) * (m.ndim - 1))
    return m / mx


def _check_count(v, what, allow_zero=True):
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
        raise ValueError("%s must be an int >= %d, got %r" % (what, 0 if allow_zero else 1, v))
    return v


def _check_fraction(v, what, lo=0.0, hi=None):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number, got %r" % (what, v)) from None
    if not (math.isfinite(f) and f >= lo and (hi is None or f <= hi)):
        raise ValueError("%s must be in [%g, %s], got %r" % (what, lo, "inf" if hi is None
                                                              else "%g" % hi, v))
    return f
