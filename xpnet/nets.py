"""Networks: a `Sequential` net and the book's ready-made architectures.

Layers own their parameters; ``net.params`` is a live view named as in the
book (``W1``, ``b1``, ``gamma1`` ...), so ``optimizer.update(net.params,
grads)`` and ``net.params['W1'][...] = ...`` act on the layers' arrays.
"""
import contextlib
import inspect
import math
import os
import threading
import warnings

from . import backend, book_params
from . import functions as F
from . import layers as L
from .backend import asnumpy, current_device, device_of, get_device, to_device
from .gradient_check import PrecisionWarning, warn_if_low_precision
from .gradient_check import numerical_gradient as _numerical_gradient
from .backend.geometry import conv_output_size, pair
from .serialization import (MAX_MEMBERS, NpzReader, check_finite, existing_npz_path,
                            load_into, save_net)
from .validate import positive_int as _positive_int

__all__ = ["Sequential", "TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet",
           "DeepConvNet", "init_std", "NETS", "build_net", "load_net", "config_for_shapes",
           "state_shapes", "MAX_PARAMETERS"]

_DTYPES = ("float32", "float64", "float16")


def _dtype_name(dtype):
    name = getattr(dtype, "__name__", None) or str(getattr(dtype, "name", dtype))
    name = {"float": "float64", "single": "float32", "double": "float64", "half": "float16"}.get(
        name, name)
    if name not in _DTYPES:
        raise ValueError("dtype must be one of %s, got %r" % (", ".join(_DTYPES), dtype))
    return name


def init_std(weight_init_std, n_in, n_out=None):
    """The scale of the initial weights, the book's way.

    A number is used as it is; ``'relu'``/``'he'`` gives He's ``sqrt(2/n_in)``;
    ``'sigmoid'``/``'xavier'`` gives the book's Xavier ``sqrt(1/n_in)``;
    ``'glorot'`` gives ``sqrt(2/(n_in+n_out))``."""
    if isinstance(weight_init_std, str):
        s = weight_init_std.lower()
        if s in ("relu", "he"):
            return math.sqrt(2.0 / n_in)
        if s in ("sigmoid", "xavier"):
            return math.sqrt(1.0 / n_in)
        if s == "glorot" and n_out:
            return math.sqrt(2.0 / (n_in + n_out))
        raise ValueError("weight_init_std must be a number or one of 'relu', 'he', 'sigmoid', "
                         "'xavier', 'glorot'; got %r" % (weight_init_std,))
    w = float(weight_init_std)
    if not (w >= 0 and math.isfinite(w)):
        raise ValueError("weight_init_std must be >= 0, got %r" % (weight_init_std,))
    return w


class _ParamView:
    """dict-like live view name -> array over the layers' parameter dicts."""

    def __init__(self, net, kind="params"):
        self._net = net
        self._kind = kind

    def _where(self, key):
        try:
            layer, local = self._net._names[key]
        except KeyError:
            raise KeyError("%s has no parameter %r; it has %s"
                           % (type(self._net).__name__, key, ", ".join(self._net._names))) from None
        return getattr(layer, self._kind), local

    def __getitem__(self, key):
        d, local = self._where(key)
        return d[local]

    def __setitem__(self, key, value):
        d, local = self._where(key)
        old = d[local]
        if old is not None and self._kind == "params":
            if tuple(value.shape) != tuple(old.shape):
                raise ValueError("parameter %r has shape %s, got %s"
                                 % (key, tuple(old.shape), tuple(value.shape)))
            value = to_device(value, device_of(old))
            value = backend.namespace(value).astype(value, old.dtype, copy=False)
        d[local] = value

    def __contains__(self, key):
        return key in self._net._names

    def __iter__(self):
        return iter(self._net._names)

    def __len__(self):
        return len(self._net._names)

    def keys(self):
        return list(self._net._names)

    def items(self):
        return [(k, self[k]) for k in self._net._names]

    def values(self):
        return [self[k] for k in self._net._names]

    def get(self, key, default=None):
        return self[key] if key in self._net._names else default

    def __repr__(self):
        return "{%s}" % ", ".join("%r: %s" % (k, tuple(v.shape) if v is not None else None)
                                  for k, v in self.items())


