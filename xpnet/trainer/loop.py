"""`Trainer`: the book's training loop. It sequences epochs, steps, evaluation and
reports, and holds the book's attributes; every other job is a sibling module.

It must never operate on arrays itself (only through `arrays`, so any Array API
library works) nor hold a second copy of the step logic: every step goes through
`train_step`, and the update itself through the step object (`steps`: local,
distributed or compiled), so the loop never asks which one it has.
"""
import contextlib
import time

from . import (arrays, checkpoint, checks, divergence, folder, history, interrupt, logs,
               options, steps, streams, validation)
from . import progress as report   # `progress` is also an argument name

__all__ = ["Trainer"]

_EVAL_BATCH = 1000   # big batches evaluate several times faster per image


class Trainer:
    """Train `network` on ``(x_train, t_train)`` and evaluate on ``(x_test, t_test)``.

    The book's positional arguments, plus keyword-only extras (docs/training.md):
    seed, checkpoint_dir, resume (``epochs`` is the total), history_path, progress,
    log (default print), eval_batch_size, log_every (steps between reading losses
    back: 1 on the host, 50 on an accelerator), drop_last, data_on_device, on_step and
    on_epoch (``f(trainer)``), run_info (a JSON-able dict stored with the history), comm
    (an `xpnet.distributed` communicator: data-parallel over its ranks, docs/distributed.md),
    lr_schedule (`schedules.from_spec` name or object), augment (`augment.from_spec` spec
    or object), val_split (fraction held out; the best epoch on it is kept and put back
    at the end), early_stopping (patience in epochs), tensorboard (a log folder;
    tensorboard_histograms adds weight/gradient histograms), compile (`xpnet.compile_step`).

    Labels are checked once, here: integer classes in ``[0, outputs)`` or one-hot rows.
    While it writes (all of `train`, or one write outside it) the trainer holds an OS
    lock on ``checkpoint_dir``, so a second run into the same folder is refused
    (`FolderInUseError`, naming the first); taking it removes xpnet's stale temporaries.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None,
                 verbose=True, *, seed=None, checkpoint_dir=None, resume=None, history_path=None,
                 progress=None, log=print, eval_batch_size=None, log_every=None,
                 drop_last=False, data_on_device=None, on_step=None, on_epoch=None,
                 run_info=None, comm=None, lr_schedule=None, augment=None, val_split=0.0,
                 early_stopping=None, tensorboard=None, tensorboard_histograms=False,
                 compile=False):
        checks.check_data(x_train, t_train, x_test, t_test)
        n_classes = arrays.output_size(network, x_train[:1, ...])
        for name, t in (("t_train", t_train), ("t_test", t_test)):
            problem = arrays.label_problem(t, n_classes, name)
            if problem:
                raise ValueError("Trainer: " + problem)
        self.val_split = validation.check_fraction(val_split)
        self.x_val = self.t_val = None
        if self.val_split:
            x_train, t_train, self.x_val, self.t_val = validation.split(
                x_train, t_train, self.val_split)
        self.val_size = 0 if self.x_val is None else int(self.x_val.shape[0])
        self.network, self.verbose = network, bool(verbose)
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs = checks.count(epochs, "epochs", minimum=0)
        self.batch_size = checks.count(mini_batch_size, "mini_batch_size")
        self.evaluate_sample_num_per_epoch = checks.optional_count(
            evaluate_sample_num_per_epoch, "evaluate_sample_num_per_epoch")
        self.eval_batch_size = checks.count(
            max(self.batch_size, _EVAL_BATCH) if eval_batch_size is None else eval_batch_size,
            "eval_batch_size")
        self.optimizer = checks.make_optimizer(optimizer, optimizer_param)
        self.train_size = int(x_train.shape[0])
        self.drop_last = bool(drop_last)
        self.iter_per_epoch = checks.steps_per_epoch(self.train_size, self.batch_size,
                                                     self.drop_last)
        self.max_iter = self.epochs * self.iter_per_epoch
        self.device = arrays.network_device(network)
        self._measure = arrays.accuracy_function(network)
        self.log_every = checks.count(arrays.default_log_every(self.device)
                                      if log_every is None else log_every, "log_every")
        self.progress, self.log = progress, checks.callback(log, "log")
        self.on_step = checks.callback(on_step, "on_step")
        self.on_epoch = checks.callback(on_epoch, "on_epoch")
        self.run_info = checks.json_dict(run_info, "run_info")
        self.comm = comm
        self.lr_schedule, self.augment, self.early_stopping = options.check(
            lr_schedule, augment, early_stopping, self.val_split, x_train)
        self._stepper = steps.make(network, self.optimizer, comm, compile,
                                   requested=lambda: self._stop.requested)
        self.seed = seed = self._stepper.agree(seed, self.batch_size, self.train_size,
                                               self.drop_last)
        self._writes = self._stepper.writes     # data-parallel: rank 0 alone reports
        if not self._writes:
            self.verbose, self.progress = False, False
        self.checkpoint_dir, self.history_path = checkpoint.paths(checkpoint_dir, history_path)
        checks.file_path(self.history_path, "history_path")
        self._folder = (folder.FolderLock(self.checkpoint_dir, "checkpoint_dir")
                        if self.checkpoint_dir is not None and self._writes else None)
        self._rng = streams.shuffle_rng(seed)       # the same order on every rank
        self._aug_rng = streams.augment_rng(seed) if self.augment is not None else None
        self._stepper.fork_streams(seed)            # dropout masks differ per rank
        if self.lr_schedule is not None:
            self.lr_schedule.bind(self.optimizer.lr, self.iter_per_epoch, self.max_iter)
        self._best = (validation.Best(self.early_stopping) if self.val_split else None)
        self._tb = (logs.TensorBoard(tensorboard, tensorboard_histograms)
                    if tensorboard is not None and self._writes else None)
        self.data_on_device, placed = arrays.place(
            (x_train, t_train, x_test, t_test) + ((self.x_val, self.t_val) if self.val_size
                                                   else ()), self.device, data_on_device)
        self._xtr, self._ttr, self._xte, self._tte = placed[:4]
        self._xva, self._tva = placed[4:] if self.val_size else (None, None)
        self.current_iter = 0       # optimizer steps done
        self.current_epoch = 0      # epochs completed (evaluated)
        self._pos = 0               # steps done in the current epoch
        self._perm = None           # this epoch's host order (None between epochs)
        self._idx = None            # that order where the training data lives
        self._epoch_train_seconds = 0.0
        self._pending = []          # losses not yet read back
        self._pending_lr = []       # the learning rates they were taken at
        self._in_step = False       # inside an update: an interrupt leaves no checkpoint
        self._stop = interrupt.StopOnSigint(announce=self.verbose)
        self._bar = report.NO_BAR
        self.last_checkpoint = self.interrupt_checkpoint = None
        self._last_checkpoint_at = None     # (epoch, pos_in_epoch, step) of last_checkpoint
        self.history = history.new(history.config(self))
        if resume is not None:
            self.load_checkpoint(resume)
        self._stepper.begin()

    # The book's lists, kept in the history.
    train_loss_list = property(lambda self: self.history["train_loss"])
    train_acc_list = property(lambda self: self.history["train_acc"])
    test_acc_list = property(lambda self: self.history["test_acc"])

    def _say(self, msg):
        if self.verbose and self.log is not None:
            self.log(msg)

    # ------------------------------------------------------------------ training
    def train(self):
        """Train until ``epochs`` epochs are done; returns the history dict."""
        done, pos = self.current_epoch, self._pos
        if done > self.epochs or (done == self.epochs and pos):
            raise ValueError(
                "Trainer: epochs=%d is the total number of epochs, but %d epoch%s%s already "
                "done%s; pass epochs=%d or more to train further"
                % (self.epochs, done, "" if done == 1 else "s",
                   " and %d step%s are" % (pos, "" if pos == 1 else "s") if pos
                   else (" is" if done == 1 else " are"),
                   " (resumed from %s)" % self.history["resumed_from"]
                   if self.history.get("resumed_from") else "", done + 1))
        with self._owning_folder():
            return self._train()

    @contextlib.contextmanager
    def _owning_folder(self):
        """Hold checkpoint_dir's lock for the block (nothing to do without one, or
        when it is held already)."""
        if self._folder is None or self._folder.held:
            yield
            return
        self._folder.acquire()
        try:
            yield
        finally:
            self._folder.release()

    def _train(self):
        self.history["status"] = "running"
        self.history["config"]["epochs"] = self.epochs
        self._in_step = False
        if self._best is not None and self._best.take_back(self.network, self.device):
            self._stepper.reset()       # train on from the last epoch, not the best
        if self._tb is not None:
            self._tb.open(self.current_iter)
        try:
            with self._stop:
                if self.current_epoch == 0 and self._pos == 0:
                    self._say(report.start_line(
                        type(self.network).__name__, self.train_size, self.iter_per_epoch,
                        self.batch_size, self.epochs, arrays.device_name(self.device)
                        + self._stepper.where))
                while self.current_epoch < self.epochs and not self._stopped_early():
                    self._run_epoch()
        except KeyboardInterrupt:
            self._bar.close()
            self._interrupted()
        except BaseException:
            self._bar.close()
            raise
        finally:
            if self._tb is not None:
                self._tb.close()
        self._finish()
        return self.history

    def _stopped_early(self):
        return self._best is not None and self._best.should_stop

    def train_step(self):
        """One optimizer step (the book's method); an epoch's last step also evaluates."""
        if self._perm is None:
            self._begin_epoch()
        if self._pos < self.iter_per_epoch:
            t0 = time.perf_counter()
            self._step()
            if self._pos % self.log_every == 0 or self._pos == self.iter_per_epoch:
                self._flush()
            self._epoch_train_seconds += time.perf_counter() - t0
            if self.on_step is not None:
                self.on_step(self)
        if self._pos >= self.iter_per_epoch:
            self._end_epoch()

    def _run_epoch(self):
        if self._perm is None:
            self._begin_epoch()
        if report.wanted(self.progress, self.verbose) and self._pos < self.iter_per_epoch:
            self._bar = report.ProgressBar(self.iter_per_epoch, self._pos, "epoch %d/%d" % (
                self.current_epoch + 1, self.epochs), self.batch_size)
        epoch = self.current_epoch
        while self.current_epoch == epoch:
            self.train_step()
            # the first Ctrl-C: stop between steps (all ranks after the same step)
            if self._stepper.stop_agreed(self._stop.requested):
                raise KeyboardInterrupt

    def _begin_epoch(self):
        self._perm = self._rng.permutation(self.train_size)
        self._idx, self._pos, self._epoch_train_seconds = None, 0, 0.0

    def _step(self):
        if self._idx is None:
            self._idx = arrays.indices_for(self._perm, (self._xtr, self._ttr))
        glo = self._pos * self.batch_size
        ghi = min(glo + self.batch_size, self.train_size)
        lo, hi, share = self._stepper.rows(glo, ghi)    # this process's rows of the batch
        xb, tb = arrays.take_batch((self._xtr, self._ttr), self._idx, lo, hi, self.device)
        self._in_step = True
        if self.augment is not None:
            xb = self.augment(xb, self._aug_rng, ghi - glo, lo - glo)
        lr = self.optimizer.lr
        if self.lr_schedule is not None:
            lr = self.optimizer.lr = self.lr_schedule.lr(self.current_iter)
        self._pending.append(self._stepper(xb, tb, share))
        self._pending_lr.append(lr)
        self._pos += 1
        self.current_iter += 1
        self._in_step = False

    def _flush(self):
        """Read pending losses back (one transfer), record them, stop on NaN/Inf."""
        if not self._pending:
            return
        vals, self._pending = arrays.read_back(self._pending), []
        lrs, self._pending_lr = self._pending_lr, []
        first = history.add_losses(self.history, vals, self.current_iter, lrs)
        if self._tb is not None:
            self._tb.steps(first, vals, lrs)
        self._bar.update(len(vals), vals[-1])
        bad = divergence.first_non_finite(vals)
        if bad is not None:
            self._diverged("loss is %r" % vals[bad], first + bad + 1)

    def _diverged(self, what, step):
        self._bar.close()
        self.history["status"] = "diverged"
        self._save_history()
        raise divergence.diverged_error(what, step, self.iter_per_epoch, self.log_every,
                                        self._last_checkpoint_at, self.last_checkpoint,
                                        self.checkpoint_dir)

    def _accuracy(self, x, t, n=None):
        # `[:n, ...]`: the Array API wants every axis (or an ellipsis) indexed
        return self._stepper.accuracy(self._measure, x[:n, ...], t[:n, ...],
                                      self.eval_batch_size)

    def _end_epoch(self):
        self._flush()
        self._bar.close()
        self._stepper.settle()
        # Once per epoch: a NaN made by the epoch's last update shows up only here.
        bad = arrays.first_non_finite(checkpoint.live_state(self.network))
        if bad is not None:
            self._diverged("%r is NaN or infinite" % bad, self.current_iter)
        t0, n = time.perf_counter(), self.evaluate_sample_num_per_epoch
        train_acc = self._accuracy(self._xtr, self._ttr, n)
        test_acc = self._accuracy(self._xte, self._tte, n)
        val_acc = self._accuracy(self._xva, self._tva) if self.val_size else None
        eval_s = time.perf_counter() - t0
        self.current_epoch += 1
        history.add_epoch(self.history, train_acc, test_acc, self._epoch_train_seconds, eval_s,
                          self.current_epoch, val_acc)
        self._perm, self._idx, self._pos = None, None, 0
        losses = self.train_loss_list[-self.iter_per_epoch:]
        self._say(report.epoch_line(
            self.current_epoch, self.epochs, losses, train_acc, test_acc,
            self._epoch_train_seconds, self.train_size, eval_s, val_acc,
            None if self.lr_schedule is None else self.optimizer.lr))
        options.end_epoch(self, val_acc, losses)
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        self._save_history()
        if self._tb is not None:
            self._tb.epoch(logs.epoch_rows(self.history, self.iter_per_epoch)[-1],
                           self.network.params, self._stepper.last_grads)
        if self.on_epoch is not None:
            self.on_epoch(self)

    def _finish(self):
        h = self.history
        last = len(h["test_acc"])
        if self._best is not None and self._best.put_back(self.network, self.device):
            self._stepper.reset()       # the best epoch's parameters, for params.npz
            last = self._best.epoch
        if last and self.evaluate_sample_num_per_epoch is None:
            final = h["test_acc"][last - 1]
        else:
            final = self._accuracy(self._xte, self._tte)
        h["final_test_acc"], h["status"] = final, "completed"
        self._say("final test accuracy: %.4f (%d images)" % (final, self.x_test.shape[0]))
        self._save_history()

    def _interrupted(self):
        self._stop.clear()
        self.history["status"] = "interrupted"
        in_step, saved, self._in_step = self._in_step, None, False
        if in_step:   # parameters may be half-updated: keep the last good checkpoint
            self._pending, self._pending_lr = [], []
        else:
            self._flush()       # a NaN loss raises TrainingDivergedError here
            self._stepper.settle()
            bad = arrays.first_non_finite(checkpoint.live_state(self.network))
            if bad is not None:     # never save it, never call it good: training diverged
                self._diverged("%r is NaN or infinite" % bad, self.current_iter)
            if self.checkpoint_dir is not None:
                saved = self.interrupt_checkpoint = self.save_checkpoint()
        msg = interrupt.stop_message(in_step, self.current_iter, self.current_epoch + 1,
                                     self._pos, self.iter_per_epoch, saved, self.last_checkpoint)
        self._save_history()
        self._say(msg)
        raise KeyboardInterrupt(msg) from None

    # ------------------------------------------------------------------ persistence
    def _save_history(self):
        """history.json and the CSV log beside it (both rewritten atomically)."""
        if self.history_path is not None and self._writes:
            with self._owning_folder():
                history.write(self.history_path, self.history)
                logs.write_csv(logs.csv_path(self.history_path), self.history,
                               self.iter_per_epoch)

    def save_checkpoint(self, path=None):
        """Write the whole training state atomically (``.npz`` arrays + ``.json`` meta, no
        pickle); returns the ``.npz`` path. Default: ``checkpoint_dir/checkpoint.npz``.
        A state with a NaN or Inf is refused (ValueError), so a checkpoint is always good.
        With a `comm`, every rank calls it (BatchNorm statistics are averaged) and rank 0
        writes."""
        self._stepper.settle()
        if self._writes:
            with self._owning_folder():
                self.last_checkpoint = checkpoint.save(self, path)
        self.last_checkpoint = self._stepper.share(self.last_checkpoint, "writing a checkpoint")
        self._last_checkpoint_at = (self.current_epoch, self._pos, self.current_iter)
        return self.last_checkpoint

    def load_checkpoint(self, path):
        """Restore everything `save_checkpoint` wrote; training continues where it stopped."""
        self.last_checkpoint = checkpoint.restore(self, path)
        self._stepper.fork_streams()    # the file holds one dropout stream: fork it per rank
        self._stepper.reset()
        self._last_checkpoint_at = (self.current_epoch, self._pos, self.current_iter)
        self._say("resumed from %s at epoch %d, step %d"
                  % (self.last_checkpoint, self.current_epoch, self.current_iter))
        return self
