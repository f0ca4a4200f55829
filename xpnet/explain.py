"""Seeing inside a net: feature maps, Grad-CAM, saliency (SmoothGrad) and occlusion.

Every function takes a `Sequential` net (SimpleConvNet, DeepConvNet or a user's own) and
a batch ``x`` (host or device data; it is moved to the net's device and dtype), and returns
arrays on the net's device unless its docstring says otherwise (`top_activating` returns
Python lists). Layers are named by type and 1-based position in ``net.layers``
("Convolution1", "Relu2", "Pooling3", ...; see `layer_names`).

How the passes run:
- forwards are evaluation passes (``train_flg=False``): Dropout is the identity and
  BatchNorm uses its running statistics, which are never updated;
- gradients come from the layers' own ``backward`` methods; the one exception is
  BatchNormalization, whose ``backward`` is the training-mode formula (it needs the
  batch statistics of a training forward). In evaluation BatchNorm is the per-channel
  affine map ``gamma * (x - mean) / sqrt(var + eps) + beta``, so its input gradient is
  ``dout * gamma / sqrt(var + eps)``, computed here (`_batchnorm_eval_backward`);
- the gradient that flows back is that of the class *score* (the net's output before
  the softmax), as in the Grad-CAM and saliency papers.

What this module must never do: change the net. Parameters, gradients, BatchNorm running
statistics, each layer's forward caches (``_c_*``), its column-buffer workspace and the
first layer's ``need_input_grad`` are put back exactly as they were (`_untouched`), so a
training step interrupted by an explanation continues as if nothing had happened. It uses
standard Array API calls only (no NumPy import, no library checks), so it runs on every
device of `xpnet.backend`.
"""
import contextlib
import math
import operator
from collections import namedtuple

from . import backend
from . import functions as F
from . import layers as L
from .backend.geometry import pair

__all__ = ["layer_names", "find_layer", "default_cam_layer", "activation_layer",
           "feature_maps", "layer_gradient",
           "LayerGradient", "grad_cam", "saliency", "occlusion", "top_activating",
           "pointing_hits", "stroke_mask"]

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


# ---------------------------------------------------------------- feature maps

def feature_maps(net, x, layers=None):
    """The outputs of the chosen layers for input `x`, as ``{name: array}`` in the net's
    order (evaluation mode). `layers`: None for every layer, a name, or a list of names
    (see `layer_names`). The pass stops after the last layer asked for."""
    names = layer_names(net)
    if layers is None:
        idx = list(range(len(names)))
    else:
        wanted = [layers] if isinstance(layers, (str, int)) else list(layers)
        if not wanted:
            raise ValueError("feature_maps: layers is empty; give names from %s"
                             % ", ".join(names))
        idx = sorted({find_layer(net, n, "feature_maps: layers") for n in wanted})
    x = _prepare(net, x, "feature_maps")
    with _untouched(net):
        _, kept, _ = _forward(net, x, keep=set(idx), stop=idx[-1] + 1)
    return {names[i]: kept[i] for i in idx}


# ---------------------------------------------------------------- Grad-CAM

def _axis_grid(net, index, shapes, axis):
    """``(start, step)``: the input coordinate of the receptive-field centre of output
    pixel 0 of layer `index`, and the input distance between neighbouring output pixels,
    along `axis` (0: height, 1: width). None when a layer changes the grid in a way this
    does not know (then the map is stretched over the image)."""
    start, step = 0.0, 1.0
    for i in range(index + 1):
        layer = net.layers[i]
        if isinstance(layer, L.Convolution):
            k, s, p = layer.params["W"].shape[2 + axis], layer.stride[axis], layer.pad[axis]
        elif isinstance(layer, L.Pooling):
            k = (layer.pool_h, layer.pool_w)[axis]
            s, p = layer.stride[axis], layer.pad[axis]
        elif shapes[i][2:] == shapes[i + 1][2:]:
            continue
        else:
            return None
        start += ((k - 1) / 2.0 - p) * step
        step *= s
    return start, step