class Sequential:
    """Layers applied in order, then a loss layer.

    ``weight_decay_lambda`` adds ``0.5*lambda*sum(W**2)`` to the loss (``l1_lambda``
    adds ``lambda*sum(|W|)``) over every weight ``W*`` (not biases or BN).
    """

    def __init__(self, layers, loss_layer=None, weight_decay_lambda=0.0, l1_lambda=0.0):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer")
        self.last_layer = loss_layer if loss_layer is not None else L.SoftmaxWithLoss()
        self.weight_decay_lambda = float(weight_decay_lambda)
        self.l1_lambda = float(l1_lambda)
        if self.weight_decay_lambda < 0 or self.l1_lambda < 0:
            raise ValueError("weight_decay_lambda and l1_lambda must be >= 0")
        self.config = getattr(self, "config", None) or {}
        self._index_params()
        self.last_loss = None
        # Layers keep what a pass needs (caches, column buffers) in themselves, so two
        # passes through one net at once would mix them: the net's passes take turns.
        self._pass_lock = threading.RLock()

    def __getstate__(self):              # copy.deepcopy(net): a lock can't be copied
        state = dict(self.__dict__)
        state.pop("_pass_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pass_lock = threading.RLock()

    # -- naming
    def _index_params(self):
        names, bufs = {}, {}
        idx = 0
        for layer in self.layers:
            layer.need_input_grad = True
            if "W" in layer.params:
                idx += 1
            for local in layer.params:
                names["%s%d" % (local, max(idx, 1))] = (layer, local)
            for local in layer.buffers:
                bufs["%s%d" % (local, max(idx, 1))] = (layer, local)
        if len(names) != sum(len(l.params) for l in self.layers):
            raise ValueError("parameter names collide; put a weight layer before each BatchNorm")
        self.layers[0].need_input_grad = False
        self._names = names
        self._buffer_names = bufs

    @property
    def params(self):
        return _ParamView(self, "params")

    @property
    def grads(self):
        return _ParamView(self, "grads")

    @property
    def buffers(self):
        return {k: layer.buffers[local] for k, (layer, local) in self._buffer_names.items()}

    @property
    def dtype(self):
        p = next(iter(self.params.values()))
        return p.dtype

    @property
    def device(self):
        """The `Device` the net lives on (as given to `to`, reference flag included)."""
        return getattr(self, "_device", None) or device_of(next(iter(self.params.values())))

    @property
    def xp(self):
        """The Array API namespace of the net's arrays."""
        return backend.namespace(next(iter(self.params.values())))

    def to(self, device):
        """Move every layer's arrays to `device`; returns self."""
        dev = get_device(device)
        for layer in self.layers + [self.last_layer]:
            layer.to(dev)
        self._device = dev
        return self

    def astype(self, dtype):
        """Cast parameters, buffers and state to `dtype` (e.g. float16 for inference)."""
        dt = _dtype_name(dtype)
        xp = self.xp
        if getattr(xp, dt, None) is None:
            raise ValueError("astype: %s arrays have no %s (device %s)"
                             % (self.device.library, dt, self.device))
        for layer in self.layers:
            for d in (layer.params, layer.buffers):
                for k, v in d.items():
                    if v is not None:
                        d[k] = xp.astype(v, getattr(xp, dt))
            layer.grads = {k: None for k in layer.grads}
        self.config["dtype"] = dt
        return self

    # -- inputs
    def _prepare(self, x):
        """The input on the net's device, in its dtype (numbers only)."""
        p = next(iter(self.params.values()))
        if not backend.is_array(x):
            x = asnumpy(x)
        if not backend.is_numeric(x):
            raise TypeError("%s: input must hold real numbers (integers or floats), got dtype %s"
                            % (type(self).__name__, backend.dtype_name(x.dtype)))
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError("%s: input must be a non-empty batch, got shape %s"
                             % (type(self).__name__, tuple(x.shape)))
        x = to_device(x, device_of(p))
        if x.dtype != p.dtype:
            x = backend.namespace(x).astype(x, p.dtype)
        return x

    def _prepare_t(self, t):
        return to_device(t if backend.is_array(t) else asnumpy(t),
                         device_of(next(iter(self.params.values()))))

    @contextlib.contextmanager
    def _cpu_threads(self):
        """A pass on the net's own device (so its layers get that device's kernels) in
        the provider's pass scope (conv/pool nets and GEMM-only nets want different
        CPU threading)."""
        heavy = any(layer.cpu_threaded for layer in self.layers)
        with self._pass_lock, backend.using_device(self.device):
            with backend.provider(next(iter(self.params.values()))).pass_scope(heavy):
                yield

    # -- the book's interface
    def predict(self, x, train_flg=False, train=None):
        if train is not None:
            train_flg = train
        x = self._prepare(x)
        with self._cpu_threads():
            for layer in self.layers:
                x = layer.forward(x, train_flg)
        return x

    def _regularization(self):
        if not (self.weight_decay_lambda or self.l1_lambda):
            return 0
        xp = self.xp
        reg = 0
        for k, w in self.params.items():
            if k.startswith("W"):
                if self.weight_decay_lambda:
                    reg = reg + (0.5 * self.weight_decay_lambda) * xp.sum(w * w)
                if self.l1_lambda:
                    reg = reg + self.l1_lambda * xp.sum(xp.abs(w))
        return reg

    def loss(self, x, t, train_flg=False):
        """Data loss plus regularization (a 0-d array on the net's device)."""
        y = self.predict(x, train_flg)
        t = self._prepare_t(t)
        if t.shape[:1] != y.shape[:1]:
            raise ValueError("%s.loss: %d samples but %d labels"
                             % (type(self).__name__, y.shape[0], t.shape[0]))
        return self.last_layer.forward(y, t) + self._regularization()

    def accuracy(self, x, t, batch_size=100):
        """Fraction of correct predictions over all of `x`, the last partial batch included."""
        if not backend.is_array(x):
            x = asnumpy(x)
        if not backend.is_array(t):
            t = asnumpy(t)
        n = x.shape[0]
        if n == 0:
            raise ValueError("accuracy: empty input")
        if t.shape[0] != n:
            raise ValueError("accuracy: %d samples but %d labels" % (n, t.shape[0]))
        batch_size = _positive_int(batch_size, "accuracy: batch_size")
        xp = self.xp
        correct = 0
        for i in range(0, n, batch_size):
            e = min(i + batch_size, n)       # the standard leaves stops past the end undefined
            y = self.predict(x[i:e, ...], train_flg=False)
            tt = self._prepare_t(t[i:e, ...])
            if tt.ndim == 2 and tt.shape[1] == 1 and y.shape[1] != 1 and \
                    xp.isdtype(tt.dtype, "integral"):
                tt = xp.reshape(tt, (-1,))                # the book's (N, 1) labels
            if tt.ndim != 1:
                tt = xp.argmax(tt, axis=1)
            else:
                F.check_labels(tt, y.shape[1], "accuracy")
            correct = correct + xp.sum(xp.astype(xp.argmax(y, axis=1) == tt, xp.int64))
        return float(correct) / n

    def gradient(self, x, t):
        """Backpropagation: returns ``{name: gradient}`` like `params`. The loss of this
        forward pass is kept (on the device) in ``self.last_loss``."""
        with self._cpu_threads():
            self.last_loss = self.loss(x, t, train_flg=True)
            dout = self.last_layer.backward(1)
            for layer in reversed(self.layers):
                dout = layer.backward(dout)
        grads = {}
        for k, (layer, local) in self._names.items():
            g = layer.grads[local]
            if k.startswith("W"):
                w = layer.params[local]
                if self.weight_decay_lambda:
                    g = g + self.weight_decay_lambda * w
                if self.l1_lambda:
                    g = g + self.l1_lambda * backend.namespace(w).sign(w)
            grads[k] = g
        return grads

    def numerical_gradient(self, x, t, h=1e-4):
        """Central differences of the training loss w.r.t. every parameter (slow; for
        checking `gradient`). Dropout masks are redrawn per call: use ratio 0 or fixed seeds."""
        warn_if_low_precision(self.dtype, stacklevel=2)     # once, naming the caller's line
        x = self._prepare(x)
        t = self._prepare_t(t)
        grads = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            for k in self.params:
                orig = self.params[k]
                grads[k] = _numerical_gradient(lambda w, k=k: self._loss_at(k, w, x, t),
                                               orig, h)
                self.params[k] = orig
        return grads

    def _loss_at(self, k, w, x, t):
        """The training loss with parameter `k` set to `w` (rebound where it is a new
        array: immutable arrays are perturbed as copies)."""
        if w is not self.params[k]:
            self.params[k] = w
        return self.loss(x, t, train_flg=True)

    # -- persistence
    def state_dict(self):
        """Parameters and buffers as host NumPy arrays (a snapshot: copies on every device)."""
        d = {k: asnumpy(v).copy() for k, v in self.params.items() if v is not None}
        d.update({k: asnumpy(v).copy() for k, v in self.buffers.items()})
        return d

    def load_state_dict(self, arrays, strict=True):
        """Copy arrays into the net (as new arrays on its device, in its dtype). A shape
        mismatch names the first mismatching parameter; so does a value that is not a
        real floating array (int, bool, complex, str, object, structured), a NaN or
        infinity, or a negative BatchNorm running variance. Nothing is copied unless
        every array passes."""
        want = {k: v for k, v in self.params.items() if v is not None}   # a layer without bias
        want.update(self.buffers)
        missing = [k for k in want if k not in arrays]
        extra = [k for k in arrays if k not in want]
        if strict and (missing or extra):
            raise ValueError("parameter file doesn't match %s: missing %s, unexpected %s"
                             % (type(self).__name__, missing or "none", extra or "none"))
        for k, cur in want.items():
            if k not in arrays:
                continue
            a = arrays[k]
            if not hasattr(a, "shape") or not hasattr(a, "dtype"):
                raise TypeError("parameter %r: expected an array, got %s"
                                % (k, type(a).__name__))
            if tuple(a.shape) != tuple(cur.shape):
                raise ValueError("parameter %r: file has shape %s, %s expects %s"
                                 % (k, tuple(a.shape), type(self).__name__, tuple(cur.shape)))
            _check_param_values(k, a)
        for k, cur in want.items():
            if k in arrays:    # new arrays, rebound: immutable libraries load too
                layer, local = self._names.get(k) or self._buffer_names[k]
                a = to_device(arrays[k], device_of(cur))
                xp = backend.namespace(a)    # through 1-D: a copy in C order, as kernels want
                a = xp.reshape(xp.astype(xp.reshape(a, (-1,)), cur.dtype), tuple(cur.shape))
                (layer.params if k in self._names else layer.buffers)[local] = a
        return self

    def save_params(self, file_name, extra_meta=None):
        return save_net(self, file_name, extra_meta)

    def load_params(self, file_name):
        """Load a parameter file written by `save_params`, or one of the book's pickled
        ``.pkl`` files (read by an arrays-only unpickler, with the book's test-time Dropout
        scaling folded into the weights). For a ``.pkl`` name that isn't there, the
        ``.npz`` that `save_params` wrote in its place is loaded."""
        path = os.fspath(file_name)
        if path.endswith(".pkl"):
            npz = path[:-len(".pkl")] + ".npz"
            if os.path.isfile(npz) and os.path.lexists(path):
                # save_params("x.pkl") wrote x.npz: that is this net's, not the pickle
                warnings.warn("load_params(%r): loading %s, which save_params wrote in its "
                              "place; the pickle beside it is not read (convert it with "
                              "`xpnet convert`)" % (path, npz), UserWarning, stacklevel=2)
                return load_into(self, npz)
            if os.path.isfile(path) and book_params.is_pickle(path):
                arrays = book_params.load_book_params(path)
                self.load_state_dict(book_params.fold_book_dropout(self, arrays))
                return self
            if not os.path.lexists(path):
                path = path[:-len(".pkl")] + ".npz"
        return load_into(self, path)

    def __repr__(self):
        body = "\n".join("  " + repr(l) for l in self.layers + [self.last_layer])
        return "%s(\n%s\n)" % (type(self).__name__, body)


def _check_param_values(name, a):
    """A parameter or buffer array must be real floating and finite (a BatchNorm
    running variance also >= 0); ValueError naming it otherwise."""
    kind = getattr(getattr(a, "dtype", None), "kind", None)
    if kind is not None:            # NumPy and CuPy arrays say it directly
        ok = kind == "f"
    else:
        try:
            ok = backend.namespace(a).isdtype(a.dtype, "real floating")
        except Exception:
            ok = False
    if not ok:
        raise ValueError("parameter %r has dtype %s; parameters must be real floating "
                         "(float16, float32 or float64)" % (name, a.dtype))
    xp = backend.namespace(a)
    finite = xp.isfinite(a)
    if not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(~finite, xp.int64)))
        raise ValueError("parameter %r holds %d NaN or infinite value%s; refusing to load it"
                         % (name, bad, "" if bad == 1 else "s"))
    if name.startswith("running_var") and bool(xp.any(a < 0)):
        raise ValueError("parameter %r (a BatchNorm running variance) holds negative values"
                         % (name,))


