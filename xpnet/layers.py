"""Layers with forward/backward, as in the book's ``common/layers.py``.

Every layer keeps its parameters in ``self.params`` and the matching
gradients (after `backward`) in ``self.grads``; the book's attribute names
(``W``, ``b``, ``dW``, ``db``, ``gamma``, ``dgamma`` ...) read and write the
same arrays. A layer takes ``xp`` from its input, keeps the input's dtype, and
never writes into its input or into the incoming gradient.
"""
from . import conv as _conv
from .backend import cpu_threads as parallel
from . import functions as F
from .backend import (device_of, device_rng, elementwise_kernel, get_array_module,
                      is_gpu_array, to_device)

__all__ = [
    "Layer", "Affine", "Relu", "Sigmoid", "Tanh", "SoftmaxWithLoss", "IdentityWithLoss",
    "Convolution", "Pooling", "AvgPooling", "Dropout", "BatchNormalization", "Flatten",
]


def _param_property(key, grad=False):
    def get(self):
        return (self.grads if grad else self.params).get(key)

    def set(self, value):
        (self.grads if grad else self.params)[key] = value
    return property(get, set)


class Layer:
    """Base class. Subclasses set ``params``/``grads`` and may hold ``buffers``
    (non-trained state saved with the parameters, e.g. running statistics)."""

    #: False for a net's first layer: the gradient w.r.t. the data is not needed.
    need_input_grad = True
    #: True where the CPU work is mostly xpnet's own threads (im2col, pooling), so a
    #: net holding such layers keeps BLAS single-threaded (`xpnet.parallel`).
    cpu_threaded = False

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
                    d[k] = to_device(v, device)
        self._clear_cache()
        return self

    def _clear_cache(self):
        for k in [k for k in vars(self) if k.startswith("_c_")]:
            setattr(self, k, None)
        if hasattr(self, "_workspace"):
            self._workspace = {}

    # -- checks: errors that name the layer and say what was expected

    def _check_input(self, x, ndim=None, what="input"):
        xp = get_array_module(x)
        if not hasattr(x, "dtype") or not hasattr(x, "shape"):
            raise TypeError("%s: %s must be an array, got %s" % (self.name, what, type(x).__name__))
        if x.dtype.kind != "f":
            raise TypeError("%s: %s must be a floating-point array, got dtype %s"
                            % (self.name, what, x.dtype))
        p = next(iter(self.params.values()), None)
        if p is not None:
            if is_gpu_array(p) != is_gpu_array(x):
                raise ValueError("%s: %s is on %s but the parameters are on %s; move one with "
                                 "xpnet.to_device(...)" % (self.name, what, device_of(x),
                                                           device_of(p)))
            if p.dtype != x.dtype:
                raise TypeError("%s: %s has dtype %s but the parameters are %s; cast with "
                                ".astype(%s)" % (self.name, what, x.dtype, p.dtype, p.dtype))
        if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
            raise ValueError("%s: expected a %s-D %s, got shape %s"
                             % (self.name, " or ".join(map(str, ndim)) if isinstance(ndim, tuple)
                                else ndim, what, tuple(x.shape)))
        return xp

    def _check_dout(self, dout, expected_shape):
        if tuple(dout.shape) != tuple(expected_shape):
            raise ValueError("%s.backward: dout has shape %s, expected %s (the forward output's)"
                             % (self.name, tuple(dout.shape), tuple(expected_shape)))

    def __repr__(self):
        shapes = ", ".join("%s=%s" % (k, tuple(v.shape)) for k, v in self.params.items())
        return "%s(%s)" % (self.name, shapes)


# ------------------------------------------------------------------ activations

_MIN_ELEMENTS = 1 << 18    # per CPU thread for memory-bound work
_MIN_FLOPS = 1 << 21       # per CPU thread for a GEMM


def _batch_parallel(x, part):
    """Run ``part(i, start, stop)`` over slices of the batch axis, on CPU threads when
    `x` is big enough (see `xpnet.parallel`)."""
    n = x.shape[0] if x.ndim else 1
    return parallel.run(parallel.plan(n, x.size, _MIN_ELEMENTS, get_array_module(x)), part)


