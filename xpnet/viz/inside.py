"""Plots for looking inside a net (`xpnet.explain`): heatmap overlays, feature-map
grids, filters before/after training, top-activating images.

These figures are laid out in inches and saved without cropping, so a PNG is exactly
``figsize * 100`` pixels: its size follows from the number of images or layers.
"""
import math

import numpy as np

from ..backend import asnumpy
from .figures import _done, _figure
from .training import _as_images


def _maps(maps, what):
    """Maps as host (N, H, W): (N, H, W), (N, 1, H, W) or flat square (N, H*W)."""
    m = np.asarray(asnumpy(maps), dtype=np.float64)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    elif m.ndim == 2:
        side = int(round(math.sqrt(m.shape[1])))
        if side * side != m.shape[1]:
            raise ValueError("%s: flat maps of %d values are not square; pass (N, H, W)"
                             % (what, m.shape[1]))
        m = m.reshape(-1, side, side)
    if m.ndim != 3:
        raise ValueError("%s: maps must be (N, H, W) (or (N, 1, H, W), or flat square), got "
                         "shape %s" % (what, tuple(m.shape)))
    return m


def _grid_layout(n, ncols, tile, cell_titles, title, right=0.0):
    """A figure with `n` square axes of `tile` inches, `ncols` per row; returns
    ``(fig, axes, grid_box)`` with the grid's (left, bottom, width, height) in inches."""
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    gap, th, top, side = 0.06, (0.2 if cell_titles else 0.0), (0.4 if title else 0.06), 0.06
    width = 2 * side + ncols * (tile + gap) - gap + right
    height = top + nrows * (tile + th + gap) - gap + side
    fig = _figure((width, height))
    axes = []
    for i in range(n):
        r, c = divmod(i, ncols)
        left = side + c * (tile + gap)
        bottom = height - top - r * (tile + th + gap) - th - tile
        axes.append(fig.add_axes([left / width, bottom / height, tile / width, tile / height],
                                 xticks=[], yticks=[]))
    if title:
        fig.text(0.5, 1 - 0.2 / height, str(title), ha="center", va="center", fontsize=11)
    grid_h = nrows * (tile + th + gap) - gap
    return fig, axes, (side, height - top - grid_h, ncols * (tile + gap) - gap, grid_h)


def _show_image(ax, img, cmap="gray"):
    ax.imshow(img, cmap=cmap if img.ndim == 2 else None, interpolation="nearest")


def plot_heatmaps(images, maps, titles=None, path=None, ncols=8, alpha=0.5, cmap=None,
                  title=None, colorbar=True, label=None, tile=1.1):
    """Each image in gray with its map laid over it (Grad-CAM, saliency, occlusion).

    Maps with values in [0, 1] are drawn with `jet` from 0 to 1. Maps with negative values
    (occlusion: hiding a patch may raise the class's probability) use a diverging
    `RdBu_r` centred at 0, one range for all, so red means "this patch supports the class".
    A map of another size than its image is stretched over it. `label`: the colour bar's."""
    x = _as_images(images)
    m = _maps(maps, "plot_heatmaps")
    n = len(x)
    if n == 0:
        raise ValueError("plot_heatmaps: no images to show")
    if len(m) != n:
        raise ValueError("plot_heatmaps: %d images but %d maps" % (n, len(m)))
    if titles is not None and len(titles) != n:
        raise ValueError("plot_heatmaps: %d images but %d titles" % (n, len(titles)))
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    if lo < 0:
        vmax = max(-lo, hi) or 1.0
        vmin, cmap = -vmax, cmap or "RdBu_r"
    else:
        vmin, vmax, cmap = 0.0, max(hi, 1.0), cmap or "jet"
    fig, axes, (gl, gb, gw, gh) = _grid_layout(n, ncols, tile, titles is not None, title,
                                               right=0.75 if colorbar else 0.0)
    for i, ax in enumerate(axes):
        _show_image(ax, x[i])
        h, w = x[i].shape[:2]
        im = ax.imshow(m[i], cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha,
                       interpolation="bilinear", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8, pad=2)
    if colorbar:
        W, H = fig.get_size_inches()
        cax = fig.add_axes([(gl + gw + 0.15) / W, gb / H, 0.12 / W, min(gh, 3.0) / H])
        cb = fig.colorbar(im, cax=cax)
        cb.solids.set_alpha(1)
        if label:
            cb.set_label(label, fontsize=8)
        cax.tick_params(labelsize=7)
    return _done(fig, path, tight=False)