def _upsample(m, coords_y, coords_x):
    """Bilinear samples of maps `m` (N, h, w) at source coordinates (one list per axis;
    clamped to the map's edge)."""
    xp = backend.namespace(m)
    dev = backend.placement(m)

    def taps(coords, size):
        i0, i1, f = [], [], []
        for c in coords:
            c = min(max(c, 0.0), size - 1.0)
            a = int(math.floor(c))
            i0.append(a)
            i1.append(min(a + 1, size - 1))
            f.append(c - a)
        return (xp.asarray(i0, dtype=xp.int64, device=dev),
                xp.asarray(i1, dtype=xp.int64, device=dev),
                xp.asarray(f, dtype=m.dtype, device=dev))

    y0, y1, fy = taps(coords_y, m.shape[1])
    x0, x1, fx = taps(coords_x, m.shape[2])
    fy = fy[:, None]
    r = xp.take(m, y0, axis=1) * (1.0 - fy) + xp.take(m, y1, axis=1) * fy
    return xp.take(r, x0, axis=2) * (1.0 - fx) + xp.take(r, x1, axis=2) * fx


def _to_input_grid(net, index, shapes, m):
    """Maps `m` (N, h, w) on layer `index`'s grid resampled to the input's (N, H, W)."""
    H, W = shapes[0][2:]
    coords = []
    for axis, (size, n_in) in enumerate(((m.shape[1], H), (m.shape[2], W))):
        grid = _axis_grid(net, index, shapes, axis)
        if grid is None:       # stretch: pixel centres of both grids span the same extent
            coords.append([(p + 0.5) * size / n_in - 0.5 for p in range(n_in)])
        else:
            start, step = grid
            coords.append([(p - start) / step for p in range(n_in)])
    return _upsample(m, coords[0], coords[1])


def _unit_max(m):
    """Each sample of `m` (>= 0) divided by its maximum (all-zero samples stay zero)."""
    xp = backend.namespace(m)
    n = m.shape[0]
    mx = xp.max(xp.reshape(m, (n, -1)), axis=1)
    mx = xp.reshape(xp.where(mx > 0, mx, xp.ones_like(mx)), (n,) + (1,) * (m.ndim - 1))
    return m / mx


def grad_cam(net, x, target=None, layer=None, return_weights=False):
    """Grad-CAM maps (N, H, W) in [0, 1] at the input's resolution, on the net's device.

    For the target class score ``y`` and the chosen layer's output ``A`` (N, K, h, w):
    channel weights ``alpha_k = mean over (h, w) of dy/dA_k``, map ``relu(sum_k alpha_k
    A_k)``, resampled bilinearly to the input grid through the receptive-field centres of
    the conv/pool layers in between (so a 24x24 map of a 5x5 unpadded convolution lands on
    pixels 2..25 of a 28x28 image), then divided by each map's maximum (a map with no
    positive evidence is all zero).

    `target`: None (the predicted class), an int, or one int per image. `layer`: a name
    from `layer_names`; default `default_cam_layer` (the last convolution).
    With ``return_weights=True`` returns ``(maps, alpha)``, alpha of shape (N, K)."""
    what = "grad_cam"
    x = _prepare(net, x, what, images=True)
    name = default_cam_layer(net) if layer is None else layer
    index = find_layer(net, name, what + ": layer")
    g, shapes = _layer_gradient(net, x, index, target, what)
    A = g.activation
    if A.ndim != 4:
        raise ValueError("grad_cam: layer %s has output shape %s; Grad-CAM needs a layer "
                         "with (N, C, H, W) output, such as %s"
                         % (layer_names(net)[index], tuple(A.shape), default_cam_layer(net)))
    xp = backend.namespace(A)
    alpha = xp.mean(g.gradient, axis=(2, 3))
    cam = F.relu(xp.sum(alpha[:, :, None, None] * A, axis=1))
    maps = _unit_max(_to_input_grid(net, index, shapes, cam))
    return (maps, alpha) if return_weights else maps


# ---------------------------------------------------------------- saliency

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


