"""Layers with forward/backward, as in the book's ``common/layers.py``.

Every layer keeps its parameters in ``self.params`` and the matching gradients
(after `backward`) in ``self.grads``; the book's attribute names (``W``, ``b``,
``dW``, ``db``, ``gamma``, ``dgamma`` ...) read and write the same arrays.

A layer takes its array namespace from its input and uses standard calls only;
heavy work (ReLU, Affine, convolution, pooling) goes to the kernel provider of
its input (`xpnet.backend.provider`), so a layer never imports an array library
and never asks which one it is running on. It keeps the input's dtype and never
writes into its input or into the incoming gradient.
"""
import math
import warnings

from . import backend
from . import functions as F
from .backend.geometry import conv_output_size, pair
from .validate import fraction, positive_float

__all__ = [
    "DtypeWarning", "Layer", "Affine", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "SoftmaxWithLoss",
    "IdentityWithLoss", "Convolution", "Pooling", "AvgPooling", "Dropout",
    "BatchNormalization", "Flatten", "running_stats", "for_class",
]


class DtypeWarning(UserWarning):
    """An input was cast to its layer's parameter dtype."""


def _param_property(key, grad=False):
    def get(self):
        return (self.grads if grad else self.params).get(key)

    def set(self, value):
        (self.grads if grad else self.params)[key] = value
    return property(get, set)


def for_class(table, layer):
    """The value `table` (class -> value) holds for the nearest class of `layer` in its
    method resolution order, or None: a subclass gets its parent's entry."""
    for cls in type(layer).__mro__:
        if cls in table:
            return table[cls]
    return None


class Layer:
    """Base class. Subclasses set ``params``/``grads`` and may hold ``buffers``
    (non-trained state saved with the parameters, e.g. running statistics).
    What a forward pass keeps for backward lives in attributes named ``_c_*``."""

    #: False for a net's first layer: the gradient w.r.t. the data is not needed.
    need_input_grad = True
    #: True for layers whose CPU work is mostly copies (im2col, pooling): a net holding
    #: one runs its passes in the provider's ``pass_scope(heavy=True)``.
    cpu_threaded = False
    #: True for elementwise activations (ReLU, sigmoid ...): where `explain` reads how
    #: strongly a channel fires.
    activation = False
    # Export hooks a new layer may define (the built-in layers' translations live in
    # `xpnet.onnx` and `xpnet.torch_io`, found through the class hierarchy, so a
    # subclass exports like its parent):
    #   onnx_nodes(self, graph, index, tag): append the layer's ONNX nodes to `graph`;
    #   torch_module(self, nn, spatial): the empty ``torch.nn`` module computing the same.

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}

    @property
    def name(self):
        return type(self).__name__

    def forward(self, x, train_flg=False):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def to(self, device):
        """Move parameters, gradients and buffers to `device` (in place); returns self."""
        for d in (self.params, self.grads, self.buffers):
            for k, v in list(d.items()):
                if v is not None:
                    d[k] = backend.to_device(v, device)
        self._clear_cache()
        return self

    def _clear_cache(self):
        for k in [k for k in vars(self) if k.startswith("_c_")]:
            delattr(self, k)
        if hasattr(self, "_workspace"):
            self._workspace = {}

    def _saved(self, name):
        """What the last forward kept under ``_c_<name>`` (backward needs a forward first)."""
        v = getattr(self, "_c_" + name, None)
        if v is None:
            raise RuntimeError("%s.backward: call forward first (nothing is kept from a "
                               "forward pass)" % self.name)
        return v

    # -- checks: errors that name the layer and say what was expected

    def _check_input(self, x, ndim=None, what="input"):
        if not backend.is_array(x):
            raise TypeError("%s: %s must be an array, got %s" % (self.name, what, type(x).__name__))
        if not backend.is_floating(x):
            raise TypeError("%s: %s must be a floating-point array, got dtype %s"
                            % (self.name, what, backend.dtype_name(x.dtype)))
        p = next((v for v in self.params.values() if v is not None), None)
        if p is not None:
            if backend.device_of(p) != backend.device_of(x):
                raise ValueError("%s: %s is on %s but the parameters are on %s; move one with "
                                 "xpnet.to_device(...)" % (self.name, what, backend.device_of(x),
                                                           backend.device_of(p)))
        ndims = ndim if isinstance(ndim, tuple) else (ndim,)
        if ndim is not None and x.ndim not in ndims:
            raise ValueError("%s: expected a %s-D %s, got shape %s"
                             % (self.name, " or ".join(map(str, ndims)), what, tuple(x.shape)))
        return backend.namespace(x)

    def _match_dtype(self, x):
        """`x` in the parameters' dtype. The book's classes make float64 parameters and
        its loaders float32 data, which NumPy mixes silently: here the input is cast,
        with a warning (once per call site) so the mix doesn't go unseen."""
        p = next((v for v in self.params.values() if v is not None), None)
        if p is None or p.dtype == x.dtype:
            return x
        pd, xd = backend.dtype_name(p.dtype), backend.dtype_name(x.dtype)
        warnings.warn("%s: input has dtype %s but the parameters are %s; the input is cast to "
                      "%s (make both one dtype to avoid the copy)" % (self.name, xd, pd, pd),
                      DtypeWarning, stacklevel=3)
        return backend.namespace(x).astype(x, p.dtype)

    def _check_dout(self, dout, expected_shape):
        if tuple(dout.shape) != tuple(expected_shape):
            raise ValueError("%s.backward: dout has shape %s, expected %s (the forward output's)"
                             % (self.name, tuple(dout.shape), tuple(expected_shape)))

    def __repr__(self):
        shapes = ", ".join("%s=%s" % (k, tuple(v.shape)) for k, v in self.params.items()
                           if v is not None)
        return "%s(%s)" % (self.name, shapes)


