"""`Sequential`: layers applied in order, then a loss layer.

Layers own their parameters; ``net.params`` is a live view named as in the
book (``W1``, ``b1``, ``gamma1`` ...), so ``optimizer.update(net.params,
grads)`` and ``net.params['W1'][...] = ...`` act on the layers' arrays.
"""
import contextlib
import copy
import os
import threading
import warnings

from .. import backend, book_params
from .. import functions as F
from .. import layers as L
from ..backend import asnumpy, device_of, get_device, to_device
from ..gradient_check import PrecisionWarning, warn_if_low_precision
from ..gradient_check import numerical_gradient as _numerical_gradient
from ..serialization import load_into, save_net
from ..validate import positive_int as _positive_int
from .params import _ParamView, _check_param_values, _dtype_name


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
        self.last_loss_array = None
        # Layers keep what a pass needs (caches, column buffers) in themselves, so two
        # passes through one net at once would mix them: the net's passes take turns.
        self._pass_lock = threading.RLock()

    def __getstate__(self):              # copy.deepcopy(net): a lock can't be copied
        with self._pass_lock:           # nor a net copied while a pass changes its layers
            state = dict(self.__dict__)
        state.pop("_pass_lock", None)
        return state

    def __deepcopy__(self, memo):
        # copied between passes: a Trainer in another thread changes the layers' caches
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        with self._pass_lock:
            state = {k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()
                     if k != "_pass_lock"}
        new.__setstate__(state)
        return new

    @property
    def last_loss(self):
        """The loss of the last `gradient` call as a Python float (None before one); the
        0-d array on the device is ``last_loss_array`` (reading this waits for the device)."""
        a = self.__dict__.get("last_loss_array")
        return None if a is None else float(a)

    @last_loss.setter
    def last_loss(self, value):
        self.last_loss_array = value

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
        """Data loss plus regularization, as a Python float (as the book's prints show it;
        `loss_array` keeps it on the device)."""
        return float(self.loss_array(x, t, train_flg))

    def loss_array(self, x, t, train_flg=False):
        """Data loss plus regularization: a 0-d array of the net's dtype on its device."""
        y = self.predict(x, train_flg)
        t = self._prepare_t(t)
        if t.shape[:1] != y.shape[:1]:
            raise ValueError("%s.loss: %d samples but %d labels"
                             % (type(self).__name__, y.shape[0], t.shape[0]))
        loss = self.last_layer.forward(y, t)
        reg = self._regularization()
        if isinstance(reg, int):          # NumPy 1.x: float32 scalar + 0 is float64
            return loss
        xp = backend.namespace(reg)
        return xp.astype(loss + reg, xp.asarray(loss).dtype)

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
            correct = correct + xp.sum(xp.astype(xp.argmax(y, axis=1) == tt, xp.int32))   # int32: JAX without x64 has no int64
        return float(correct) / n

    def gradient(self, x, t):
        """Backpropagation: returns ``{name: gradient}`` like `params`. The loss of this
        forward pass is kept: ``self.last_loss`` (a float) reads ``self.last_loss_array``
        (on the device)."""
        with self._cpu_threads():
            self.last_loss_array = self.loss_array(x, t, train_flg=True)
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
        return self.loss_array(x, t, train_flg=True)

    # -- persistence
    def state_dict(self):
        """Parameters and buffers as host NumPy arrays (a snapshot: copies on every device)."""
        d = {k: asnumpy(v).copy() for k, v in self.params.items() if v is not None}
        d.update({k: asnumpy(v).copy() for k, v in self.buffers.items()})
        return d

    def load_state_dict(self, arrays, strict=True, allow_nonfinite=False):
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
            _check_param_values(k, a, allow_nonfinite)
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

    def load_params(self, file_name, allow_nonfinite=False):
        """Load a parameter file written by `save_params`, or one of the book's pickled
        ``.pkl`` files (read by an arrays-only unpickler, with the book's test-time Dropout
        scaling folded into the weights). The file named is the one read; only for a
        ``.pkl`` name that isn't there is the ``.npz`` that `save_params` wrote in its
        place loaded. NaN or infinite values are refused unless `allow_nonfinite`."""
        path = os.fspath(file_name)
        if path.endswith(".pkl"):
            if not os.path.lexists(path):
                # save_params("x.pkl") wrote x.npz in its place
                return load_into(self, path[:-len(".pkl")] + ".npz", allow_nonfinite)
            if book_params.is_pickle(path):
                arrays = book_params.load_book_params(path)
                self.load_state_dict(book_params.fold_book_dropout(self, arrays),
                                     allow_nonfinite=allow_nonfinite)
                return self
        return load_into(self, path, allow_nonfinite)

    def __repr__(self):
        body = "\n".join("  " + repr(l) for l in self.layers + [self.last_layer])
        return "%s(\n%s\n)" % (type(self).__name__, body)
