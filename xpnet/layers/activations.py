"""Activation layers (the book's Relu and Sigmoid, with LeakyRelu and Tanh) and Flatten."""
from .. import backend
from .. import functions as F
from ..validate import fraction
from .base import Layer


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
