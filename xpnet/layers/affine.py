"""The Affine (fully connected) layer: ``out = x @ W + b``."""
from .. import backend
from .base import Layer, _param_property


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