def saliency(net, x, target=None, smooth=0, noise=0.15, seed=None, raw=False):
    """Saliency: the gradient of the target class score with respect to the input.

    By default returns maps in [0, 1]: ``|gradient|``, the maximum over channels for
    (N, C, H, W) input (Simonyan et al.), divided by each map's maximum; shape (N, H, W),
    or (N, D) for flat input. ``raw=True`` returns the signed gradient, shaped like `x`.
    Results are on the net's device.

    SmoothGrad (Smilkov et al.): with ``smooth=n > 0`` the gradient is averaged over `n`
    copies of each image with Gaussian noise of standard deviation ``noise * (max - min)``
    of that image (0.10-0.20 works well). The target stays the class predicted for the
    clean image. The noise is drawn on the host (the same on every device) from
    ``xpnet.backend.new_host_rng(seed)``, or from xpnet's host generator (``xpnet.seed``)
    when `seed` is None."""
    what = "saliency"
    smooth = _check_count(smooth, "saliency: smooth")
    noise = _check_fraction(noise, "saliency: noise")
    x = _prepare(net, x, what)
    g, _ = _layer_gradient(net, x, -1, target, what)
    grad = g.gradient
    if smooth:
        xp = backend.namespace(x)
        n = x.shape[0]
        flat = xp.reshape(x, (n, -1))
        spread = xp.max(flat, axis=1) - xp.min(flat, axis=1)
        sigma = xp.reshape(spread * noise, (n,) + (1,) * (x.ndim - 1))
        rng = backend.host_rng() if seed is None else backend.new_host_rng(seed)
        total = None
        for _ in range(smooth):
            eps = backend.to_device(rng.standard_normal(tuple(x.shape)), net.device)
            noisy = x + xp.astype(eps, x.dtype) * sigma
            gi = _layer_gradient(net, noisy, -1, g.target, what)[0].gradient
            total = gi if total is None else total + gi
        grad = total / float(smooth)
    if raw:
        return grad
    xp = backend.namespace(grad)
    m = xp.abs(grad)
    if m.ndim == 4:
        m = xp.max(m, axis=1)
    return _unit_max(m)


# ---------------------------------------------------------------- occlusion

def _starts(size, win, step):
    """Window starts 0, step, 2*step ... plus the last one flush with the edge, so that
    every pixel is covered."""
    s = list(range(0, size - win + 1, step))
    if s[-1] != size - win:
        s.append(size - win)
    return s


