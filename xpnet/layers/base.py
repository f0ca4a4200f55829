"""The `Layer` base class: parameters in ``self.params``, gradients in ``self.grads``,
the book's attribute names (``W``, ``dW`` ...) as views of them, and the dtype rule.
"""
import warnings

from .. import backend


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
