"""`Trainer`: the book's training loop, made exact, resumable and quiet on request.

``Trainer(net, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None,
verbose=True).train()`` works as in the book and fills ``train_loss_list``,
``train_acc_list`` and ``test_acc_list``. Differences, all documented in
docs/training.md:

- an epoch is one shuffled pass over the training set without replacement; the
  last batch of an epoch is smaller when N is not a multiple of the batch size
  (``drop_last=True`` drops it instead);
- accuracy is evaluated once after every epoch (the book evaluates at the start
  of each epoch, so its last entry predates the last epoch);
- losses stay on the net's device and are read back every ``log_every`` steps.
"""
import json
import math
import os
import signal
import sys
import threading
import time

from . import __version__
from . import backend
from .backend import CPU, asnumpy, device_of, get_array_module, to_device
from .optimizers import Optimizer, get_optimizer
from .serialization import atomic_write_bytes, load_arrays, save_arrays

__all__ = ["Trainer", "TrainingDivergedError", "find_checkpoint", "CHECKPOINT_NAME",
           "HISTORY_NAME"]

CHECKPOINT_NAME = "checkpoint.npz"
HISTORY_NAME = "history.json"
_FORMAT = "xpnet-checkpoint"
_GPU_LOG_EVERY = 50
_DEVICE_DATA_LIMIT = 1 << 30   # move data sets up to 1 GiB to the GPU once
_EVAL_BATCH = 1000


class TrainingDivergedError(FloatingPointError):
    """The loss (or a parameter) became NaN or infinite; training stopped."""

    def __init__(self, message, step=None, epoch=None, checkpoint=None):
        super().__init__(message)
        self.step, self.epoch, self.checkpoint = step, epoch, checkpoint


