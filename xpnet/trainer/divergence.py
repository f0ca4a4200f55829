"""Divergence (NaN/Inf) detection: finding the first bad loss and the error that says
where training broke and where the last good checkpoint is.

It works on Python floats the loop has already read back; it must never touch
arrays, write files or decide whether training goes on (the loop raises).
"""
import math

__all__ = ["TrainingDivergedError", "first_non_finite", "diverged_error"]


class TrainingDivergedError(FloatingPointError):
    """The loss (or a parameter) became NaN or infinite; training stopped."""

    def __init__(self, message, step=None, epoch=None, checkpoint=None):
        super().__init__(message)
        self.step, self.epoch, self.checkpoint = step, epoch, checkpoint


def first_non_finite(values):
    """Index of the first NaN/Inf in `values`, or None."""
    for i, v in enumerate(values):
        if not math.isfinite(v):
            return i
    return None


def diverged_error(what, step, iter_per_epoch, log_every, checkpoint_at, last_checkpoint,
                   checkpoint_dir):
    """The `TrainingDivergedError` for `what` found at global `step` (1-based).
    `checkpoint_at` is ``(epochs done, steps into the next, steps)`` of
    `last_checkpoint`, which the trainer only ever sets to a state without NaN/Inf."""
    epoch = (step - 1) // iter_per_epoch + 1
    batch = (step - 1) % iter_per_epoch + 1
    if last_checkpoint:
        done, pos, at_step = checkpoint_at
        when = ("after epoch %d, step %d" % (done, at_step) if not pos else
                "at step %d, epoch %d batch %d" % (at_step, done + 1, pos))
        where = ("last good checkpoint: %s (%s); resume from it with a lower learning rate"
                 % (last_checkpoint, when))
    elif checkpoint_dir:
        where = "no checkpoint was written yet (it is written at the end of each epoch)"
    else:
        where = "no checkpoint (pass checkpoint_dir= to keep one per epoch)"
    checks = ("checked every step" if log_every == 1
              else "losses are checked every %d steps" % log_every)
    return TrainingDivergedError(
        "training diverged: %s at step %d (epoch %d, batch %d of %d; %s). Parameters are "
        "no longer usable; %s." % (what, step, epoch, batch, iter_per_epoch, checks, where),
        step=step, epoch=epoch, checkpoint=last_checkpoint)
