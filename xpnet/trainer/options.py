"""The run's optional parts, checked once and updated after every epoch: the
learning-rate schedule, augmentation, and the best epoch on the validation split
with early stopping (docs/training.md).

`check` turns the Trainer's arguments into objects (errors name the argument);
`end_epoch` feeds an evaluated epoch to the schedule and the best-epoch keeper, and
writes ``best.npz`` (atomically) into the checkpoint folder when the epoch is the best
so far. It decides nothing about the loop beyond that.
"""
import os

from ..serialization import save_arrays
from . import augment as augment_mod
from . import checks, schedules

__all__ = ["BEST_NAME", "check", "end_epoch"]

BEST_NAME = "best.npz"


def check(lr_schedule, augment, early_stopping, val_split, x_train):
    """``(schedule or None, Augment or None, patience or None)``."""
    if lr_schedule is not None and not isinstance(lr_schedule, schedules.Schedule):
        if not isinstance(lr_schedule, str):
            raise TypeError("Trainer: lr_schedule must be a name (%s) or a schedule from "
                            "xpnet.trainer.schedules, got %r"
                            % (", ".join(schedules.NAMES), lr_schedule))
        lr_schedule = schedules.from_spec(lr_schedule)
    aug = augment_mod.from_spec(augment)
    if aug is not None:
        aug.check_input(tuple(x_train.shape))
    patience = checks.optional_count(early_stopping, "early_stopping")
    if patience is not None and not val_split:
        raise ValueError("Trainer: early_stopping=%d needs a validation split to watch; "
                         "pass val_split=0.1 (say) as well" % patience)
    return lr_schedule, aug, patience


def end_epoch(tr, val_acc, losses):
    """After epoch ``tr.current_epoch`` was evaluated (before its checkpoint)."""
    if tr.lr_schedule is not None:
        finite = [v for v in losses if v == v]
        metric, higher = ((val_acc, True) if val_acc is not None else
                          (sum(finite) / len(finite) if finite else None, False))
        tr.lr_schedule.epoch_end(metric, higher)
    best = tr._best
    if best is None:
        return
    if best.update(tr.current_epoch, val_acc, tr.network):
        tr.history.update(best_epoch=best.epoch, best_val_acc=best.acc)
        if tr.checkpoint_dir is not None and tr._writes:
            with tr._owning_folder():
                save_arrays(os.path.join(tr.checkpoint_dir, BEST_NAME), best.state,
                            {"format": "xpnet-best", "epoch": best.epoch, "val_acc": best.acc,
                             "architecture": dict(getattr(tr.network, "config", {}) or {})})
    if best.should_stop:
        tr.history["stopped_early_at"] = tr.current_epoch
        tr._say("early stopping: no better validation accuracy for %d epochs; keeping "
                "epoch %d (%.4f)" % (best.patience, best.epoch, best.acc))
