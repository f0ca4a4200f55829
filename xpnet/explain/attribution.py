"""Which input pixels matter: saliency (SmoothGrad) and occlusion."""
import math

from .. import backend
from .. import functions as F
from ..backend.geometry import pair
from .passes import (_forward, _layer_gradient, _one_hot, _prepare, _targets, _untouched,
                     _check_count, _check_fraction, _unit_max)


# ---------------------------------------------------------------- saliency


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
    if not (1 <= sh <= wh and 1 <= sw <= ww):
        # a larger stride leaves pixels no window covers: their mean drop would be 0/0
        raise ValueError("occlusion: stride must be between 1 and the window (%d, %d), so "
                         "that every pixel is covered; got %r (image %dx%d)"
                         % (wh, ww, stride, H, W))
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