# ---------------------------------------------------------------------------
# The book's networks

def _finish(net, device, dtype):
    # built as float64 host arrays, then cast and moved: one seed, one net, any device
    dt = _dtype_name(dtype)
    for layer in net.layers:
        for d in (layer.params, layer.buffers):
            for k, v in d.items():
                d[k] = v.astype(dt)
    net.config["dtype"] = dt
    net.to(device if device is not None else current_device())
    return net


def _rng(seed):
    # weights are drawn on the host so a seed gives the same net on every device
    return backend.new_host_rng(seed) if seed is not None else backend.host_rng()


def _weights(rng, shape, std):
    return rng.standard_normal(shape) * std


def _zeros(n):
    return backend.host_zeros(n)


def _activation(name):
    acts = {"relu": L.Relu, "sigmoid": L.Sigmoid, "tanh": L.Tanh}
    try:
        return acts[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError("activation must be one of %s, got %r" % (", ".join(acts), name)) from None


class MultiLayerNetExtend(Sequential):
    """Fully connected net: (Affine [BatchNorm] act [Dropout]) x len(hidden_size_list),
    Affine, SoftmaxWithLoss. The book's ``dropout_ration`` spelling is accepted."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, l1_lambda=0, dtype="float32",
                 device=None, seed=None, dropout_ratio=None):
        if dropout_ratio is not None:
            dropout_ration = dropout_ratio
        input_size = _positive_int(input_size, "input_size")
        output_size = _positive_int(output_size, "output_size")
        hidden_size_list = [_positive_int(h, "hidden_size_list entry") for h in hidden_size_list]
        act = _activation(activation)
        self.config = dict(type=type(self).__name__, input_size=input_size,
                           hidden_size_list=hidden_size_list, output_size=output_size,
                           activation=activation, weight_init_std=weight_init_std,
                           weight_decay_lambda=weight_decay_lambda, use_dropout=use_dropout,
                           dropout_ratio=dropout_ration, use_batchnorm=use_batchnorm,
                           l1_lambda=l1_lambda)
        rng = _rng(seed)
        sizes = [input_size] + hidden_size_list + [output_size]
        layers = []
        for i in range(1, len(sizes)):
            n_in, n_out = sizes[i - 1], sizes[i]
            std = init_std(weight_init_std, n_in, n_out)
            layers.append(L.Affine(_weights(rng, (n_in, n_out), std), _zeros(n_out)))
            if i == len(sizes) - 1:
                break
            if use_batchnorm:
                layers.append(L.BatchNormalization(_zeros(n_out) + 1, _zeros(n_out)))
            layers.append(act())
            if use_dropout:
                layers.append(L.Dropout(dropout_ration))
        super().__init__(layers, L.SoftmaxWithLoss(), weight_decay_lambda, l1_lambda)
        _finish(self, device, dtype)


class MultiLayerNet(MultiLayerNetExtend):
    """The book's plain fully connected net (no BatchNorm, no Dropout)."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, l1_lambda=0, dtype="float32",
                 device=None, seed=None):
        super().__init__(input_size, hidden_size_list, output_size, activation, weight_init_std,
                         weight_decay_lambda, l1_lambda=l1_lambda, dtype=dtype, device=device,
                         seed=seed)
        self.config = {k: v for k, v in self.config.items()
                       if k not in ("use_dropout", "dropout_ratio", "use_batchnorm")}
        self.config["type"] = type(self).__name__
        self.config["dtype"] = _dtype_name(dtype)