_relu_bwd = ("T y, T dy", "T dx", "dx = y > (T)0 ? dy : (T)0", "xpnet_relu_bwd")


class Relu(Layer):
    def forward(self, x, train_flg=False):
        xp = self._check_input(x)
        if is_gpu_array(x):
            self._c_mask = out = xp.maximum(x, x.dtype.type(0))
            return out
        # NumPy multiplies by a bool mask ~10x faster than np.where selects.
        out = xp.empty_like(x)
        mask = self._c_mask = xp.empty(x.shape, dtype=bool)
        x1, out1, mask1 = (a.reshape(1) if a.ndim == 0 else a for a in (x, out, mask))

        def part(i, a, e):
            xp.maximum(x1[a:e], x.dtype.type(0), out=out1[a:e])
            xp.greater(out1[a:e], 0, out=mask1[a:e])

        _batch_parallel(x1, part)
        return out

    def backward(self, dout):
        mask = self._c_mask
        self._check_dout(dout, mask.shape)
        xp = get_array_module(dout)
        if is_gpu_array(mask):
            return elementwise_kernel(*_relu_bwd)(mask, dout)
        dx = xp.empty(dout.shape, dtype=xp.result_type(dout.dtype, mask.dtype))
        d1, m1, dx1 = (a.reshape(1) if a.ndim == 0 else a for a in (dout, mask, dx))
        _batch_parallel(d1, lambda i, a, e: xp.multiply(d1[a:e], m1[a:e], out=dx1[a:e]))
        return dx


class Sigmoid(Layer):
    def forward(self, x, train_flg=False):
        self._check_input(x)
        self._c_out = out = F.sigmoid(x)
        return out

    def backward(self, dout):
        out = self._c_out
        self._check_dout(dout, out.shape)
        return dout * (1 - out) * out


class Tanh(Layer):
    def forward(self, x, train_flg=False):
        xp = self._check_input(x)
        self._c_out = out = xp.tanh(x)
        return out

    def backward(self, dout):
        out = self._c_out
        self._check_dout(dout, out.shape)
        return dout * (1 - out * out)


class Flatten(Layer):
    def forward(self, x, train_flg=False):
        self._c_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._c_shape)


# ------------------------------------------------------------------ affine

def _gemm_plan(n, flops, xp):
    if parallel.blas_threads_preferred_here():
        return [(0, n)]
    return parallel.plan(n, flops, _MIN_FLOPS, xp)


def _own_gemm_threads(xp):
    # With xpnet's threads on, its GEMMs keep BLAS at one thread and split the batch
    # themselves: a BLAS call that threads wakes BLAS workers, which then spin for a
    # while and slow the threaded layers that follow (book-style loops over a convnet's
    # layers). Inside an MLP's pass (`parallel.blas_threads_preferred`) BLAS threads.
    return parallel.blas_single_threaded(xp.__name__ == "numpy"
                                         and not parallel.blas_threads_preferred_here())


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
        W = self.params["W"]
        x2 = x.reshape(x.shape[0], -1) if x.ndim != 2 else x
        if x2.shape[1] != W.shape[0]:
            raise ValueError("Affine: input of shape %s has %d features per sample, W expects %d"
                             % (tuple(x.shape), x2.shape[1], W.shape[0]))
        self._c_shape = x.shape
        self._c_x = x2
        with _own_gemm_threads(xp):
            return self._forward(xp, x2, W)

    def _forward(self, xp, x2, W):
        b = self.params["b"]
        N, K = x2.shape
        ranges = _gemm_plan(N, N * K * W.shape[1], xp)
        if len(ranges) == 1:
            out = xp.dot(x2, W)
            if b is not None:
                out += b
            return out
        out = xp.empty((N, W.shape[1]), dtype=xp.result_type(x2.dtype, W.dtype))

        def part(i, a, e):
            xp.dot(x2[a:e], W, out=out[a:e])
            if b is not None:
                out[a:e] += b

        parallel.run(ranges, part)
        return out

    def backward(self, dout):
        xp = get_array_module(dout)
        x2 = self._c_x
        W = self.params["W"]
        self._check_dout(dout, (x2.shape[0], W.shape[1]))
        with _own_gemm_threads(xp):
            return self._backward(xp, x2, W, dout)

    def _backward(self, xp, x2, W, dout):
        has_b = self.params["b"] is not None
        N, K = x2.shape
        ranges = _gemm_plan(N, N * K * W.shape[1], xp)
        if len(ranges) == 1:
            self.grads["W"] = xp.dot(x2.T, dout)
            if has_b:
                self.grads["b"] = dout.sum(axis=0)
            if not self.need_input_grad:
                return None
            return xp.dot(dout, W.T).reshape(self._c_shape)
        dx = (xp.empty((N, K), dtype=xp.result_type(dout.dtype, W.dtype))
              if self.need_input_grad else None)

        def part(i, a, e):
            if dx is not None:
                xp.dot(dout[a:e], W.T, out=dx[a:e])
            return xp.dot(x2[a:e].T, dout[a:e]), dout[a:e].sum(axis=0)

        parts = parallel.run(ranges, part)
        dW, db = parts[0]
        for p_dW, p_db in parts[1:]:
            dW = dW + p_dW
            db = db + p_db
        self.grads["W"] = dW
        if has_b:
            self.grads["b"] = db
        return None if dx is None else dx.reshape(self._c_shape)