def plot_feature_maps(maps, path=None, index=0, max_channels=16, order="strongest", image=None,
                      title=None, cmap="gray", tile=0.62):
    """The outputs of several layers for one image, one row per layer (the book's 7.6):
    `maps` is ``{name: array}`` as `xpnet.explain.feature_maps` returns it, `index` the
    image in the batch. Rows of (N, C, H, W) layers show up to `max_channels` channels,
    each scaled to its own range and titled with its channel number; ``order='strongest'``
    picks the channels with the highest mean activation, ``'index'`` the first ones.
    (N, D) layers are drawn as a strip of D values. `image` adds the input as a first row."""
    if not isinstance(maps, dict) or not maps:
        raise ValueError("plot_feature_maps: maps must be a non-empty dict {layer name: "
                         "array}, got %s" % type(maps).__name__)
    if order not in ("strongest", "index"):
        raise ValueError("plot_feature_maps: order must be 'strongest' or 'index', got %r"
                         % (order,))
    rows = []
    for name, a in maps.items():
        a = np.asarray(asnumpy(a), dtype=np.float64)
        if a.ndim not in (2, 4):
            raise ValueError("plot_feature_maps: %s has shape %s; expected (N, C, H, W) or "
                             "(N, D)" % (name, tuple(a.shape)))
        if not 0 <= index < a.shape[0]:
            raise ValueError("plot_feature_maps: index must be in 0..%d, got %d"
                             % (a.shape[0] - 1, index))
        rows.append((str(name), a[index]))
    if image is not None:
        rows.insert(0, ("input", _as_images(asnumpy(image)[None])[0]))
    k = max(1, int(max_channels))
    ncols = max([min(k, a.shape[0]) if a.ndim == 3 and name != "input" else 1
                 for name, a in rows] + [1])
    gap, th, label_w, side, top = 0.05, 0.16, 1.25, 0.06, (0.4 if title else 0.06)
    row_h = [tile + th if a.ndim >= 2 else 0.3 + th for _, a in rows]
    width = label_w + ncols * (tile + gap) - gap + side
    height = top + sum(h + gap for h in row_h) + side
    fig = _figure((width, height))
    y = height - top
    for (name, a), h in zip(rows, row_h):
        y -= h
        if name == "input" or a.ndim == 1:
            shape = "%d units" % a.shape[0] if a.ndim == 1 else "%dx%d" % a.shape[:2]
        else:
            shape = "%dx%dx%d" % a.shape
        fig.text(0.05 / width, (y + h / 2) / height, "%s\n%s" % (name, shape), fontsize=8,
                 va="center", ha="left")
        if a.ndim == 1:         # (D,): a strip across the row
            ax = fig.add_axes([label_w / width, y / height,
                               (ncols * (tile + gap) - gap) / width, 0.3 / height],
                              xticks=[], yticks=[])
            ax.imshow(a[None, :], cmap=cmap, aspect="auto", interpolation="nearest")
        elif name == "input":
            ax = fig.add_axes([label_w / width, y / height, tile / width, tile / height],
                              xticks=[], yticks=[])
            _show_image(ax, a)
        else:
            means = a.reshape(a.shape[0], -1).mean(axis=1)
            chans = (np.argsort(-means, kind="stable") if order == "strongest"
                     else np.arange(a.shape[0]))[:k]
            for j, c in enumerate(chans):
                ax = fig.add_axes([(label_w + j * (tile + gap)) / width, y / height,
                                   tile / width, tile / height], xticks=[], yticks=[])
                ax.imshow(a[c], cmap=cmap, interpolation="nearest")
                ax.set_title("%d" % c, fontsize=6, pad=1)
        y -= gap
    if title:
        fig.text(0.5, 1 - 0.2 / height, str(title), ha="center", va="center", fontsize=11)
    return _done(fig, path, tight=False)