# ------------------------------------------------------------------ activations

class Relu(Layer):
    activation = True

    def forward(self, x, train_flg=False):
        self._check_input(x)
        out, self._c_mask = backend.provider(x).relu_forward(x)
        return out

    def backward(self, dout):
        mask = self._saved("mask")
        self._check_dout(dout, mask.shape)
        return backend.provider(dout).relu_backward(dout, mask)


class LeakyRelu(Layer):
    """``y = x`` for x > 0, else ``alpha * x``."""
    activation = True

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = fraction(alpha, "LeakyRelu: alpha")

    def forward(self, x, train_flg=False):
        xp = self._check_input(x)
        self._c_mask = mask = x > 0
        return xp.where(mask, x, x * self.alpha)

    def backward(self, dout):
        mask = self._saved("mask")
        self._check_dout(dout, mask.shape)
        return backend.namespace(dout).where(mask, dout, dout * self.alpha)

    def __repr__(self):
        return "LeakyRelu(%g)" % self.alpha


class Sigmoid(Layer):
    activation = True

    def forward(self, x, train_flg=False):
        self._check_input(x)
        self._c_out = out = F.sigmoid(x)
        return out

    def backward(self, dout):
        out = self._saved("out")
        self._check_dout(dout, out.shape)
        return dout * (1.0 - out) * out


class Tanh(Layer):
    activation = True

    def forward(self, x, train_flg=False):
        xp = self._check_input(x)
        self._c_out = out = xp.tanh(x)
        return out

    def backward(self, dout):
        out = self._saved("out")
        self._check_dout(dout, out.shape)
        return dout * (1.0 - out * out)


class Flatten(Layer):
    def forward(self, x, train_flg=False):
        xp = self._check_input(x)
        self._c_shape = x.shape
        return xp.reshape(x, (x.shape[0], -1))

    def backward(self, dout):
        return backend.namespace(dout).reshape(dout, self._saved("shape"))