# ------------------------------------------------------------------ loss layers

class SoftmaxWithLoss(Layer):
    """Softmax + mean cross-entropy. `t`: integer labels (N,), or targets of shape (N, C):
    one-hot or soft (rows of class probabilities), any numeric dtype."""

    def forward(self, x, t):
        xp = self._check_input(x, ndim=2, what="scores")
        t = to_device(t, device_of(x)) if is_gpu_array(x) != is_gpu_array(t) else t
        if t.shape == x.shape and t.dtype.kind in "fiub":
            t = t.astype(x.dtype, copy=False)
        elif t.dtype.kind not in "iu" or t.shape != (x.shape[0],):
            raise ValueError("SoftmaxWithLoss: labels must be integer class indices of shape (%d,) "
                             "or one-hot/soft targets of shape %s, got dtype %s shape %s"
                             % (x.shape[0], tuple(x.shape), t.dtype, tuple(t.shape)))
        self._c_t = t
        y = F.softmax(x)
        self._c_y = y
        eps = y.dtype.type(1e-7)
        n = y.dtype.type(x.shape[0])
        if t.ndim == 2:
            self.loss = -(t * xp.log(y + eps)).sum() / n
        else:
            p = xp.take_along_axis(y, t[:, None].astype(xp.intp, copy=False), axis=1)
            self.loss = -xp.log(p + eps).sum() / n
        return self.loss

    def backward(self, dout=1):
        xp = get_array_module(self._c_y)
        y, t = self._c_y, self._c_t
        n = y.shape[0]
        if t.ndim == 2:
            # d/dx of -sum(t*log softmax(x)) is y*sum(t) - t (= y - t for one-hot rows)
            dx = y * t.sum(axis=1, keepdims=True) - t
        else:
            dx = y - (t[:, None] == xp.arange(y.shape[1]))
        dx *= y.dtype.type(1.0 / n) * (y.dtype.type(dout) if not hasattr(dout, "shape")
                                       else dout.astype(y.dtype))
        return dx


class IdentityWithLoss(Layer):
    """Identity output + mean squared error (regression): ``0.5*sum((y-t)^2)/N``."""

    def forward(self, x, t):
        xp = self._check_input(x)
        t = xp.asarray(to_device(t, device_of(x)), dtype=x.dtype)
        if t.shape != x.shape:
            raise ValueError("IdentityWithLoss: targets of shape %s don't match outputs %s"
                             % (tuple(t.shape), tuple(x.shape)))
        self._c_d = x - t
        return F.mean_squared_error(x, t)

    def backward(self, dout=1):
        d = self._c_d
        return d * d.dtype.type(float(dout) / d.shape[0])


