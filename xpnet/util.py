"""The helpers of the book's ``common/util.py``, so that its scripts' imports find them:
``from xpnet.util import smooth_curve, shuffle_dataset, im2col, col2im, conv_output_size``.

`im2col`/`col2im` use the book's 2-D layout and run on any device (see `xpnet.conv`);
`smooth_curve` and `shuffle_dataset` work on host data, as the book's do. Nothing here
is used by xpnet itself.
"""
from . import backend
from .conv import col2im, conv_output_size, im2col

__all__ = ["smooth_curve", "shuffle_dataset", "im2col", "col2im", "conv_output_size"]


def smooth_curve(x, window=11):
    """The book's loss-curve smoothing: a Kaiser window (beta 2) moving average over the
    signal reflected at both ends; a host NumPy array as long as the input."""
    np = backend.load_library("numpy")
    x = backend.asnumpy(x).astype(np.float64).reshape(-1)
    if x.shape[0] < window:
        raise ValueError("smooth_curve: needs at least %d values, got %d" % (window, x.shape[0]))
    half = window // 2
    s = np.r_[x[window - 1:0:-1], x, x[-1:-window:-1]]
    w = np.kaiser(window, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[half:-half] if half else y


def shuffle_dataset(x, t, seed=None):
    """`x` and `t` shuffled along the first axis by one permutation (host arrays; a new
    copy, like the book's). `seed` makes it repeatable; without it xpnet's host generator
    is used, so ``xpnet.seed(s)`` does."""
    x, t = backend.asnumpy(x), backend.asnumpy(t)
    if x.shape[0] != t.shape[0]:
        raise ValueError("shuffle_dataset: %d samples but %d labels" % (x.shape[0], t.shape[0]))
    rng = backend.new_host_rng(seed) if seed is not None else backend.host_rng()
    order = rng.permutation(x.shape[0])
    return x[order], t[order]
