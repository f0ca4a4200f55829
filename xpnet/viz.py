"""Plots for training runs: curves, filters, image grids, activation histograms,
confusion matrices; and for looking inside a net (`xpnet.explain`): heatmap overlays,
feature-map grids, filters before/after training, top-activating images.

matplotlib is imported only when a plot is made (``import xpnet`` never needs
it), and figures are drawn with the Agg canvas directly, so nothing here
touches pyplot's global backend or needs a display. Every function returns the
`matplotlib.figure.Figure`; with ``path=`` the PNG is also written atomically.
Arrays may live on the CPU or the GPU.
"""
import io
import math
import os

import numpy as np

from .backend import asnumpy
from .serialization import atomic_write_bytes

__all__ = ["have_matplotlib", "save_figure", "plot_history", "plot_filters", "image_grid",
           "plot_misclassified", "activation_histograms", "confusion_matrix",
           "plot_confusion_matrix", "plot_heatmaps", "plot_feature_maps",
           "plot_filters_before_after", "plot_top_activating"]


def have_matplotlib():
    """``(True, version)`` if matplotlib can be imported, else ``(False, reason)``."""
    try:
        import matplotlib
    except Exception as e:
        return False, "matplotlib is not installed (%s); install it with `pip install " \
                      "matplotlib` or, in the xpnet checkout, `pip install -e \".[plot]\"`" % (e,)
    return True, matplotlib.__version__


def _figure(figsize):
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as e:
        raise ImportError("xpnet.viz needs matplotlib (%s); install it with `pip install "
                          "matplotlib`" % e) from None
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=100, tight=True):
    """Write `fig` as a PNG to `path` atomically; returns the path. ``tight=False`` keeps
    the figure's own size (``figsize * dpi`` pixels) instead of cropping to the drawing."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def _done(fig, path, tight=True):
    if path is not None:
        save_figure(fig, path, tight=tight)
    return fig


def _smooth(v, k):
    """Moving average ignoring NaN-free edges (length len(v) - k + 1)."""
    c = np.cumsum(np.insert(np.asarray(v, dtype=np.float64), 0, 0.0))
    return (c[k:] - c[:-k]) / k


def plot_history(history=None, path=None, title=None, *, train_loss=None, train_acc=None,
                 test_acc=None):
    """Loss per step (raw and smoothed) and train/test accuracy per epoch; with a
    Trainer's history also the learning rate per step (right axis) and the validation
    accuracy and best epoch.

    `history` is a Trainer's history dict (or the Trainer itself); the book's
    lists can be given instead as ``train_loss=``, ``train_acc=``, ``test_acc=``."""
    if history is not None and hasattr(history, "history"):
        history = history.history
    h = dict(history or {})
    loss = [np.nan if v is None else v for v in (train_loss if train_loss is not None
                                                  else h.get("train_loss", []))]
    tr = list(train_acc if train_acc is not None else h.get("train_acc", []))
    te = list(test_acc if test_acc is not None else h.get("test_acc", []))
    if not loss and not tr and not te:
        raise ValueError("plot_history: nothing to plot (no train_loss, train_acc or test_acc)")
    fig = _figure((11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    if loss:
        steps = np.arange(1, len(loss) + 1)
        k = max(1, min(50, len(loss) // 20))
        ax1.plot(steps, loss, color="tab:blue", alpha=0.3 if k > 1 else 1.0, lw=0.8,
                 label="loss per step")
        if k > 1:
            ax1.plot(steps[k - 1:], _smooth(loss, k), color="tab:blue", lw=1.5,
                     label="moving average (%d)" % k)
        finite = [v for v in loss if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
            ax1.set_yscale("log")
        ax1.legend()
    lrs = [np.nan if v is None else v for v in h.get("lr") or []]
    if train_loss is None and len({v for v in lrs if v == v}) > 1:   # a schedule: show it
        ax3 = ax1.twinx()
        ax3.plot(np.arange(1, len(lrs) + 1), lrs, color="tab:orange", lw=1.0)
        ax3.set_ylabel("learning rate", color="tab:orange")
        fig.subplots_adjust(wspace=0.4)     # room for the right axis between the panels
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3)
    epochs_tr = np.arange(1, len(tr) + 1)
    if tr:
        ax2.plot(epochs_tr, tr, "o-", label="train")
    if te:
        ax2.plot(np.arange(1, len(te) + 1), te, "s--", label="test")
    va = h.get("val_acc") or []
    if va and train_acc is None:
        ax2.plot(np.arange(1, len(va) + 1), va, "^:", label="validation")
        if h.get("best_epoch"):
            ax2.axvline(h["best_epoch"], color="gray", lw=0.8, ls="--", label="best epoch")
    if tr or te:
        ax2.legend(loc="lower right")
    from matplotlib.ticker import MaxNLocator
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _done(fig, path)


def plot_filters(W, path=None, ncols=8, title=None, channel=0):
    """A grid of first-layer filters ``W`` (FN, C, FH, FW), one channel each, in gray_r
    as in the book's ``filter_show``."""
    W = asnumpy(W)
    if W.ndim != 4:
        raise ValueError("plot_filters: W must have shape (FN, C, FH, FW), got %s"
                         % (tuple(W.shape),))
    if not 0 <= channel < W.shape[1]:
        raise ValueError("plot_filters: channel must be in 0..%d, got %d" % (W.shape[1] - 1,
                                                                          channel))
    fn = W.shape[0]
    ncols = max(1, min(int(ncols), fn))
    nrows = -(-fn // ncols)
    fig = _figure((ncols * 0.9, nrows * 0.9 + (0.4 if title else 0)))
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.92 if title else 1,
                        hspace=0.05, wspace=0.05)
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1, xticks=[], yticks=[])
        if i < fn:
            ax.imshow(W[i, channel], cmap="gray_r", interpolation="nearest")
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    return _done(fig, path)