# ------------------------------------------------------------------ convolution / pooling

class Convolution(Layer):
    """2-D convolution by im2col + one GEMM. W: (FN, C, FH, FW), b: (FN,)."""
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
        self.stride = _conv._pair(stride, "Convolution stride")
        self.pad = _conv._pair(pad, "Convolution pad")
        self._workspace = {}
        if min(self.stride) < 1 or min(self.pad) < 0:
            raise ValueError("Convolution: stride must be >= 1 and pad >= 0, got stride=%r pad=%r"
                             % (stride, pad))

    def output_shape(self, input_shape):
        C, H, W_ = input_shape
        FN, _, FH, FW = self.params["W"].shape
        return (FN, _conv.conv_output_size(H, FH, self.stride[0], self.pad[0], self.name),
                _conv.conv_output_size(W_, FW, self.stride[1], self.pad[1], self.name))

    def forward(self, x, train_flg=False):
        self._check_input(x, ndim=4)
        W = self.params["W"]
        if x.shape[1] != W.shape[1]:
            raise ValueError("Convolution: input has %d channels (shape %s), W expects %d"
                             % (x.shape[1], tuple(x.shape), W.shape[1]))
        out, self._c_col = _conv.conv2d_forward(x, W, self.params["b"], self.stride, self.pad,
                                                self._workspace)
        self._c_shape = x.shape
        self._c_oshape = out.shape
        return out

    def backward(self, dout):
        self._check_dout(dout, self._c_oshape)
        dx, dW, db = _conv.conv2d_backward(dout, self._c_col, self.params["W"], self._c_shape,
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
        self.pool_h, self.pool_w = int(pool_h), int(pool_w)
        if self.pool_h < 1 or self.pool_w < 1:
            raise ValueError("Pooling: window must be >= 1, got (%r, %r)" % (pool_h, pool_w))
        self.stride = _conv._pair(stride, "Pooling stride")
        self.pad = _conv._pair(pad, "Pooling pad")
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
        return (C, _conv.conv_output_size(H, self.pool_h, self.stride[0], self.pad[0], self.name),
                _conv.conv_output_size(W, self.pool_w, self.stride[1], self.pad[1], self.name))

    def forward(self, x, train_flg=False):
        self._check_input(x, ndim=4)
        self._c_shape = x.shape
        if self.mode == "max":
            out, self._c_arg = _conv.max_pool_forward(x, self.pool_h, self.pool_w, self.stride,
                                                      self.pad)
            self._c_out = out
        else:
            out = _conv.avg_pool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self._c_oshape = out.shape
        return out

    def backward(self, dout):
        self._check_dout(dout, self._c_oshape)
        if self.mode == "max":
            return _conv.max_pool_backward(dout, self._c_arg, self._c_shape, self.pool_h,
                                           self.pool_w, self.stride, self.pad, y=self._c_out)
        return _conv.avg_pool_backward(dout, self._c_shape, self.pool_h, self.pool_w,
                                       self.stride, self.pad)

    def __repr__(self):
        return "Pooling(%d, %d, stride=%s, pad=%s, mode=%r)" % (
            self.pool_h, self.pool_w, self.stride, self.pad, self.mode)


class AvgPooling(Pooling):
    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        super().__init__(pool_h, pool_w, stride, pad, mode="avg")


# ------------------------------------------------------------------ regularization

_dropout_fwd = ("T x, T u, T ratio, T scale", "T y", "y = u > ratio ? x * scale : (T)0",
                "xpnet_dropout_fwd")


class Dropout(Layer):
    """Inverted dropout: in training each unit is zeroed with probability
    `dropout_ratio` and survivors are scaled by ``1/(1-ratio)``, so evaluation is
    the identity (the book scales at test time instead; the expectations agree)."""

    def __init__(self, dropout_ratio=0.5):
        super().__init__()
        r = float(dropout_ratio)
        if not 0.0 <= r < 1.0:
            raise ValueError("Dropout: dropout_ratio must be in [0, 1), got %r" % (dropout_ratio,))
        self.dropout_ratio = r

    def forward(self, x, train_flg=True):
        xp = self._check_input(x)
        if not train_flg or self.dropout_ratio == 0.0:
            self._c_mask = None
            return x
        rng = device_rng(xp)
        u = rng.random(x.shape, dtype=x.dtype)
        ratio = x.dtype.type(self.dropout_ratio)
        scale = x.dtype.type(1.0 / (1.0 - self.dropout_ratio))
        # The scaled mask doubles as the backward factor.
        self._c_mask = mask = xp.where(u >= ratio, scale, x.dtype.type(0))
        return x * mask

    def backward(self, dout):
        if self._c_mask is None:
            return dout
        self._check_dout(dout, self._c_mask.shape)
        return dout * self._c_mask

    def __repr__(self):
        return "Dropout(%g)" % self.dropout_ratio


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
        if gamma.ndim != 1 or gamma.shape != beta.shape:
            raise ValueError("BatchNormalization: gamma and beta must be 1-D of equal shape, got "
                             "%s and %s" % (tuple(gamma.shape), tuple(beta.shape)))
        if not 0.0 <= momentum <= 1.0:
            raise ValueError("BatchNormalization: momentum must be in [0, 1], got %r" % (momentum,))
        xp = get_array_module(gamma)
        self.params = {"gamma": gamma, "beta": beta}
        self.grads = {"gamma": None, "beta": None}
        D = gamma.shape[0]
        self.buffers = {
            "running_mean": running_mean if running_mean is not None else xp.zeros(D, gamma.dtype),
            "running_var": running_var if running_var is not None else xp.ones(D, gamma.dtype),
        }
        self.momentum = float(momentum)
        self.eps = float(eps)

    running_mean = property(lambda s: s.buffers["running_mean"],
                            lambda s, v: s.buffers.__setitem__("running_mean", v))
    running_var = property(lambda s: s.buffers["running_var"],
                           lambda s, v: s.buffers.__setitem__("running_var", v))

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
        axes, bshape = self._axes(x)
        g = self.params["gamma"].reshape(bshape)
        b = self.params["beta"].reshape(bshape)
        eps = x.dtype.type(self.eps)
        if train_flg:
            m = x.size // x.shape[1]
            if m < 2:
                raise ValueError("BatchNormalization: training needs more than one value per "
                                 "feature, got input shape %s" % (tuple(x.shape),))
            mu = x.mean(axis=axes, keepdims=True)
            xc = x - mu
            var = (xc * xc).mean(axis=axes, keepdims=True)
            std = xp.sqrt(var + eps)
            xn = xc / std
            mo = x.dtype.type(self.momentum)
            one = x.dtype.type(1)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= mo
            rm += (one - mo) * mu.reshape(-1)
            rv *= mo
            rv += (one - mo) * x.dtype.type(m / (m - 1.0)) * var.reshape(-1)
            self._c_cache = (xn, std, axes, bshape)
        else:
            xn = (x - self.buffers["running_mean"].reshape(bshape)) / xp.sqrt(
                self.buffers["running_var"].reshape(bshape) + eps)
            self._c_cache = None
        return g * xn + b

    def backward(self, dout):
        if self._c_cache is None:
            raise RuntimeError("BatchNormalization.backward needs a forward with train_flg=True")
        xn, std, axes, bshape = self._c_cache
        self._check_dout(dout, xn.shape)
        self.grads["beta"] = dout.sum(axis=axes)
        self.grads["gamma"] = (dout * xn).sum(axis=axes)
        dxn = dout * self.params["gamma"].reshape(bshape)
        # dx = (dxn - mean(dxn) - xn * mean(dxn * xn)) / std
        dx = dxn - dxn.mean(axis=axes, keepdims=True)
        dx -= xn * (dxn * xn).mean(axis=axes, keepdims=True)
        dx /= std
        return dx

    def __repr__(self):
        return "BatchNormalization(%d, momentum=%g)" % (self.params["gamma"].shape[0], self.momentum)
