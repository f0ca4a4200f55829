"""The run's logs besides history.json: a CSV table (always, one row per epoch) and
TensorBoard event files (on request, through tensorboardX).

The CSV is rewritten atomically from the history after every epoch, so it always
agrees with history.json, also after a resume. TensorBoard files are append-only:
a resumed run opens its writer with ``purge_step`` just after the resumed step, so
TensorBoard drops what the first run logged after its checkpoint. Display only: it is
given Python numbers and host arrays, never decides anything about training.
"""
import io
import math
import os

from ..backend import asnumpy
from ..serialization import atomic_write_bytes

__all__ = ["COLUMNS", "csv_path", "csv_bytes", "write_csv", "TensorBoard"]

COLUMNS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_acc", "test_acc",
           "epoch_seconds", "step_seconds", "eval_seconds")


def csv_path(history_path):
    """The CSV beside ``history.json``: ``history.csv``."""
    root, ext = os.path.splitext(history_path)
    return (root if ext == ".json" else history_path) + ".csv"


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def epoch_rows(h, steps_per_epoch):
    """One dict per epoch of history `h`."""
    loss, lrs = h["train_loss"], h.get("lr", [])
    val = h.get("val_acc", [])
    rows = []
    for e in range(len(h["train_acc"])):
        lo, hi = e * steps_per_epoch, (e + 1) * steps_per_epoch
        part = [v for v in loss[lo:hi] if v is not None]
        secs = h["epoch_seconds"][e]
        rows.append({
            "epoch": e + 1, "step": min(hi, len(loss)),
            "lr": lrs[hi - 1] if hi - 1 < len(lrs) else None,
            "train_loss": sum(part) / len(part) if part else None,
            "train_acc": h["train_acc"][e], "val_acc": val[e] if e < len(val) else None,
            "test_acc": h["test_acc"][e], "epoch_seconds": secs,
            "step_seconds": secs / max(1, len(loss[lo:hi])),
            "eval_seconds": h["eval_seconds"][e]})
    return rows


def csv_bytes(h, steps_per_epoch):
    out = io.StringIO()
    out.write(",".join(COLUMNS) + "\n")
    for row in epoch_rows(h, steps_per_epoch):
        out.write(",".join(_cell(row[c]) for c in COLUMNS) + "\n")
    return out.getvalue().encode("utf-8")


def write_csv(path, h, steps_per_epoch):
    atomic_write_bytes(path, csv_bytes(h, steps_per_epoch))


def _writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("Trainer: tensorboard= needs the tensorboardX package: "
                          "pip install 'xpnet[tensorboard]'") from None
    return SummaryWriter


class TensorBoard:
    """Event files in `logdir`: per step ``train/loss`` and ``train/lr``; per epoch
    ``epoch/train_acc``, ``epoch/val_acc``, ``epoch/test_acc``,
    ``epoch/step_seconds``; with `histograms`, ``weights/<name>`` and
    ``grads/<name>`` at each epoch's end. The x axis is the optimizer step."""

    _opened = 0

    def __init__(self, logdir, histograms=False):
        self.logdir, self.histograms = os.fspath(logdir), bool(histograms)
        self._cls = _writer_class()     # a missing package is named at construction
        self._w = None

    def open(self, resumed_step=0):
        """Start a writer; after a resume at step S, TensorBoard drops the events of
        steps after S that an earlier writer left. One file per writer (the pid and
        a count in its name: two writers in one second must not share a file)."""
        if self._w is None:
            TensorBoard._opened += 1
            self._w = self._cls(self.logdir, purge_step=resumed_step + 1 if resumed_step
                                else None,
                                filename_suffix=".%d.%d" % (os.getpid(), TensorBoard._opened))

    def steps(self, first, losses, lrs):
        """Losses of steps ``first+1 ...`` and the learning rates they were taken at."""
        self.open(first)        # `train_step` called by hand, outside `train`
        for k, v in enumerate(losses):
            if math.isfinite(v):
                self._w.add_scalar("train/loss", v, first + k + 1)
        for k, v in enumerate(lrs):
            self._w.add_scalar("train/lr", v, first + k + 1)

    def epoch(self, row, params=None, grads=None):
        step = row["step"]
        self.open(step)
        for key in ("train_acc", "val_acc", "test_acc", "step_seconds", "train_loss"):
            if row.get(key) is not None:
                self._w.add_scalar("epoch/" + key, row[key], step)
        if self.histograms:
            for prefix, named in (("weights/", params or {}), ("grads/", grads or {})):
                for k, a in named.items():
                    if a is not None:
                        self._w.add_histogram(prefix + k, asnumpy(a), step)
        self._w.flush()

    def close(self):
        if self._w is not None:
            self._w.close()
            self._w = None