def _filter_mosaic(W, ncols, channel, gap=1):
    """(FN, C, FH, FW) -> one image of the filters of `channel`, each scaled to [0, 1]
    (as imshow does for one filter), NaN between tiles."""
    f = np.asarray(W, dtype=np.float64)[:, channel]
    fn, fh, fw = f.shape
    nrows = -(-fn // ncols)
    img = np.full((nrows * (fh + gap) - gap, ncols * (fw + gap) - gap), np.nan)
    for i in range(fn):
        lo, hi = f[i].min(), f[i].max()
        r, c = divmod(i, ncols)
        img[r * (fh + gap):r * (fh + gap) + fh, c * (fw + gap):c * (fw + gap) + fw] = \
            (f[i] - lo) / (hi - lo) if hi > lo else 0.5
    return img


def plot_filters_before_after(W_before, W_after, path=None, ncols=8, channel=0,
                              labels=("before training", "after training"), title=None):
    """First-layer filters (FN, C, FH, FW) before and after training, side by side, each
    filter scaled to its own range in gray_r (the book's ``filter_show``): random noise
    on the left, edge and blob detectors on the right."""
    a, b = np.asarray(asnumpy(W_before)), np.asarray(asnumpy(W_after))
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError("plot_filters_before_after: W_before and W_after must be (FN, C, FH, "
                         "FW) of one shape, got %s and %s" % (tuple(a.shape), tuple(b.shape)))
    if not 0 <= channel < a.shape[1]:
        raise ValueError("plot_filters_before_after: channel must be in 0..%d, got %d"
                         % (a.shape[1] - 1, channel))
    ncols = max(1, min(int(ncols), a.shape[0]))
    mos = [_filter_mosaic(w, ncols, channel) for w in (a, b)]
    scale = 0.09                   # inches per filter pixel
    mh, mw = mos[0].shape
    pw, ph = mw * scale, mh * scale
    gap, top, side, lab = 0.4, (0.4 if title else 0.06), 0.1, 0.3
    width = 2 * side + 2 * pw + gap
    height = top + lab + ph + side
    fig = _figure((width, height))
    import matplotlib
    cm = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    for i, (m, text) in enumerate(zip(mos, labels)):
        ax = fig.add_axes([(side + i * (pw + gap)) / width, side / height, pw / width,
                           ph / height], xticks=[], yticks=[])
        ax.imshow(m, cmap=cm, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(str(text), fontsize=10)
        for s in ax.spines.values():
            s.set_visible(False)
    if title:
        fig.text(0.5, 1 - 0.2 / height, str(title), ha="center", va="center", fontsize=11)
    return _done(fig, path, tight=False)


def plot_top_activating(images, scores, path=None, maps=None, layer=None, channel=None,
                        ncols=9, title=None):
    """The images that excite one channel most (from `xpnet.explain.top_activating`),
    titled with their scores; `maps` (e.g. the channel's activation, or Grad-CAM) is laid
    over them when given."""
    x = _as_images(images)
    if len(scores) != len(x):
        raise ValueError("plot_top_activating: %d images but %d scores" % (len(x), len(scores)))
    if title is None and layer is not None:
        title = "%s, channel %s: the %d strongest images" % (layer, channel, len(x))
    titles = ["%.3g" % float(s) for s in scores]
    if maps is not None:
        return plot_heatmaps(x, maps, titles, path=path, ncols=ncols, title=title,
                             label="activation")
    if len(x) == 0:
        raise ValueError("plot_top_activating: no images to show")
    fig, axes, _ = _grid_layout(len(x), ncols, 1.1, True, title)
    for ax, img, t in zip(axes, x, titles):
        _show_image(ax, img)
        ax.set_title(t, fontsize=8, pad=2)
    return _done(fig, path, tight=False)
