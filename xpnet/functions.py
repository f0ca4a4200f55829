"""Pure array math of the book's chapters 3-5, for NumPy and CuPy alike.

Each function takes `xp` from its input, keeps the input's dtype, and never
writes into its arguments.
"""
from .backend import get_array_module

__all__ = [
    "step_function", "identity_function", "sigmoid", "sigmoid_grad", "tanh", "relu",
    "relu_grad", "softmax", "log_softmax", "cross_entropy_error", "mean_squared_error",
    "sum_squared_error", "one_hot",
]


def _float(x):
    xp = get_array_module(x)
    x = xp.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(xp.float32)
    return xp, x


def step_function(x):
    xp, x = _float(x)
    return (x > 0).astype(x.dtype)


def identity_function(x):
    return x


def sigmoid(x):
    # tanh form: no overflow warning for large negative x, same value
    xp, x = _float(x)
    half = x.dtype.type(0.5)
    return xp.tanh(x * half) * half + half


def sigmoid_grad(x):
    s = sigmoid(x)
    return (1 - s) * s


def tanh(x):
    xp, x = _float(x)
    return xp.tanh(x)


def relu(x):
    xp, x = _float(x)
    return xp.maximum(x, x.dtype.type(0))


def relu_grad(x):
    xp, x = _float(x)
    return (x > 0).astype(x.dtype)


def softmax(x, axis=-1):
    """Numerically stable softmax along `axis` (any batch shape)."""
    xp, x = _float(x)
    e = x - x.max(axis=axis, keepdims=True)
    xp.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(x, axis=-1):
    xp, x = _float(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


def one_hot(t, num_classes, dtype=None):
    """(N,) integer labels -> (N, num_classes) one-hot, built by comparison (no fancy setitem)."""
    xp = get_array_module(t)
    t = xp.asarray(t)
    return (t[..., None] == xp.arange(num_classes)).astype(dtype or xp.float32)


def _labels(y, t):
    """Integer labels from `t` given as labels or one-hot rows of `y`'s shape."""
    xp = get_array_module(y, t)
    t = xp.asarray(t)
    if t.shape == y.shape and t.ndim >= 1 and y.ndim >= 1 and t.dtype.kind == "f":
        return t.argmax(axis=-1)
    if t.size == y.size and t.ndim == y.ndim:  # one-hot given as ints
        return t.argmax(axis=-1)
    if t.dtype.kind not in "iub":
        raise TypeError("labels must be integers or one-hot rows shaped like the "
                        "predictions %s; got dtype %s shape %s" % (y.shape, t.dtype, t.shape))
    if t.shape != y.shape[:-1]:
        raise ValueError("labels of shape %s don't match predictions of shape %s: expected %s"
                         % (t.shape, y.shape, y.shape[:-1]))
    return t


def cross_entropy_error(y, t, eps=1e-7):
    """Mean cross entropy of probabilities `y` against labels or one-hot `t`.

    Like the book, a single sample (1-D `y`) is treated as a batch of one and a
    small `eps` guards ``log(0)``.
    """
    xp, y = _float(y)
    if y.ndim == 1:
        y = y.reshape(1, -1)
        t = xp.asarray(t).reshape(1, -1) if xp.asarray(t).size == y.size \
            else xp.asarray(t).reshape(1)
    lab = _labels(y, t)
    p = xp.take_along_axis(y, lab[..., None].astype(xp.int64), axis=-1)[..., 0]
    n = p.size
    return -xp.log(p + y.dtype.type(eps)).sum() / y.dtype.type(n)


def mean_squared_error(y, t):
    """Mean over the batch of ``0.5 * sum((y - t)**2)`` per sample (the book's form)."""
    xp, y = _float(y)
    d = y - xp.asarray(t, dtype=y.dtype)
    n = y.shape[0] if y.ndim > 1 else 1
    return (d * d).sum() * y.dtype.type(0.5) / y.dtype.type(n)


def sum_squared_error(y, t):
    xp, y = _float(y)
    d = y - xp.asarray(t, dtype=y.dtype)
    return (d * d).sum() * y.dtype.type(0.5)