# ------------------------------------------------------------------ affine

class Affine(Layer):
    """``y = x @ W + b``; N-D input is flattened to (N, -1) and dx restored to its shape."""
    W = _param_property("W")
    b = _param_property("b")
    dW = _param_property("W", grad=True)
    db = _param_property("b", grad=True)

    def __init__(self, W, b):
        super().__init__()
        if W.ndim != 2:
            raise ValueError("Affine: W must be 2-D (in_features, out_features), got shape %s"
                             % (tuple(W.shape),))
        if b is not None and tuple(b.shape) != (W.shape[1],):
            raise ValueError("Affine: b must have shape (%d,), got %s" % (W.shape[1], tuple(b.shape)))
        self.params = {"W": W, "b": b}
        self.grads = {"W": None, "b": None}

    def forward(self, x, train_flg=False):
        xp = self._check_input(x)
        if x.ndim < 1:
            raise ValueError("Affine: input must have a batch axis, got a scalar")
        x = self._match_dtype(x)
        W = self.params["W"]
        x2 = x if x.ndim == 2 else xp.reshape(x, (x.shape[0], -1))
        if x2.shape[1] != W.shape[0]:
            raise ValueError("Affine: input of shape %s has %d features per sample, W expects %d"
                             % (tuple(x.shape), x2.shape[1], W.shape[0]))
        self._c_shape = x.shape
        self._c_x = x2
        return backend.provider(x).affine_forward(x2, W, self.params["b"])

    def backward(self, dout):
        x2 = self._saved("x")
        W = self.params["W"]
        self._check_dout(dout, (x2.shape[0], W.shape[1]))
        dx, self.grads["W"], db = backend.provider(dout).affine_backward(
            dout, x2, W, self.need_input_grad)
        if self.params["b"] is not None:
            self.grads["b"] = db
        return None if dx is None else backend.namespace(dx).reshape(dx, self._c_shape)


# ------------------------------------------------------------------ loss layers

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
            self.loss = -xp.sum(t * logp) / n
        else:
            self.loss = -xp.sum(xp.take_along_axis(logp, t[:, None], axis=1)) / n
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


# ------------------------------------------------------------------ convolution / pooling

class Convolution(Layer):
    """2-D convolution (im2col + one matrix product). W: (FN, C, FH, FW), b: (FN,)."""
    cpu_threaded = True
    W = _param_property("W")
    b = _param_property("b")
    dW = _param_property("W", grad=True)
    db = _param_property("b", grad=True)

    def __init__(self, W, b, stride=1, pad=0):
        super().__init__()
        if W.ndim != 4:
            raise ValueError("Convolution: W must be 4-D (FN, C, FH, FW), got shape %s"
                             % (tuple(W.shape),))
        if b is not None and tuple(b.shape) != (W.shape[0],):
            raise ValueError("Convolution: b must have shape (%d,), got %s"
                             % (W.shape[0], tuple(b.shape)))
        self.params = {"W": W, "b": b}
        self.grads = {"W": None, "b": None}
        self.stride = pair(stride, "Convolution stride")
        self.pad = pair(pad, "Convolution pad")
        self._workspace = {}       # the provider's reusable buffers for this layer
        if min(self.stride) < 1 or min(self.pad) < 0:
            raise ValueError("Convolution: stride must be >= 1 and pad >= 0, got stride=%r pad=%r"
                             % (stride, pad))

    def output_shape(self, input_shape):
        C, H, W_ = input_shape
        FN, _, FH, FW = self.params["W"].shape
        return (FN, conv_output_size(H, FH, self.stride[0], self.pad[0], self.name),
                conv_output_size(W_, FW, self.stride[1], self.pad[1], self.name))

    def forward(self, x, train_flg=False):
        self._check_input(x, ndim=4)
        x = self._match_dtype(x)
        W = self.params["W"]
        if x.shape[1] != W.shape[1]:
            raise ValueError("Convolution: input has %d channels (shape %s), W expects %d"
                             % (x.shape[1], tuple(x.shape), W.shape[1]))
        self._c_kernels = k = backend.provider(x)
        out, self._c_ctx = k.conv2d_forward(x, W, self.params["b"], self.stride, self.pad,
                                            self._workspace)
        self._c_shape = x.shape
        self._c_oshape = out.shape
        return out

    def backward(self, dout):
        k = self._saved("kernels")
        self._check_dout(dout, self._c_oshape)
        dx, dW, db = k.conv2d_backward(dout, self._c_ctx, self.params["W"], self._c_shape,
                                       self.stride, self.pad, self.need_input_grad,
                                       self._workspace)
        self.grads["W"] = dW
        if self.params["b"] is not None:
            self.grads["b"] = db
        return dx