class TwoLayerNet(Sequential):
    """Chapter 5's net: Affine - Relu - Affine - SoftmaxWithLoss."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 dtype="float32", device=None, seed=None):
        input_size = _positive_int(input_size, "input_size")
        hidden_size = _positive_int(hidden_size, "hidden_size")
        output_size = _positive_int(output_size, "output_size")
        self.config = dict(type="TwoLayerNet", input_size=input_size, hidden_size=hidden_size,
                           output_size=output_size, weight_init_std=weight_init_std)
        rng = _rng(seed)
        s1 = init_std(weight_init_std, input_size)
        s2 = init_std(weight_init_std, hidden_size)
        layers = [L.Affine(_weights(rng, (input_size, hidden_size), s1), _zeros(hidden_size)),
                  L.Relu(),
                  L.Affine(_weights(rng, (hidden_size, output_size), s2), _zeros(output_size))]
        super().__init__(layers, L.SoftmaxWithLoss())
        _finish(self, device, dtype)


def _conv_param(p, name, default):
    q = dict(default)
    if p is not None:
        unknown = set(p) - set(default)
        if unknown:
            raise ValueError("%s: unknown keys %s; valid: %s"
                             % (name, sorted(unknown), sorted(default)))
        q.update(p)
    return q


def _input_dim(input_dim):
    if len(input_dim) != 3:
        raise ValueError("input_dim must be (C, H, W), got %r" % (input_dim,))
    return tuple(_positive_int(v, "input_dim entry") for v in input_dim)


class SimpleConvNet(Sequential):
    """Chapter 7's net: Conv - Relu - Pool(2x2) - Affine - Relu - Affine - SoftmaxWithLoss."""

    def __init__(self, input_dim=(1, 28, 28), conv_param=None, hidden_size=100, output_size=10,
                 weight_init_std=0.01, weight_decay_lambda=0, dtype="float32", device=None,
                 seed=None):
        input_dim = _input_dim(input_dim)
        cp = _conv_param(conv_param, "conv_param",
                         {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1})
        hidden_size = _positive_int(hidden_size, "hidden_size")
        output_size = _positive_int(output_size, "output_size")
        self.config = dict(type="SimpleConvNet", input_dim=list(input_dim), conv_param=cp,
                           hidden_size=hidden_size, output_size=output_size,
                           weight_init_std=weight_init_std,
                           weight_decay_lambda=weight_decay_lambda)
        rng = _rng(seed)
        C, H, W = input_dim
        fn, fs = _positive_int(cp["filter_num"], "filter_num"), _positive_int(cp["filter_size"],
                                                                              "filter_size")
        conv = L.Convolution(_weights(rng, (fn, C, fs, fs), init_std(weight_init_std, C * fs * fs)),
                             _zeros(fn), cp["stride"], cp["pad"])
        shape = conv.output_shape(input_dim)
        pool = L.Pooling(2, 2, stride=2)
        shape = pool.output_shape(shape)
        flat = shape[0] * shape[1] * shape[2]
        layers = [conv, L.Relu(), pool,
                  L.Affine(_weights(rng, (flat, hidden_size), init_std(weight_init_std, flat)),
                           _zeros(hidden_size)),
                  L.Relu(),
                  L.Affine(_weights(rng, (hidden_size, output_size),
                                    init_std(weight_init_std, hidden_size)), _zeros(output_size))]
        super().__init__(layers, L.SoftmaxWithLoss(), weight_decay_lambda)
        _finish(self, device, dtype)