def occlusion(net, x, window=7, stride=3, target=None, value=0.0, batch_size=256):
    """Occlusion sensitivity (Zeiler & Fergus): slide a `window` (int or (h, w)) of
    constant `value` over each image by `stride`, and record how much the target class's
    probability drops. Model-free: it uses forward passes only.

    Returns maps (N, H, W) on the net's device in units of probability: each pixel holds
    the mean drop over the windows that cover it (negative where hiding it helps the
    class). `target`: None (the predicted class), an int, or one int per image.
    `batch_size`: occluded images per forward pass."""
    what = "occlusion"
    x = _prepare(net, x, what, images=True)
    n, c, H, W = x.shape
    wh, ww = pair(window, "occlusion: window")
    sh, sw = pair(stride, "occlusion: stride")
    if not (1 <= wh <= H and 1 <= ww <= W):
        raise ValueError("occlusion: window must be between 1 and the image size (%d, %d), "
                         "got %r" % (H, W, window))
    if sh < 1 or sw < 1:
        raise ValueError("occlusion: stride must be >= 1, got %r" % (stride,))
    value = _check_fraction(value, "occlusion: value", lo=-math.inf)
    batch_size = _check_count(batch_size, "occlusion: batch_size", allow_zero=False)
    xp = backend.namespace(x)
    dev = backend.placement(x)
    rows = xp.arange(H, device=dev)[:, None]
    cols = xp.arange(W, device=dev)[None, :]
    positions = [(y, x0) for y in _starts(H, wh, sh) for x0 in _starts(W, ww, sw)]
    fill = xp.full(x.shape, value, dtype=x.dtype, device=dev)
    with _untouched(net):
        scores = _forward(net, x)[0]
        t = _targets(target, scores, what)
        hot = _one_hot(t, scores)
        p0 = xp.sum(F.softmax(scores) * hot, axis=1)
        total = xp.zeros((n, H, W), dtype=x.dtype, device=dev)
        count = xp.zeros((H, W), dtype=x.dtype, device=dev)
        per_pass = max(1, batch_size // n)
        for i in range(0, len(positions), per_pass):
            group = positions[i:i + per_pass]
            masks = [(rows >= y) & (rows < y + wh) & (cols >= x0) & (cols < x0 + ww)
                     for y, x0 in group]
            batch = xp.concat([xp.where(m[None, None, ...], fill, x) for m in masks], axis=0)
            p = xp.sum(F.softmax(_forward(net, batch)[0]) * xp.concat([hot] * len(group),
                                                                      axis=0), axis=1)
            for j, m in enumerate(masks):
                drop = p0 - p[j * n:(j + 1) * n]
                mf = xp.astype(m, x.dtype)
                total = total + drop[:, None, None] * mf[None, ...]
                count = count + mf
    return total / count[None, ...]


# ---------------------------------------------------------------- top-activating images

def top_activating(net, x, layer, channel, k=9, batch_size=256):
    """The `k` images of `x` that excite `channel` of `layer` most: its maximum over the
    map for (N, C, H, W) outputs, the unit's value for (N, D) outputs. Returns host
    Python lists ``(indices, scores)``, best first (ties: the lower index first)."""
    what = "top_activating"
    index = find_layer(net, layer, what + ": layer")
    name = layer_names(net)[index]
    k = _check_count(k, what + ": k", allow_zero=False)
    batch_size = _check_count(batch_size, what + ": batch_size", allow_zero=False)
    _check_count(channel, what + ": channel")
    n = x.shape[0]
    scores = []
    for a in range(0, n, batch_size):
        xb = _prepare(net, x[a:min(a + batch_size, n), ...], what)
        with _untouched(net):
            out = _forward(net, xb, stop=index + 1)[0]
        if channel >= out.shape[1]:
            raise ValueError("%s: channel must be in 0..%d (%s has %d channels), got %d"
                             % (what, out.shape[1] - 1, name, out.shape[1], channel))
        xp = backend.namespace(out)
        v = out[:, channel, ...]
        if v.ndim > 1:
            v = xp.max(xp.reshape(v, (v.shape[0], -1)), axis=1)
        scores += [float(s) for s in backend.asnumpy(v).tolist()]
    order = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
    return order, [scores[i] for i in order]


# ---------------------------------------------------------------- checks by numbers

def stroke_mask(images, threshold=0.3, dilate=2):
    """Boolean (N, H, W) mask of the pixels brighter than `threshold` (any channel),
    grown by `dilate` pixels (a square neighbourhood): "on the digit's strokes"."""
    xp = backend.namespace(images)
    m = images > threshold
    if m.ndim == 4:
        m = xp.any(m, axis=1)
    if dilate:
        n, H, W = m.shape
        dev = backend.placement(m)
        rim = xp.zeros((n, dilate, W), dtype=xp.bool, device=dev)
        pad = xp.concat([rim, m, rim], axis=1)
        side = xp.zeros((n, H + 2 * dilate, dilate), dtype=xp.bool, device=dev)
        pad = xp.concat([side, pad, side], axis=2)
        grown = xp.zeros_like(m)
        for dy in range(2 * dilate + 1):
            for dx in range(2 * dilate + 1):
                grown = grown | pad[:, dy:dy + H, dx:dx + W]
        m = grown
    return m


def pointing_hits(maps, mask):
    """Per image, whether the map's peak (the first maximum, row-major) lies in `mask`
    (both (N, H, W)); a boolean (N,) array on their device."""
    xp = backend.namespace(maps)
    n = maps.shape[0]
    peak = xp.argmax(xp.reshape(maps, (n, -1)), axis=1)
    flat = xp.reshape(mask, (n, -1))
    return xp.squeeze(xp.take_along_axis(flat, peak[:, None], axis=1), axis=1)
