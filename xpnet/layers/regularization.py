"""Regularization layers: Dropout and BatchNormalization (chapter 6)."""
import math

from .. import backend
from ..validate import fraction, positive_float
from .base import Layer, _param_property


class Dropout(Layer):
    """Inverted dropout: in training each unit is zeroed with probability
    `dropout_ratio` and survivors are scaled by ``1/(1-ratio)``, so evaluation is
    the identity (the book scales at test time instead; the expectations agree)."""

    #: ``draw(shape, like)`` giving uniform [0, 1) numbers; None: `backend.uniform`. A
    #: compiled step sets it, for its trace, to draw from the random key it carries.
    draw = None

    def __init__(self, dropout_ratio=0.5):
        super().__init__()
        self.dropout_ratio = fraction(dropout_ratio, "Dropout: dropout_ratio")

    def forward(self, x, train_flg=True):
        xp = self._check_input(x)
        if not train_flg or self.dropout_ratio == 0.0:
            self._c_mask = None
            return x
        u = (self.draw or backend.uniform)(x.shape, like=x)
        # The scaled mask doubles as the backward factor.
        keep = xp.astype(u >= self.dropout_ratio, x.dtype)
        self._c_mask = mask = keep * (1.0 / (1.0 - self.dropout_ratio))
        return x * mask

    def backward(self, dout):
        if not hasattr(self, "_c_mask"):
            raise RuntimeError("Dropout.backward: call forward first (nothing is kept from a "
                               "forward pass)")
        if self._c_mask is None:           # evaluation mode, or ratio 0: the identity
            return dout
        self._check_dout(dout, self._c_mask.shape)
        return dout * self._c_mask

    def __repr__(self):
        return "Dropout(%g)" % self.dropout_ratio


def running_stats(running_mean, running_var, mean, var, count, momentum):
    """BatchNorm's running statistics after one batch, as new arrays:
    ``momentum * running + (1 - momentum) * batch``, with the batch variance `var`
    (biased, over `count` values per feature) made unbiased."""
    mo = float(momentum)
    return (running_mean * mo + (1.0 - mo) * mean,
            running_var * mo + (1.0 - mo) * (count / (count - 1.0)) * var)


class BatchNormalization(Layer):
    """Batch normalization for (N, D) and, per channel, for (N, C, H, W) inputs.

    ``running = momentum * running + (1 - momentum) * batch`` (the book's
    convention: 0.9 here is PyTorch's 0.1). The running variance is unbiased and
    starts at 1."""
    gamma = _param_property("gamma")
    beta = _param_property("beta")
    dgamma = _param_property("gamma", grad=True)
    dbeta = _param_property("beta", grad=True)

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None, eps=1e-5):
        super().__init__()
        if gamma.ndim != 1 or tuple(gamma.shape) != tuple(beta.shape):
            raise ValueError("BatchNormalization: gamma and beta must be 1-D of equal shape, got "
                             "%s and %s" % (tuple(gamma.shape), tuple(beta.shape)))
        momentum = fraction(momentum, "BatchNormalization: momentum", closed=True)
        eps = positive_float(eps, "BatchNormalization: eps")
        xp = backend.namespace(gamma)
        self.params = {"gamma": gamma, "beta": beta}
        self.grads = {"gamma": None, "beta": None}
        if running_mean is None:
            running_mean = xp.zeros_like(gamma)
        if running_var is None:
            running_var = xp.ones_like(gamma)
        self.buffers = {"running_mean": running_mean, "running_var": running_var}
        self.momentum = float(momentum)
        self.eps = float(eps)

    running_mean = property(lambda s: s.buffers["running_mean"],
                            lambda s, v: s.buffers.__setitem__("running_mean", v))
    running_var = property(lambda s: s.buffers["running_var"],
                           lambda s, v: s.buffers.__setitem__("running_var", v))

    def update_running_stats(self, mean, var, count):
        """Fold one batch's per-feature `mean` and biased `var` (over `count` values per
        feature) into the running statistics; the buffers are rebound to new arrays."""
        b = self.buffers
        b["running_mean"], b["running_var"] = running_stats(
            b["running_mean"], b["running_var"], mean, var, count, self.momentum)

    def _axes(self, x):
        D = self.params["gamma"].shape[0]
        if x.ndim == 2 and x.shape[1] == D:
            return (0,), (1, D)
        if x.ndim == 4 and x.shape[1] == D:
            return (0, 2, 3), (1, D, 1, 1)
        raise ValueError("BatchNormalization: expected input (N, %d) or (N, %d, H, W), got shape %s"
                         % (D, D, tuple(x.shape)))

    def forward(self, x, train_flg=True):
        xp = self._check_input(x)
        x = self._match_dtype(x)
        axes, bshape = self._axes(x)
        g = xp.reshape(self.params["gamma"], bshape)
        b = xp.reshape(self.params["beta"], bshape)
        if train_flg:
            m = math.prod(x.shape) // x.shape[1]
            if m < 2:
                raise ValueError("BatchNormalization: training needs more than one value per "
                                 "feature, got input shape %s" % (tuple(x.shape),))
            mu = xp.mean(x, axis=axes, keepdims=True)
            xc = x - mu
            var = xp.mean(xc * xc, axis=axes, keepdims=True)
            std = xp.sqrt(var + self.eps)
            xn = xc / std
            self.update_running_stats(xp.reshape(mu, (-1,)), xp.reshape(var, (-1,)), m)
            self._c_cache = (xn, std, axes, bshape)
        else:
            mean = xp.reshape(self.buffers["running_mean"], bshape)
            var = xp.reshape(self.buffers["running_var"], bshape)
            xn = (x - mean) / xp.sqrt(var + self.eps)
            self._c_cache = None
        return g * xn + b

    def backward(self, dout):
        if getattr(self, "_c_cache", None) is None:
            raise RuntimeError("BatchNormalization.backward needs a forward with train_flg=True")
        xn, std, axes, bshape = self._c_cache
        self._check_dout(dout, xn.shape)
        xp = backend.namespace(dout)
        self.grads["beta"] = xp.sum(dout, axis=axes)
        self.grads["gamma"] = xp.sum(dout * xn, axis=axes)
        dxn = dout * xp.reshape(self.params["gamma"], bshape)
        # dx = (dxn - mean(dxn) - xn * mean(dxn * xn)) / std
        dx = dxn - xp.mean(dxn, axis=axes, keepdims=True)
        dx = dx - xn * xp.mean(dxn * xn, axis=axes, keepdims=True)
        return dx / std

    def __repr__(self):
        return "BatchNormalization(%d, momentum=%g)" % (self.params["gamma"].shape[0], self.momentum)