class DeepConvNet(Sequential):
    """Chapter 8's net (He init; about 99.4% on MNIST in the book):
    conv-relu-conv-relu-pool-conv-relu-conv-relu-pool-conv-relu-conv-relu-pool-
    affine-relu-dropout-affine-dropout-softmax."""

    _DEFAULTS = (
        {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
        {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    )

    def __init__(self, input_dim=(1, 28, 28), conv_param_1=None, conv_param_2=None,
                 conv_param_3=None, conv_param_4=None, conv_param_5=None, conv_param_6=None,
                 hidden_size=50, output_size=10, dropout_ratio=0.5, weight_decay_lambda=0,
                 dtype="float32", device=None, seed=None):
        input_dim = _input_dim(input_dim)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                 conv_param_6)
        cps = [_conv_param(p, "conv_param_%d" % (i + 1), d)
               for i, (p, d) in enumerate(zip(given, self._DEFAULTS))]
        hidden_size = _positive_int(hidden_size, "hidden_size")
        output_size = _positive_int(output_size, "output_size")
        self.config = dict(type="DeepConvNet", input_dim=list(input_dim),
                           **{"conv_param_%d" % (i + 1): c for i, c in enumerate(cps)},
                           hidden_size=hidden_size, output_size=output_size,
                           dropout_ratio=dropout_ratio, weight_decay_lambda=weight_decay_lambda)
        rng = _rng(seed)
        layers = []
        shape = input_dim
        for i, cp in enumerate(cps):
            C = shape[0]
            fn, fs = cp["filter_num"], cp["filter_size"]
            conv = L.Convolution(_weights(rng, (fn, C, fs, fs), math.sqrt(2.0 / (C * fs * fs))),
                                 _zeros(fn), cp["stride"], cp["pad"])
            shape = conv.output_shape(shape)
            layers += [conv, L.Relu()]
            if i % 2 == 1:
                pool = L.Pooling(2, 2, stride=2)
                shape = pool.output_shape(shape)
                layers.append(pool)
        flat = shape[0] * shape[1] * shape[2]
        layers += [L.Affine(_weights(rng, (flat, hidden_size), math.sqrt(2.0 / flat)),
                            _zeros(hidden_size)),
                   L.Relu(), L.Dropout(dropout_ratio),
                   L.Affine(_weights(rng, (hidden_size, output_size),
                                     math.sqrt(2.0 / hidden_size)), _zeros(output_size)),
                   L.Dropout(dropout_ratio)]
        super().__init__(layers, L.SoftmaxWithLoss(), weight_decay_lambda)
        _finish(self, device, dtype)


NETS = {"TwoLayerNet": TwoLayerNet, "MultiLayerNet": MultiLayerNet,
        "MultiLayerNetExtend": MultiLayerNetExtend, "SimpleConvNet": SimpleConvNet,
        "DeepConvNet": DeepConvNet}


# ---------------------------------------------------------------------------
# Shapes from a config, before anything is built (parameter files, build_net)

#: The most parameter values (parameters and buffers together) `build_net` and
#: `load_net` build from a config: 2**26 values (256 MiB as float32; the weights are
#: drawn in float64, 512 MiB). A file declaring more is refused before anything is
#: allocated.
MAX_PARAMETERS = 2 ** 26


def _plan_conv(shape, cp, what, fields):
    """(weight shape, output shape) of a Convolution with conv param `cp` on `shape`."""
    fn = _positive_int(cp["filter_num"], what + " filter_num")
    fs = _positive_int(cp["filter_size"], what + " filter_size")
    sy, sx = pair(cp["stride"], what + " stride")
    py, px = pair(cp["pad"], what + " pad")
    C, H, W = shape
    out = (fn, conv_output_size(H, fs, sy, py, "Convolution (%s)" % what),
           conv_output_size(W, fs, sx, px, "Convolution (%s)" % what))
    return (fn, C, fs, fs), out


def _plan_pool(shape):
    C, H, W = shape
    return (C, conv_output_size(H, 2, 2, 0, "Pooling"), conv_output_size(W, 2, 2, 0, "Pooling"))


def _plan(config):
    """``[(name, shape, fields)]`` of the parameters and buffers of the ready net that
    `config` describes, in the net's order, computed from the numbers alone (nothing
    is allocated). `fields` says which config fields (with their values) the shape
    comes from. Bad or unknown fields are a ValueError (TypeError for wrong types)."""
    if not isinstance(config, dict):
        raise ValueError("a net's config must be a dict (JSON object), got %s"
                         % type(config).__name__)
    cfg = dict(config)
    name = cfg.pop("type", None)
    cls = NETS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError("unknown network type %r; known: %s" % (name, ", ".join(NETS)))
    cfg.pop("dtype", None)
    sig = inspect.signature(cls).parameters
    unknown = sorted(k for k in cfg if k not in sig or k == "device")
    if unknown:
        raise ValueError("%s has no config field %s" % (name, ", ".join(map(repr, unknown))))
    args = {}
    for k, p in sig.items():
        if k in cfg:
            args[k] = cfg[k]
        elif p.default is inspect.Parameter.empty:
            raise ValueError("%s's config lacks the field %r" % (name, k))
        else:
            args[k] = p.default
    out = []

    def affine(i, n_in, n_out, fields):
        out.append(("W%d" % i, (n_in, n_out), fields))
        out.append(("b%d" % i, (n_out,), fields))

    def show(*keys):
        return ", ".join("%s=%r" % (k, args[k]) for k in keys)

    if name == "TwoLayerNet":
        i = _positive_int(args["input_size"], "input_size")
        h = _positive_int(args["hidden_size"], "hidden_size")
        o = _positive_int(args["output_size"], "output_size")
        affine(1, i, h, show("input_size", "hidden_size"))
        affine(2, h, o, show("hidden_size", "output_size"))
    elif name in ("MultiLayerNet", "MultiLayerNetExtend"):
        hidden = args["hidden_size_list"]
        if not isinstance(hidden, (list, tuple)):
            raise TypeError("hidden_size_list must be a list of positive ints, got %r"
                            % (hidden,))
        if len(hidden) > MAX_MEMBERS:
            raise ValueError("hidden_size_list has %d entries, more layers than xpnet "
                             "builds from a config (%d)" % (len(hidden), MAX_MEMBERS))
        sizes = ([_positive_int(args["input_size"], "input_size")]
                 + [_positive_int(h, "hidden_size_list entry") for h in hidden]
                 + [_positive_int(args["output_size"], "output_size")])
        bn = bool(args.get("use_batchnorm", False))
        for i in range(1, len(sizes)):
            src = ("input_size" if i == 1 else "hidden_size_list[%d]" % (i - 2),
                   "output_size" if i == len(sizes) - 1 else "hidden_size_list[%d]" % (i - 1))
            affine(i, sizes[i - 1], sizes[i], "%s=%d, %s=%d" % (src[0], sizes[i - 1], src[1],
                                                                  sizes[i]))
            if bn and i < len(sizes) - 1:
                for k in ("gamma", "beta", "running_mean", "running_var"):
                    out.append(("%s%d" % (k, i), (sizes[i],), "%s=%d" % (src[1], sizes[i])))
    elif name == "SimpleConvNet":
        shape = _input_dim(args["input_dim"])
        cp = _conv_param(args["conv_param"], "conv_param",
                         {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1})
        w, shape = _plan_conv(shape, cp, "conv_param", None)
        src = "input_dim=%r, conv_param=%r" % (list(args["input_dim"]), cp)
        out += [("W1", w, src), ("b1", (w[0],), src)]
        shape = _plan_pool(shape)
        h = _positive_int(args["hidden_size"], "hidden_size")
        o = _positive_int(args["output_size"], "output_size")
        affine(2, math.prod(shape), h, src + ", " + show("hidden_size"))
        affine(3, h, o, show("hidden_size", "output_size"))
    else:   # DeepConvNet
        shape = _input_dim(args["input_dim"])
        src = "input_dim=%r" % (list(args["input_dim"]),)
        for i, d in enumerate(DeepConvNet._DEFAULTS):
            key = "conv_param_%d" % (i + 1)
            cp = _conv_param(args[key], key, d)
            w, shape = _plan_conv(shape, cp, key, None)
            src += ", %s=%r" % (key, cp)
            out += [("W%d" % (i + 1), w, src), ("b%d" % (i + 1), (w[0],), src)]
            if i % 2 == 1:
                shape = _plan_pool(shape)
        h = _positive_int(args["hidden_size"], "hidden_size")
        o = _positive_int(args["output_size"], "output_size")
        affine(7, math.prod(shape), h, src + ", " + show("hidden_size"))
        affine(8, h, o, show("hidden_size", "output_size"))
    # state_dict's order: parameters, then buffers
    return ([t for t in out if not t[0].startswith("running_")]
            + [t for t in out if t[0].startswith("running_")])


def config_for_shapes(shapes, input_dim=(1, 28, 28)):
    """The config of a ready net whose parameters have exactly these ``{name: shape}``
    (a parameter file without an architecture, such as the book's pickles): the book's
    DeepConvNet and SimpleConvNet for `input_dim` images, then the fully connected nets.
    None when none fits."""
    shapes = {k: tuple(v) for k, v in shapes.items()}
    W = [shapes.get("W%d" % i) for i in range(1, len(shapes) + 1)]
    W = [w for w in W if w is not None]
    candidates = [{"type": "DeepConvNet", "input_dim": list(input_dim)}]
    if len(W) == 3 and len(W[0]) == 4:
        candidates.append({"type": "SimpleConvNet", "input_dim": list(input_dim),
                           "conv_param": {"filter_num": W[0][0], "filter_size": W[0][2],
                                          "pad": 0, "stride": 1},
                           "hidden_size": W[1][1], "output_size": W[2][1]})
    if W and all(len(w) == 2 for w in W):
        candidates.append({"type": "TwoLayerNet" if len(W) == 2 else "MultiLayerNet",
                           "input_size": W[0][0], "output_size": W[-1][1],
                           **({"hidden_size": W[0][1]} if len(W) == 2 else
                              {"hidden_size_list": [w[1] for w in W[:-1]]})})
    for cfg in candidates:
        try:
            if state_shapes(cfg) == shapes:
                return cfg
        except (TypeError, ValueError):
            continue
    return None


def state_shapes(config):
    """``{name: shape}`` of the parameters and buffers (``state_dict`` keys) of the ready
    net `config` describes, computed without building it: no array is allocated.
    Invalid fields raise ValueError/TypeError naming the field."""
    return {k: s for k, s, _ in _plan(config)}


def _checked_plan(config):
    """`_plan`, refused (ValueError naming the largest array and the fields it comes
    from) when the net would hold more than `MAX_PARAMETERS` values."""
    try:
        plan = _plan(config)
    except TypeError as e:
        raise ValueError("can't rebuild %s from its config: %s"
                         % (config.get("type"), e)) from None
    total = sum(math.prod(s) for _, s, _ in plan)
    if total > MAX_PARAMETERS:
        k, s, src = max(plan, key=lambda t: math.prod(t[1]))
        raise ValueError("%s's config declares %s parameter values, more than xpnet builds "
                         "(MAX_PARAMETERS = %s): the largest, %s, has shape %s from %s"
                         % (config.get("type"), format(total, ","),
                            format(MAX_PARAMETERS, ","), k, s, src))
    return plan


def build_net(config, device=None, dtype=None):
    """Rebuild a ready net from its ``config`` (as saved in a parameter file). The
    config's shapes are computed and checked first (`state_shapes`, `MAX_PARAMETERS`),
    so a config declaring a huge net is refused before anything is allocated."""
    _checked_plan(config)
    cfg = dict(config)
    name = cfg.pop("type", None)
    cls = NETS.get(name)
    if dtype is not None:
        cfg["dtype"] = dtype
    if "input_dim" in cfg:
        cfg["input_dim"] = tuple(cfg["input_dim"])
    try:
        return cls(device=device, **cfg)
    except TypeError as e:
        raise ValueError("can't rebuild %s from its saved config: %s" % (name, e)) from None


def load_net(file_name, device=None, dtype=None):
    """Rebuild a ready-made net from a parameter file and load its weights.

    Before any array data is read or any net is built: the metadata must be a JSON
    object whose architecture is valid and within `MAX_PARAMETERS`, and the file's
    arrays (from their .npy headers) must be exactly the parameters that architecture
    has, with its shapes, in a float dtype. Values must then be finite. Every refusal
    is a ValueError naming the file and the field or array."""
    path = existing_npz_path(file_name)
    with NpzReader(path) as r:
        meta = r.meta
        arch = meta.get("architecture")
        if not arch:
            raise ValueError("%s has no architecture metadata; build the net yourself and use "
                             "net.load_params(...)" % path)
        if not isinstance(arch, dict):
            raise ValueError("%s: metadata field 'architecture' must be a JSON object, got %s"
                             % (path, type(arch).__name__))
        arch = dict(arch)
        saved_dt = arch.pop("dtype", None) or meta.get("dtype") or "float32"
        dt = _dtype_name(dtype) if dtype is not None else None   # the caller's: no prefix
        try:
            dt = dt or _dtype_name(saved_dt)
            plan = _checked_plan(arch)
        except (ValueError, TypeError) as e:
            raise ValueError("%s: bad architecture metadata: %s" % (path, e)) from None
        r.check_params({k: s for k, s, _ in plan}, arch["type"])
        arrays = r.read()
    check_finite(arrays, path)
    net = build_net(arch, device=device, dtype=dt)
    net.load_state_dict(arrays)
    return net
