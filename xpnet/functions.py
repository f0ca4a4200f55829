"""Pure array math of the book's chapters 3-5, for any Array API library.

Each function takes its namespace from its input, keeps the input's dtype
(integers become float32), uses standard calls only, and never writes into its
arguments.
"""
import math

from . import backend

__all__ = [
    "step_function", "identity_function", "sigmoid", "sigmoid_grad", "tanh", "relu",
    "relu_grad", "softmax", "log_softmax", "cross_entropy_error", "mean_squared_error",
    "sum_squared_error", "one_hot", "check_labels", "scaled",
]


def _float(x):
    if not backend.is_array(x):
        x = backend.asnumpy(x)
    xp = backend.namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        x = xp.astype(x, xp.float32)
    return xp, x


def scaled(xp, total, factor):
    """``total * factor`` (a Python number) in `total`'s dtype. NumPy 1.x makes a float32
    scalar times a Python float a float64 (value-based casting); NumPy 2 and the others
    don't."""
    return xp.astype(total * factor, total.dtype, copy=False)


def step_function(x):
    xp, x = _float(x)
    return xp.astype(x > 0, x.dtype)


def identity_function(x):
    return x


def sigmoid(x):
    # tanh form: no overflow warning for large negative x, same value
    xp, x = _float(x)
    return xp.tanh(x * 0.5) * 0.5 + 0.5


def sigmoid_grad(x):
    s = sigmoid(x)
    return (1.0 - s) * s


def tanh(x):
    xp, x = _float(x)
    return xp.tanh(x)


def relu(x):
    xp, x = _float(x)
    return xp.where(x > 0, x, xp.zeros_like(x))


def relu_grad(x):
    xp, x = _float(x)
    return xp.astype(x > 0, x.dtype)


def softmax(x, axis=-1):
    """Numerically stable softmax along `axis` (any batch shape)."""
    xp, x = _float(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    xp, x = _float(x)
    z = x - xp.max(x, axis=axis, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def check_labels(t, num_classes, what="labels"):
    """Raise a ValueError naming the first integer label outside ``[0, num_classes)``.

    Labels on a device are checked too, by one min/max reduction there and one read of
    two numbers: a GPU library wraps an out-of-range index, so an unchecked label would
    give a silently wrong loss."""
    if t.ndim == 0 or t.shape[0] == 0:
        return t
    xp = backend.namespace(t)
    if not backend.on_host(t):
        lo, hi = backend.asnumpy(xp.stack([xp.min(t), xp.max(t)])).tolist()
        if 0 <= lo and hi < num_classes:
            return t
    bad = (t < 0) | (t >= num_classes)
    if bool(xp.any(bad)):
        i = int(xp.argmax(xp.astype(bad, xp.int8)))
        idx = tuple(int(v) for v in _unravel(i, t.shape))
        raise ValueError("%s: label %s at index %s is outside [0, %d) (%d classes)"
                         % (what, int(t[idx]), idx[0] if len(idx) == 1 else idx,
                            num_classes, num_classes))
    return t


def _unravel(i, shape):
    out = []
    for n in reversed(shape):
        out.append(i % n)
        i //= n
    return tuple(reversed(out))


def one_hot(t, num_classes, dtype=None):
    """(N,) integer labels -> (N, num_classes) one-hot, built by comparison (no fancy setitem)."""
    if not backend.is_array(t):
        t = backend.asnumpy(t)
    xp = backend.namespace(t)
    if not xp.isdtype(t.dtype, "integral"):
        raise TypeError("one_hot: labels must be integers, got dtype %s"
                        % backend.dtype_name(t.dtype))
    check_labels(t, num_classes, "one_hot")
    classes = xp.arange(num_classes, device=backend.placement(t))
    return xp.astype(xp.astype(t, xp.int64)[..., None] == classes, dtype or xp.float32)


def _labels(y, t):
    """Integer labels from `t` given as labels or one-hot rows of `y`'s shape."""
    xp = backend.namespace(y)
    if not backend.is_array(t):
        t = backend.asnumpy(t)
    t = backend.to_device(t, backend.device_of(y))
    if t.ndim == y.ndim and tuple(t.shape) == tuple(y.shape) and t.ndim >= 1:
        return xp.argmax(t, axis=-1)                # one-hot rows, any numeric dtype
    if not xp.isdtype(t.dtype, ("integral", "bool")):
        raise TypeError("labels must be integers or one-hot rows shaped like the "
                        "predictions %s; got dtype %s shape %s"
                        % (tuple(y.shape), backend.dtype_name(t.dtype), tuple(t.shape)))
    if tuple(t.shape) != tuple(y.shape[:-1]):
        raise ValueError("labels of shape %s don't match predictions of shape %s: expected %s"
                         % (tuple(t.shape), tuple(y.shape), tuple(y.shape[:-1])))
    return t


def cross_entropy_error(y, t, eps=1e-7):
    """Mean cross entropy of probabilities `y` against labels or one-hot `t`.

    Like the book, a single sample (1-D `y`) is treated as a batch of one and a
    small `eps` guards ``log(0)``.
    """
    xp, y = _float(y)
    if y.ndim == 1:
        y = xp.reshape(y, (1, -1))
        t = backend.asnumpy(t) if not backend.is_array(t) else t
        t = backend.namespace(t).reshape(t, (1, -1) if t.ndim == 1 and t.shape[0] == y.shape[1]
                                         else (1,))
    lab = xp.astype(check_labels(_labels(y, t), y.shape[-1], "cross_entropy_error"), xp.int64)
    p = xp.take_along_axis(y, lab[..., None], axis=-1)[..., 0]
    return scaled(xp, -xp.sum(xp.log(p + eps)), 1.0 / math.prod(p.shape))


def mean_squared_error(y, t):
    """Mean over the batch of ``0.5 * sum((y - t)**2)`` per sample (the book's form)."""
    xp, y = _float(y)
    d = y - _like(t, y)
    n = y.shape[0] if y.ndim > 1 else 1
    return scaled(xp, xp.sum(d * d), 0.5 / n)


def sum_squared_error(y, t):
    xp, y = _float(y)
    d = y - _like(t, y)
    return scaled(xp, xp.sum(d * d), 0.5)


def _like(t, y):
    """`t` as an array of `y`'s dtype on `y`'s device."""
    if not backend.is_array(t):
        t = backend.asnumpy(t)
    t = backend.to_device(t, backend.device_of(y))
    return backend.namespace(t).astype(t, y.dtype)
