"""A layer from outside xpnet, as docs/architecture.md says to add one: one class with
its export hooks. Used by test_onnx, test_torch_io and test_explain to show that a new
layer exports and explains without any change to xpnet's files."""
from xpnet import backend
from xpnet import layers as L


class Softplus(L.Layer):
    """``y = log(1 + exp(x))``."""
    activation = True                  # explain reads channel strength after it

    def forward(self, x, train_flg=False):
        xp = self._check_input(x)
        self._c_x = x
        return xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, 0.0)

    def backward(self, dout):
        x = self._saved("x")
        xp = backend.namespace(x)
        return dout / (1.0 + xp.exp(-x))

    def onnx_nodes(self, graph, index, tag):
        graph.op("Softplus", tag)

    def torch_module(self, nn, spatial):
        return nn.Softplus()