def find_checkpoint(path):
    """The checkpoint file for `path`: a ``.npz`` file, its ``.json`` twin, or a
    directory holding ``checkpoint.npz``."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, CHECKPOINT_NAME)
    elif p.endswith(".json"):
        p = p[:-5] + ".npz"
    if not os.path.isfile(p):
        raise FileNotFoundError("resume: no checkpoint at %s (give a checkpoint .npz file or the "
                                "checkpoint directory holding %s)" % (p, CHECKPOINT_NAME))
    return p


def _finite_or_none(v):
    return v if (v is None or math.isfinite(v)) else None


def _json_bytes(obj):
    return (json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
        raise TypeError("Trainer: %s must be a positive int, got %r" % (name, v))
    v = int(v)
    if v < 1:
        raise ValueError("Trainer: %s must be a positive int, got %d" % (name, v))
    return v


def _fmt_time(s):
    s = int(round(s))
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) if s >= 3600 else \
        "%d:%02d" % (s // 60, s % 60)


class _Bar:
    """Per-epoch progress: tqdm when importable, else one self-overwriting line."""

    def __init__(self, total, initial, desc, batch_size):
        self.total, self.n, self.desc, self.bs = total, initial, desc, batch_size
        self.t0 = time.perf_counter()
        self.start_n = initial
        self.last = 0.0
        try:
            from tqdm.auto import tqdm
        except Exception:
            tqdm = None
        self.tq = None
        if tqdm is not None:
            self.tq = tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                           file=sys.stderr, dynamic_ncols=True)

    def update(self, n_steps, loss):
        self.n += n_steps
        dt = time.perf_counter() - self.t0
        ips = (self.n - self.start_n) * self.bs / dt if dt > 0 else 0.0
        if self.tq is not None:
            self.tq.set_postfix_str("loss %.4f, %.0f img/s" % (loss, ips), refresh=False)
            self.tq.update(n_steps)
            return
        now = time.perf_counter()
        if self.n < self.total and now - self.last < 0.1:    # at most ~10 redraws a second
            return
        self.last = now
        rate = (self.n - self.start_n) / dt if dt > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        sys.stderr.write("\r%s %d/%d loss %.4f  %.0f img/s  ETA %s   "
                         % (self.desc, self.n, self.total, loss, ips, _fmt_time(eta)))
        sys.stderr.flush()

    def close(self):
        if self.tq is not None:
            self.tq.close()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


class Trainer:
    """Train `network` on ``(x_train, t_train)`` and evaluate on ``(x_test, t_test)``.

    The book's positional arguments, plus keyword-only extras:

    seed: seeds the shuffling and xpnet's generators (dropout masks) for a
        reproducible run. Without it shuffling draws its seed from
        ``xpnet.backend.host_rng()``, so ``xpnet.seed(s)`` also makes runs repeatable.
    checkpoint_dir: write ``checkpoint.npz``/``.json`` (params, optimizer state,
        epoch, step, RNG state) and ``history.json`` there after every epoch and on Ctrl-C.
    resume: a checkpoint file or directory to continue from; ``epochs`` is the total,
        so a 2-epoch checkpoint resumed with ``epochs=4`` trains 2 more.
    history_path: where to save the history JSON (default: in checkpoint_dir).
    progress: per-epoch progress bar on stderr; None = when verbose and stderr is a terminal.
    log: called with each report line (default print).
    eval_batch_size: batch size for accuracy (default: the larger of mini_batch_size and 1000).
    log_every: steps between reading losses back from the device (and NaN checks);
        default 1 on the CPU, 50 on a GPU.
    drop_last: drop the smaller last batch of each epoch instead of training on it.
    data_on_device: copy the data sets to the GPU once (default: when under 1 GiB).
    on_step, on_epoch: ``f(trainer)`` called after every step / epoch.
    run_info: a JSON-able dict stored in the history's config and in checkpoints.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None,
                 verbose=True, *, seed=None, checkpoint_dir=None, resume=None, history_path=None,
                 progress=None, log=print, eval_batch_size=None, log_every=None,
                 drop_last=False, data_on_device=None, on_step=None, on_epoch=None,
                 run_info=None):
        self.network = network
        self.verbose = bool(verbose)
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        for name, x, t in (("train", x_train, t_train), ("test", x_test, t_test)):
            if not hasattr(x, "shape") or not hasattr(t, "shape"):
                raise TypeError("Trainer: x_%s and t_%s must be arrays, got %s and %s"
                                % (name, name, type(x).__name__, type(t).__name__))
            if x.shape[0] != t.shape[0]:
                raise ValueError("Trainer: x_%s has %d samples but t_%s has %d labels"
                                 % (name, x.shape[0], name, t.shape[0]))
            if x.shape[0] == 0:
                raise ValueError("Trainer: x_%s is empty" % name)
        if isinstance(epochs, bool) or not isinstance(epochs, int) and not hasattr(epochs,
                                                                                 "__index__"):
            raise TypeError("Trainer: epochs must be an int >= 0, got %r" % (epochs,))
        if int(epochs) < 0:
            raise ValueError("Trainer: epochs must be an int >= 0, got %r" % (epochs,))
        self.epochs = int(epochs)
        self.batch_size = _positive_int(mini_batch_size, "mini_batch_size")
        self.evaluate_sample_num_per_epoch = (
            None if evaluate_sample_num_per_epoch is None
            else _positive_int(evaluate_sample_num_per_epoch, "evaluate_sample_num_per_epoch"))
        # Big batches evaluate several times faster per image on both backends.
        self.eval_batch_size = (max(self.batch_size, _EVAL_BATCH) if eval_batch_size is None
                                else _positive_int(eval_batch_size, "eval_batch_size"))

        if isinstance(optimizer, Optimizer):
            if optimizer_param is not None:
                raise ValueError("Trainer: optimizer_param can't be used with an Optimizer "
                                 "instance (%r); set its hyper-parameters when creating it"
                                 % (optimizer,))
            self.optimizer = optimizer
        else:
            if not isinstance(optimizer, str):
                raise TypeError("Trainer: optimizer must be a name like 'SGD' or 'Adam' or an "
                                "Optimizer, got %r" % (optimizer,))
            param = {"lr": 0.01} if optimizer_param is None else dict(optimizer_param)
            self.optimizer = get_optimizer(optimizer, **param)

        self.train_size = int(x_train.shape[0])
        self.drop_last = bool(drop_last)
        if self.drop_last:
            self.iter_per_epoch = self.train_size // self.batch_size
            if self.iter_per_epoch == 0:
                raise ValueError("Trainer: drop_last=True with mini_batch_size=%d > %d training "
                                 "samples leaves no batch" % (self.batch_size, self.train_size))
        else:
            self.iter_per_epoch = -(-self.train_size // self.batch_size)
        self.max_iter = self.epochs * self.iter_per_epoch

        # Any book-style net works (params, gradient, loss, accuracy); xpnet's nets also
        # give their device, the loss of the gradient pass and buffers for checkpoints.
        first = next(iter(network.params.values()))
        self.device = getattr(network, "device", None) or device_of(first)
        self._net_keeps_loss = hasattr(network, "last_loss")
        if log_every is None:
            log_every = 1 if self.device.kind == "cpu" else _GPU_LOG_EVERY
        self.log_every = _positive_int(log_every, "log_every")
        self.progress = progress
        self.log = log
        self.on_step, self.on_epoch = on_step, on_epoch
        self.seed = seed
        self.checkpoint_dir = os.fspath(checkpoint_dir) if checkpoint_dir is not None else None
        if history_path is None and self.checkpoint_dir is not None:
            history_path = os.path.join(self.checkpoint_dir, HISTORY_NAME)
        self.history_path = os.fspath(history_path) if history_path is not None else None
        self.run_info = dict(run_info) if run_info else {}
        try:
            json.dumps(self.run_info)
        except TypeError as e:
            raise TypeError("Trainer: run_info must be JSON-serialisable: %s" % e) from None

        # Random streams: one for shuffling, xpnet's host generator for dropout masks.
        if seed is not None:
            backend.seed(seed)
            self._rng = CPU.xp.random.default_rng([int(seed), 1])
        else:
            self._rng = CPU.xp.random.default_rng(int(backend.host_rng().integers(2 ** 63)))

        if data_on_device is None:
            size = getattr(x_train, "nbytes", 0) + getattr(x_test, "nbytes", 0)
            data_on_device = self.device.kind == "gpu" and size <= _DEVICE_DATA_LIMIT
        self.data_on_device = bool(data_on_device) and self.device.kind == "gpu"
        if self.data_on_device:
            self._xtr, self._ttr = to_device(x_train, self.device), to_device(t_train, self.device)
            self._xte, self._tte = to_device(x_test, self.device), to_device(t_test, self.device)
        else:
            self._xtr, self._ttr, self._xte, self._tte = x_train, t_train, x_test, t_test

        # Progress through training.
        self.current_iter = 0       # optimizer steps done
        self.current_epoch = 0      # epochs completed (evaluated)
        self._pos = 0               # steps done in the current epoch
        self._perm = None           # this epoch's order (None between epochs)
        self._perm_dev = None
        self._pending = []          # device losses not yet read back
        self._in_step = False
        self._stop_requested = False
        self._bar = None
        self.last_checkpoint = None
        self.interrupt_checkpoint = None

        self.history = {
            "format": "xpnet-history",
            "config": self._config(),
            "train_loss": [], "train_acc": [], "test_acc": [],
            "epoch_seconds": [], "eval_seconds": [],
            "epochs_done": 0, "steps": 0, "final_test_acc": None, "status": "created",
        }
        if resume is not None:
            self.load_checkpoint(resume)

    # ------------------------------------------------------------------ book attributes
    @property
    def train_loss_list(self):
        return self.history["train_loss"]

    @property
    def train_acc_list(self):
        return self.history["train_acc"]

    @property
    def test_acc_list(self):
        return self.history["test_acc"]

    def _config(self):
        net = self.network
        opt = self.optimizer
        return {
            "network": dict(getattr(net, "config", {}) or {"type": type(net).__name__}),
            "dtype": self._dtype(),
            "device": self.device.name,
            "epochs": self.epochs,
            "mini_batch_size": self.batch_size,
            "iter_per_epoch": self.iter_per_epoch,
            "drop_last": self.drop_last,
            "train_size": self.train_size,
            "test_size": int(self.x_test.shape[0]),
            "optimizer": {"type": type(opt).__name__,
                          "hyper": {h: getattr(opt, h) for h in opt._hyper}},
            "evaluate_sample_num_per_epoch": self.evaluate_sample_num_per_epoch,
            "eval_batch_size": self.eval_batch_size,
            "log_every": self.log_every,
            "seed": self.seed,
            "xpnet_version": __version__,
            "run_info": self.run_info,
        }

    def _dtype(self):
        dt = getattr(self.network, "dtype", None)
        return str(dt if dt is not None else next(iter(self.network.params.values())).dtype)

    def _load_net_state(self, arrays):
        net = self.network
        if hasattr(net, "load_state_dict"):
            net.load_state_dict(arrays)
            return
        params = net.params
        if set(arrays) != set(params.keys()):
            raise ValueError("parameters %s in the file, %s in the network"
                             % (sorted(arrays), sorted(params.keys())))
        for k, a in arrays.items():
            if tuple(a.shape) != tuple(params[k].shape):
                raise ValueError("parameter %r: file has shape %s, the network %s"
                                 % (k, tuple(a.shape), tuple(params[k].shape)))
        for k, a in arrays.items():
            params[k][...] = to_device(a, self.device).astype(params[k].dtype, copy=False)

    def _say(self, msg):
        if self.verbose and self.log is not None:
            self.log(msg)

    # ------------------------------------------------------------------ training
    def train(self):
        """Train until ``epochs`` epochs are done; returns the history dict."""
        self.history["status"] = "running"
        self.history["config"]["epochs"] = self.epochs
        self._in_step = False
        old_handler = self._install_sigint()
        try:
            if self.current_epoch == 0 and self._pos == 0:
                self._say("training %s on %d samples (%d steps of %d per epoch, %d epoch%s) on %s"
                          % (type(self.network).__name__, self.train_size, self.iter_per_epoch,
                             self.batch_size, self.epochs, "" if self.epochs == 1 else "s",
                             self.device.name))
            while self.current_epoch < self.epochs:
                self._run_epoch()
        except KeyboardInterrupt:
            self._close_bar()
            self._interrupted()
        except BaseException:
            self._close_bar()
            raise
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        self._finish()
        return self.history

    def train_step(self):
        """One optimizer step (the book's method); an epoch's last step also evaluates."""
        if self._perm is None:
            self._begin_epoch()
        if self._pos < self.iter_per_epoch:
            self._step()
            if self._pos % self.log_every == 0 or self._pos == self.iter_per_epoch:
                self._flush()
        if self._pos >= self.iter_per_epoch:
            self._end_epoch()

    def _run_epoch(self):
        if self._perm is None:
            self._begin_epoch()
        show = self.progress if self.progress is not None else (
            self.verbose and hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        if show and self.verbose and self._pos < self.iter_per_epoch:
            self._bar = _Bar(self.iter_per_epoch, self._pos, "epoch %d/%d"
                             % (self.current_epoch + 1, self.epochs), self.batch_size)
        t0 = time.perf_counter()
        while self._pos < self.iter_per_epoch:
            self._step()
            if self._pos % self.log_every == 0 or self._pos == self.iter_per_epoch:
                self._flush()
            if self.on_step is not None:
                self.on_step(self)
            if self._stop_requested:
                raise KeyboardInterrupt
        self._epoch_train_seconds += time.perf_counter() - t0
        self._close_bar()
        self._end_epoch()
        if self._stop_requested:
            raise KeyboardInterrupt

    def _begin_epoch(self):
        self._perm = self._rng.permutation(self.train_size)
        self._perm_dev = None
        self._pos = 0
        self._epoch_train_seconds = 0.0

    def _batch(self, step):
        lo, hi = step * self.batch_size, min((step + 1) * self.batch_size, self.train_size)
        if self.data_on_device:
            if self._perm_dev is None:
                self._perm_dev = to_device(self._perm, self.device)
            idx = self._perm_dev[lo:hi]
            return self._xtr[idx], self._ttr[idx]
        idx = self._perm[lo:hi]
        return (to_device(self.x_train[idx], self.device),
                to_device(self.t_train[idx], self.device))

    def _step(self):
        xb, tb = self._batch(self._pos)
        self._in_step = True
        net = self.network
        grads = net.gradient(xb, tb)
        loss = net.last_loss if self._net_keeps_loss else net.loss(xb, tb)
        self.optimizer.update(net.params, grads)
        self._pending.append(loss)
        self._pos += 1
        self.current_iter += 1
        self._in_step = False

    def _flush(self):
        """Read pending losses back (one device sync), record them, check for NaN/Inf."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        xp = get_array_module(pending[0])
        if xp is CPU.xp:
            vals = [float(v) for v in pending]
        else:
            vals = [float(v) for v in asnumpy(xp.stack([xp.asarray(v) for v in pending]))]
        first = len(self.history["train_loss"])
        self.history["train_loss"].extend(vals)
        self.history["steps"] = self.current_iter
        if self._bar is not None:
            self._bar.update(len(vals), vals[-1])
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                self._diverged("loss is %r" % v, first + i + 1)

    def _diverged(self, what, step):
        epoch = (step - 1) // self.iter_per_epoch + 1
        batch = (step - 1) % self.iter_per_epoch + 1
        self._close_bar()
        self.history["status"] = "diverged"
        self._save_history()
        if self.last_checkpoint:
            where = ("last good checkpoint: %s (after epoch %d); resume from it with a lower "
                     "learning rate" % (self.last_checkpoint, self.current_epoch))
        elif self.checkpoint_dir:
            where = "no checkpoint was written yet (it is written at the end of each epoch)"
        else:
            where = "no checkpoint (pass checkpoint_dir= to keep one per epoch)"
        checks = ("checked every step" if self.log_every == 1
                  else "losses are checked every %d steps" % self.log_every)
        raise TrainingDivergedError(
            "training diverged: %s at step %d (epoch %d, batch %d of %d; %s). Parameters are "
            "no longer usable; %s." % (what, step, epoch, batch, self.iter_per_epoch, checks,
                                       where),
            step=step, epoch=epoch, checkpoint=self.last_checkpoint)

    def _evaluate(self):
        n = self.evaluate_sample_num_per_epoch
        xtr, ttr, xte, tte = self._xtr, self._ttr, self._xte, self._tte
        if n is not None:
            xtr, ttr, xte, tte = xtr[:n], ttr[:n], xte[:n], tte[:n]
        acc = self.network.accuracy
        return (acc(xtr, ttr, batch_size=self.eval_batch_size),
                acc(xte, tte, batch_size=self.eval_batch_size))

    def _end_epoch(self):
        self._flush()
        xp = get_array_module(next(iter(self.network.params.values())))
        # Cheap once per epoch: a NaN made by the epoch's last update shows up only here.
        if not all(bool(xp.isfinite(p).all()) for p in self.network.params.values()):
            self._diverged("a parameter is NaN or infinite", self.current_iter)
        t0 = time.perf_counter()
        train_acc, test_acc = self._evaluate()
        eval_s = time.perf_counter() - t0
        h = self.history
        h["train_acc"].append(train_acc)
        h["test_acc"].append(test_acc)
        h["epoch_seconds"].append(self._epoch_train_seconds)
        h["eval_seconds"].append(eval_s)
        self.current_epoch += 1
        h["epochs_done"] = self.current_epoch
        epoch_losses = h["train_loss"][-self.iter_per_epoch:]
        mean_loss = sum(epoch_losses) / len(epoch_losses)
        self._perm = self._perm_dev = None
        self._pos = 0
        secs = self._epoch_train_seconds
        ips = self.train_size / secs if secs > 0 else float("inf")
        self._say("epoch %d/%d  loss %.4f  train acc %.4f  test acc %.4f  (%.1f s, %.0f img/s, "
                  "eval %.1f s)" % (self.current_epoch, self.epochs, mean_loss, train_acc,
                                    test_acc, secs, ips, eval_s))
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        self._save_history()
        if self.on_epoch is not None:
            self.on_epoch(self)

    def _finish(self):
        h = self.history
        if h["test_acc"] and self.evaluate_sample_num_per_epoch is None:
            final = h["test_acc"][-1]
        else:
            final = self.network.accuracy(self._xte, self._tte, batch_size=self.eval_batch_size)
        h["final_test_acc"] = final
        h["status"] = "completed"
        self._say("final test accuracy: %.4f (%d images)" % (final, self.x_test.shape[0]))
        self._save_history()

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ Ctrl-C
    def _install_sigint(self):
        """Turn the first Ctrl-C into a stop request honoured after the current step, so the
        checkpoint is consistent; a second Ctrl-C interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            return None
        try:
            if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                return None
        except (ValueError, OSError):
            return None

        def handler(signum, frame):
            if self._stop_requested:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.verbose:
                sys.stderr.write("\ninterrupt: stopping after this step (Ctrl-C again to abort "
                                 "at once)\n")
        self._stop_requested = False
        signal.signal(signal.SIGINT, handler)
        return signal.default_int_handler

    def _interrupted(self):
        self._stop_requested = False
        self.history["status"] = "interrupted"
        if self._in_step:
            # Stopped inside an update: parameters may be half-updated, so no new checkpoint.
            self._pending = []
            self._in_step = False
            msg = "training interrupted during an update at step %d; " % (self.current_iter + 1)
            if self.last_checkpoint:
                msg += "resume from the last checkpoint %s" % self.last_checkpoint
            else:
                msg += "no checkpoint was written"
        else:
            try:
                self._flush()
            except TrainingDivergedError:
                raise
            msg = "training interrupted after step %d (epoch %d, batch %d of %d); " % (
                self.current_iter, self.current_epoch + 1, self._pos, self.iter_per_epoch)
            if self.checkpoint_dir is not None:
                path = self.save_checkpoint()
                self.interrupt_checkpoint = path
                msg += "checkpoint written to %s; continue with resume=%r" % (path, path)
            else:
                msg += "no checkpoint_dir was given, so nothing was saved"
        self._save_history()
        self._say(msg)
        raise KeyboardInterrupt(msg) from None

    # ------------------------------------------------------------------ persistence
    def _save_history(self):
        if self.history_path is None:
            return
        h = dict(self.history)
        h["train_loss"] = [_finite_or_none(v) for v in h["train_loss"]]
        atomic_write_bytes(self.history_path, _json_bytes(h))

    def save_checkpoint(self, path=None):
        """Write the whole training state atomically (``.npz`` arrays + ``.json`` meta, no
        pickle); returns the ``.npz`` path. Default: ``checkpoint_dir/checkpoint.npz``."""
        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("save_checkpoint: no path given and no checkpoint_dir set")
            path = os.path.join(self.checkpoint_dir, CHECKPOINT_NAME)
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        net = self.network
        state = net.state_dict() if hasattr(net, "state_dict") else {
            k: asnumpy(v).copy() for k, v in net.params.items()}
        arrays = {"net/" + k: v for k, v in state.items()}
        osd = self.optimizer.state_dict()
        for key, st in osd["state"].items():
            for slot, a in st.items():
                arrays["opt/%s/%s" % (key, slot)] = a
        if self._perm is not None:
            arrays["trainer/perm"] = self._perm
        h = dict(self.history)
        h["train_loss"] = [_finite_or_none(v) for v in h["train_loss"]]
        meta = {
            "format": _FORMAT, "version": 1, "xpnet_version": __version__,
            "epoch": self.current_epoch, "step": self.current_iter, "pos_in_epoch": self._pos,
            "mid_epoch": self._perm is not None,
            "epoch_train_seconds": getattr(self, "_epoch_train_seconds", 0.0),
            "mini_batch_size": self.batch_size, "train_size": self.train_size,
            "drop_last": self.drop_last,
            "architecture": dict(getattr(self.network, "config", {}) or {}),
            "dtype": self._dtype(),
            "optimizer": {"type": osd["type"], "hyper": osd["hyper"], "t": osd["t"]},
            "rng": {"shuffle": self._rng.bit_generator.state,
                    "host": backend.host_rng().bit_generator.state},
            "history": h,
        }
        save_arrays(path, arrays, meta)
        atomic_write_bytes(path[:-4] + ".json", _json_bytes(meta))
        self.last_checkpoint = path
        return path

    def load_checkpoint(self, path):
        """Restore everything `save_checkpoint` wrote; training continues where it stopped."""
        path = find_checkpoint(path)
        arrays, meta = load_arrays(path)
        if meta.get("format") != _FORMAT:
            raise ValueError("resume: %s is not an xpnet checkpoint (format %r); a parameter "
                             "file from save_params holds no training state"
                             % (path, meta.get("format")))
        for key, mine in (("mini_batch_size", self.batch_size), ("train_size", self.train_size),
                          ("drop_last", self.drop_last)):
            if meta[key] != mine and meta.get("mid_epoch"):
                raise ValueError("resume: %s was written with %s=%r mid-epoch, this Trainer has "
                                 "%r; use the same value to continue exactly"
                                 % (path, key, meta[key], mine))
        if meta["train_size"] != self.train_size:
            raise ValueError("resume: %s was trained on %d samples, x_train has %d"
                             % (path, meta["train_size"], self.train_size))
        want = meta["optimizer"]["type"]
        if want != type(self.optimizer).__name__:    # checked before anything is changed
            raise ValueError("resume: %s: optimizer state is for %r, this optimizer is %s (pass "
                             "the same optimizer)" % (path, want, type(self.optimizer).__name__))
        net_arrays = {k[4:]: v for k, v in arrays.items() if k.startswith("net/")}
        try:
            self._load_net_state(net_arrays)
        except ValueError as e:
            raise ValueError("resume: %s does not fit this network: %s" % (path, e)) from None
        st = {}
        for k, v in arrays.items():
            if k.startswith("opt/"):
                _, key, slot = k.split("/", 2)
                st.setdefault(key, {})[slot] = v
        o = meta["optimizer"]
        try:
            self.optimizer.load_state_dict({"type": o["type"], "hyper": o["hyper"], "t": o["t"],
                                            "state": st}, device=self.device)
        except ValueError as e:
            raise ValueError("resume: %s: %s (pass the same optimizer)" % (path, e)) from None
        self._rng.bit_generator.state = meta["rng"]["shuffle"]
        backend.host_rng().bit_generator.state = meta["rng"]["host"]
        self.current_epoch = int(meta["epoch"])
        self.current_iter = int(meta["step"])
        self._pos = int(meta["pos_in_epoch"])
        self._perm = arrays.get("trainer/perm") if meta.get("mid_epoch") else None
        self._perm_dev = None
        self._epoch_train_seconds = float(meta.get("epoch_train_seconds", 0.0))
        old = meta.get("history") or {}
        for k in ("train_loss", "train_acc", "test_acc", "epoch_seconds", "eval_seconds"):
            self.history[k] = [float("nan") if v is None else v for v in old.get(k, [])]
        self.history["epochs_done"] = self.current_epoch
        self.history["steps"] = self.current_iter
        self.history["config"] = self._config()   # hyper-parameters now come from the checkpoint
        self.history["resumed_from"] = path
        self.last_checkpoint = path
        if len(self.history["train_loss"]) != self.current_iter:
            raise ValueError("resume: %s is inconsistent: %d losses for %d steps"
                             % (path, len(self.history["train_loss"]), self.current_iter))
        self._say("resumed from %s at epoch %d, step %d" % (path, self.current_epoch,
                                                          self.current_iter))
        return self