def _as_images(images):
    x = asnumpy(images)
    if x.ndim == 2:   # flattened: (N, H*W)
        side = int(round(math.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError("image_grid: flattened images of %d pixels are not square; pass "
                             "(N, H, W) or (N, C, H, W)" % x.shape[1])
        return x.reshape(-1, side, side)
    if x.ndim == 4:
        if x.shape[1] == 1:
            return x[:, 0]
        if x.shape[1] == 3:
            return x.transpose(0, 2, 3, 1)
        if x.shape[-1] in (1, 3):
            return x[..., 0] if x.shape[-1] == 1 else x
    if x.ndim == 3:
        return x
    raise ValueError("image_grid: images must be (N, H*W), (N, H, W) or (N, C, H, W); got shape %s"
                     % (tuple(x.shape),))


def image_grid(images, titles=None, path=None, ncols=10, title=None, cmap="gray_r"):
    """Images in a grid with an optional title per image (e.g. ``'7 -> 1'``)."""
    x = _as_images(images)
    n = len(x)
    if n == 0:
        raise ValueError("image_grid: no images to show")
    if titles is not None and len(titles) != n:
        raise ValueError("image_grid: %d images but %d titles" % (n, len(titles)))
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    th = 0.3 if titles is not None else 0.0
    fig = _figure((ncols * 1.0, nrows * (1.0 + th) + (0.4 if title else 0)))
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1, xticks=[], yticks=[])
        ax.imshow(x[i], cmap=cmap if x[i].ndim == 2 else None, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8, pad=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _done(fig, path)


def plot_misclassified(x, t, y, class_names=None, path=None, max_images=100, ncols=10):
    """The first `max_images` images with ``y != t``, titled ``true -> predicted``.
    Returns the figure, or None when nothing is misclassified."""
    t = asnumpy(t)
    y = asnumpy(y)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if len(t) != len(y) or len(t) != len(x):
        raise ValueError("plot_misclassified: %d images, %d labels, %d predictions"
                         % (len(x), len(t), len(y)))
    wrong = np.flatnonzero(t != y)[:max_images]
    if len(wrong) == 0:
        return None
    name = (lambda c: class_names[c]) if class_names is not None else str
    titles = ["%s -> %s" % (name(int(t[i])), name(int(y[i]))) for i in wrong]
    return image_grid(asnumpy(x)[wrong], titles, path=path, ncols=ncols,
                      title="misclassified: %d of %d shown (true -> predicted)"
                      % (len(wrong), int((t != y).sum())))


def activation_histograms(activations, path=None, bins=30, range=(0, 1), title=None):
    """One histogram per layer (the book's chapter 6 plot). `activations` is a dict
    ``{name: array}`` or a list of arrays (named by their position)."""
    if isinstance(activations, dict):
        items = list(activations.items())
    else:
        items = [("layer %d" % (i + 1), a) for i, a in enumerate(activations)]
    if not items:
        raise ValueError("activation_histograms: no activations given")
    n = len(items)
    fig = _figure((2.4 * n, 2.6))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, (ax, (name, a)) in enumerate(zip(axes, items)):
        ax.hist(asnumpy(a).ravel(), bins=bins, range=range)
        ax.set_title(str(name))
        if i:
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _done(fig, path)


def confusion_matrix(t, y, n_classes=None):
    """Counts ``cm[true, predicted]`` (int64). One-hot arrays are accepted."""
    t = asnumpy(t)
    y = asnumpy(y)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if t.shape != y.shape:
        raise ValueError("confusion_matrix: %d labels but %d predictions" % (len(t), len(y)))
    t = t.astype(np.int64)
    y = y.astype(np.int64)
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), y.max(initial=-1))) + 1
    if len(t) and (t.min() < 0 or y.min() < 0 or t.max() >= n_classes or y.max() >= n_classes):
        raise ValueError("confusion_matrix: labels must be in 0..%d" % (n_classes - 1))
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, y), 1)
    return cm


def plot_confusion_matrix(cm, class_names=None, path=None, normalize=False, title=None):
    """The confusion matrix as an image, counts (or row fractions) written in the cells."""
    cm = asnumpy(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError("plot_confusion_matrix: cm must be square, got shape %s"
                         % (tuple(cm.shape),))
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in np.arange(k)]
    if len(names) != k:
        raise ValueError("plot_confusion_matrix: %d classes but %d class names"
                         % (k, len(names)))
    shown = cm.astype(np.float64)
    if normalize:
        rows = shown.sum(axis=1, keepdims=True)
        shown = np.divide(shown, rows, out=np.zeros_like(shown), where=rows > 0)
    fig = _figure((0.6 * k + 2.5, 0.6 * k + 1.5))
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(np.arange(k))
    ax.set_yticks(np.arange(k))
    ax.set_xticklabels(names, rotation=45 if max(len(n) for n in names) > 2 else 0, ha="right"
                       if max(len(n) for n in names) > 2 else "center")
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    hi = shown.max() if shown.size else 0
    for i in range(k):
        for j in range(k):
            v = shown[i, j]
            txt = ("%.2f" % v) if normalize else ("%d" % cm[i, j])
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if hi and v > hi / 2 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _done(fig, path)


# ---------------------------------------------------------------- inside the net
# These figures are laid out in inches and saved without cropping, so a PNG is exactly
# ``figsize * 100`` pixels: its size follows from the number of images or layers.

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
