"""What a layer sees: feature maps, Grad-CAM heat maps and top-activating images."""
import math

from .. import backend
from .. import functions as F
from .. import layers as L
from .passes import (_forward, _layer_gradient, _prepare, _untouched, _check_count, _unit_max,
                     default_cam_layer, find_layer, layer_names)


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
