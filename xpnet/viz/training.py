"""Plots for training runs: curves, filters, image grids, misclassified images,
activation histograms, confusion matrices.
"""
import math

import numpy as np

from ..backend import asnumpy
from .figures import _done, _figure


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
    t, y = _class_indices(t), _class_indices(y)
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
    t, y = _class_indices(t), _class_indices(y)
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


def _class_indices(a):
    """Host class indices from labels or predictions (one-hot or scores: argmax)."""
    a = asnumpy(a)
    return a.argmax(axis=1) if a.ndim == 2 else a