class Pooling(Layer):
    """Max pooling (``mode='avg'`` for average). Padding is -inf for max and counts
    in the output size; gradients go to the first maximum of each window."""
    cpu_threaded = True

    def __init__(self, pool_h, pool_w, stride=2, pad=0, mode="max"):
        super().__init__()
        if mode not in ("max", "avg"):
            raise ValueError("Pooling: mode must be 'max' or 'avg', got %r" % (mode,))
        self.pool_h, self.pool_w = pair((pool_h, pool_w), "Pooling window (pool_h, pool_w)")
        if self.pool_h < 1 or self.pool_w < 1:
            raise ValueError("Pooling: window must be >= 1, got (%r, %r)" % (pool_h, pool_w))
        self.stride = pair(stride, "Pooling stride")
        self.pad = pair(pad, "Pooling pad")
        if min(self.stride) < 1 or min(self.pad) < 0:
            raise ValueError("Pooling: stride must be >= 1 and pad >= 0, got stride=%r pad=%r"
                             % (stride, pad))
        # Checked here too so a bad net fails when built, not at its first batch.
        if 2 * self.pad[0] > self.pool_h or 2 * self.pad[1] > self.pool_w:
            raise ValueError("Pooling: pad %r must be at most half the window (%d, %d), or some "
                             "windows would see only padding" % (pad, self.pool_h, self.pool_w))
        self.mode = mode

    def output_shape(self, input_shape):
        C, H, W = input_shape
        return (C, conv_output_size(H, self.pool_h, self.stride[0], self.pad[0], self.name),
                conv_output_size(W, self.pool_w, self.stride[1], self.pad[1], self.name))

    def forward(self, x, train_flg=False):
        self._check_input(x, ndim=4)
        self._c_kernels = k = backend.provider(x)
        self._c_shape = x.shape
        window = (self.pool_h, self.pool_w, self.stride, self.pad)
        if self.mode == "max":
            out, self._c_ctx = k.max_pool_forward(x, *window)
        else:
            out = k.avg_pool_forward(x, *window)
        self._c_oshape = out.shape
        return out

    def backward(self, dout):
        k = self._saved("kernels")
        self._check_dout(dout, self._c_oshape)
        window = (self.pool_h, self.pool_w, self.stride, self.pad)
        if self.mode == "max":
            return k.max_pool_backward(dout, self._c_ctx, self._c_shape, *window)
        return k.avg_pool_backward(dout, self._c_shape, *window)

    def __repr__(self):
        return "Pooling(%d, %d, stride=%s, pad=%s, mode=%r)" % (
            self.pool_h, self.pool_w, self.stride, self.pad, self.mode)


class AvgPooling(Pooling):
    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        super().__init__(pool_h, pool_w, stride, pad, mode="avg")


# ------------------------------------------------------------------ regularization

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


def __getattr__(name):      # the synchronized BatchNorm, loaded when asked for by name
    if name == "SyncBatchNormalization":
        from .sync_batchnorm import SyncBatchNormalization
        return SyncBatchNormalization
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
