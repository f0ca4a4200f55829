"""The history: the dict `Trainer.train` returns and ``history.json`` holds (losses per
step, accuracies and times per epoch, status, and the run's configuration).

Bookkeeping on Python numbers only: it must never touch arrays or decide anything
about training. Files are strict JSON (a NaN loss is written as null), written
atomically.
"""
import json
import math

from ..version import __version__
from ..serialization import atomic_write_bytes
from .arrays import device_name, network_dtype

__all__ = ["config", "new", "add_losses", "add_epoch", "strict", "json_bytes", "write",
           "restored_lists", "LISTS"]

_LISTS = ("train_loss", "lr", "train_acc", "val_acc", "test_acc", "epoch_seconds",
          "eval_seconds")
LISTS = _LISTS   # the per-step and per-epoch lists (checkpoint.restore checks them)


def config(tr):
    """The run's settings, from trainer `tr` (stored in the history and its files)."""
    opt = tr.optimizer
    return {
        "network": dict(getattr(tr.network, "config", {}) or {"type": type(tr.network).__name__}),
        "dtype": network_dtype(tr.network), "device": device_name(tr.device),
        "epochs": tr.epochs, "mini_batch_size": tr.batch_size,
        "iter_per_epoch": tr.iter_per_epoch, "drop_last": tr.drop_last,
        "train_size": tr.train_size, "test_size": int(tr.x_test.shape[0]),
        "optimizer": {"type": type(opt).__name__,
                      "hyper": {h: getattr(opt, h) for h in opt._hyper}},
        "evaluate_sample_num_per_epoch": tr.evaluate_sample_num_per_epoch,
        "eval_batch_size": tr.eval_batch_size, "log_every": tr.log_every, "seed": tr.seed,
        "xpnet_version": __version__, "run_info": tr.run_info,
        "lr_schedule": tr.lr_schedule.config() if tr.lr_schedule is not None else None,
        "augment": tr.augment.spec if tr.augment is not None else None,
        "val_split": tr.val_split, "val_size": tr.val_size,
        "early_stopping": tr.early_stopping,
    }


def new(cfg):
    h = {"format": "xpnet-history", "config": cfg, "epochs_done": 0, "steps": 0,
         "final_test_acc": None, "status": "created", "best_epoch": None,
         "best_val_acc": None, "stopped_early_at": None}
    h.update((k, []) for k in _LISTS)
    return h


def add_losses(h, losses, steps, lrs=()):
    """Append step losses (and the learning rates they were taken at); returns how
    many were recorded before them."""
    first = len(h["train_loss"])
    h["train_loss"].extend(losses)
    h["lr"].extend(lrs)
    h["steps"] = steps
    return first


def add_epoch(h, train_acc, test_acc, train_seconds, eval_seconds, epochs_done,
              val_acc=None):
    h["train_acc"].append(train_acc)
    if val_acc is not None:
        h["val_acc"].append(val_acc)
    h["test_acc"].append(test_acc)
    h["epoch_seconds"].append(train_seconds)
    h["eval_seconds"].append(eval_seconds)
    h["epochs_done"] = epochs_done


def strict(h):
    """A copy that strict JSON accepts: non-finite losses (and unknown rates) become null."""
    h = dict(h)
    for k in ("train_loss", "lr"):
        h[k] = [v if v is None or math.isfinite(v) else None for v in h.get(k, [])]
    return h


def json_bytes(obj):
    return (json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def write(path, h):
    atomic_write_bytes(path, json_bytes(strict(h)))


def restored_lists(stored):
    """The lists of a stored history (null losses back to NaN)."""
    stored = stored or {}
    lists = {k: [float("nan") if v is None else v for v in stored.get(k, [])] for k in _LISTS}
    # a checkpoint from before rates were recorded: unknown (NaN) for its steps
    missing = len(lists["train_loss"]) - len(lists["lr"])
    lists["lr"] = [float("nan")] * max(0, missing) + lists["lr"]
    return lists
