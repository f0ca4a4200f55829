"""The parts of a checkpoint that the run's options add: the learning-rate schedule's
state, the augmentation generator's state, and the best epoch on the validation
split (its figures in the metadata, its arrays as ``best/<name>``).

`save` gives ``(meta, arrays)`` for `checkpoint.save`; `check` checks a stored
``run_state`` against the trainer and raises ValueError naming the file and the
field (changing nothing); `restore` puts a checked state in place. A checkpoint
without ``run_state`` (written before these options existed, or by a run without
them) resumes only into a trainer without them.
"""
from . import streams

__all__ = ["KEY", "PREFIX", "save", "check", "restore"]

KEY = "run_state"
PREFIX = "best/"


def _uses(tr):
    return tr.lr_schedule is not None or tr._aug_rng is not None or tr._best is not None


def save(tr):
    """``(meta or None, arrays)``: None for a run without these options, whose
    checkpoint then has the format it always had."""
    if not _uses(tr):
        return None, {}
    meta = {
        "schedule": tr.lr_schedule.state_dict() if tr.lr_schedule is not None else None,
        "augment_rng": tr._aug_rng.bit_generator.state if tr._aug_rng is not None else None,
        "best": tr._best.meta() if tr._best is not None else None,
        "stopped_early_at": tr.history.get("stopped_early_at"),
    }
    return meta, (tr._best.arrays() if tr._best is not None else {})


def _bad(path, field, problem):
    return ValueError("resume: %s: field 'run_state/%s' %s" % (path, field, problem))


def _present(path, st, field, mine, what):
    """The stored part `field`; it and the trainer's option must both be there or not."""
    stored = st.get(field)
    if (stored is None) != (mine is None):
        raise ValueError("resume: %s was written %s %s; this Trainer has %s (pass the same "
                         "options to continue exactly)"
                         % (path, "without" if stored is None else "with", what,
                            "one" if mine is not None else "none"))
    return stored


def check(path, st, stored_arrays, tr, live):
    """The checked ``run_state`` (a dict), or None for a checkpoint without one."""
    uses = _uses(tr)
    has_best = any(k.startswith(PREFIX) for k in stored_arrays)
    if st is None:
        if uses:
            raise ValueError("resume: %s was written without lr_schedule, augment and "
                             "val_split; this Trainer has some (pass the same options to "
                             "continue exactly)" % path)
        if has_best:
            raise _bad(path, "best", "is missing, but the file has best/ arrays")
        return None
    if not isinstance(st, dict):
        raise _bad(path, "", "must be an object, got %r" % (st,))
    sd = _present(path, st, "schedule", tr.lr_schedule, "an lr schedule")
    if sd is not None:
        problem = tr.lr_schedule.check_state(sd)
        if problem:
            raise _bad(path, "schedule", problem)
    rng = _present(path, st, "augment_rng", tr._aug_rng, "augmentation")
    if rng is not None:
        problem = streams.check_state(tr._aug_rng, rng, "it")
        if problem:
            raise _bad(path, "augment_rng", problem)
    best = _present(path, st, "best", tr._best, "a validation split")
    if best is not None:
        problem = tr._best.check(best, stored_arrays, live)
        if problem:
            raise _bad(path, "best", problem)
    elif has_best:
        raise _bad(path, "best", "is null, but the file has best/ arrays")
    stopped = st.get("stopped_early_at")
    if stopped is not None and (isinstance(stopped, bool) or not isinstance(stopped, int)
                                or stopped < 1):
        raise _bad(path, "stopped_early_at", "must be null or an epoch >= 1, got %r"
                   % (stopped,))
    return st


def restore(tr, st, stored_arrays):
    if st is None:
        return
    if st["schedule"] is not None:
        tr.lr_schedule.load_state_dict(st["schedule"])
    if st["augment_rng"] is not None:
        tr._aug_rng.bit_generator.state = st["augment_rng"]
    if st["best"] is not None:
        tr._best.load(st["best"], stored_arrays)
        tr.history.update(best_epoch=tr._best.epoch, best_val_acc=tr._best.acc)
    tr.history["stopped_early_at"] = st.get("stopped_early_at")
