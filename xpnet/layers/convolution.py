"""Convolution and pooling layers (im2col, as in the book's chapter 7)."""
from .. import backend
from ..backend.geometry import conv_output_size, pair
from .base import Layer, _param_property


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
