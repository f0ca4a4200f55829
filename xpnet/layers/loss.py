"""Loss layers: SoftmaxWithLoss (the book's) and IdentityWithLoss (squared error)."""
from .. import backend
from .. import functions as F
from .base import Layer


def _on_device_of(t, x):
    """Labels or targets `t` (any array, or a list) on `x`'s device."""
    return backend.to_device(t if backend.is_array(t) else backend.asnumpy(t),
                             backend.device_of(x))


class SoftmaxWithLoss(Layer):
    """Softmax + mean cross-entropy. `t`: integer labels (N,) (or (N, 1), as in the book's
    scripts), or targets of shape (N, C): one-hot or soft (rows of class probabilities),
    any numeric dtype.

    The loss is computed from log-softmax (log-sum-exp), so it is exact where the book's
    ``-log(softmax + 1e-7)`` is not, and backward is its exact gradient. The book's form
    stays in `functions.cross_entropy_error`, which takes probabilities."""

    def forward(self, x, t):
        xp = self._check_input(x, ndim=2, what="scores")
        if not backend.is_array(t):
            t = backend.asnumpy(t)
        n, classes = x.shape
        if t.ndim == 2 and tuple(t.shape) == (n, 1) and classes != 1 and \
                backend.namespace(t).isdtype(t.dtype, "integral"):
            t = backend.namespace(t).reshape(t, (n,))          # the book's (N, 1) labels
        tx = backend.namespace(t)
        if tuple(t.shape) == tuple(x.shape) and tx.isdtype(t.dtype, ("numeric", "bool")):
            t = xp.astype(_on_device_of(t, x), x.dtype)
        elif tx.isdtype(t.dtype, "integral") and tuple(t.shape) == (n,):
            F.check_labels(t, classes, "SoftmaxWithLoss")
            # int64 indices (torch's gather wants them) where the device has them (JAX
            # keeps them off unless x64 is on)
            wide = "int64" in backend.device_of(x).dtypes
            t = xp.astype(_on_device_of(t, x), xp.int64 if wide else xp.int32)
        else:
            raise ValueError("SoftmaxWithLoss: labels must be integer class indices of shape (%d,) "
                             "or one-hot/soft targets of shape %s, got dtype %s shape %s"
                             % (n, tuple(x.shape), backend.dtype_name(t.dtype), tuple(t.shape)))
        self._c_t = t
        logp = F.log_softmax(x)
        self._c_y = xp.exp(logp)
        if t.ndim == 2:
            self.loss = F.scaled(xp, -xp.sum(t * logp), 1.0 / n)
        else:
            self.loss = F.scaled(xp, -xp.sum(xp.take_along_axis(logp, t[:, None], axis=1)), 1.0 / n)
        return self.loss

    def backward(self, dout=1):
        y, t = self._saved("y"), self._c_t
        xp = backend.namespace(y)
        if t.ndim == 2:
            # d/dx of -sum(t*log softmax(x)) is y*sum(t) - t (= y - t for one-hot rows)
            dx = y * xp.sum(t, axis=1, keepdims=True) - t
        else:
            classes = xp.arange(y.shape[1], device=backend.placement(y))
            dx = y - xp.astype(t[:, None] == classes[None, :], y.dtype)
        scale = xp.astype(dout, y.dtype) if backend.is_array(dout) else float(dout)
        return dx * (scale / y.shape[0])


class IdentityWithLoss(Layer):
    """Identity output + mean squared error (regression): ``0.5*sum((y-t)^2)/N``."""

    def forward(self, x, t):
        xp = self._check_input(x)
        t = xp.astype(_on_device_of(t, x), x.dtype)
        if tuple(t.shape) != tuple(x.shape):
            raise ValueError("IdentityWithLoss: targets of shape %s don't match outputs %s"
                             % (tuple(t.shape), tuple(x.shape)))
        self._c_d = x - t
        return F.mean_squared_error(x, t)

    def backward(self, dout=1):
        d = self._saved("d")
        return d * (float(dout) / d.shape[0])
