"""Learning-rate schedules: ``Trainer(lr_schedule=from_spec("cosine", warmup=2))``.

A schedule is a small object: the trainer binds it once to the optimizer's learning
rate and the run's length (`bind`), sets ``optimizer.lr = schedule.lr(step)`` before
every step (`step` counts optimizer steps from 0), tells it each epoch's end
(`epoch_end`, which only reduce-on-plateau uses), and stores `state_dict` in its
checkpoints, so a resumed run continues the schedule exactly.

Lengths (``step_size``, ``milestones``, ``warmup``) are in epochs; every schedule takes
``warmup``: the learning rate rises linearly from ``lr/warmup_steps`` to the schedule's
value over the first ``warmup`` epochs. Plain Python floats only: no arrays here.
"""
import math
import numbers

__all__ = ["Schedule", "Constant", "Step", "MultiStep", "Exponential", "Cosine", "Plateau",
           "OneCycle", "from_spec", "NAMES"]


def _number(schedule, name, v, low=0.0, high=None, low_open=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or (
            v <= low if low_open else v < low) or (high is not None and v > high):
        rng = "%s %g" % (">" if low_open else ">=", low)
        if high is not None:
            rng += " and <= %g" % high
        raise ValueError("lr schedule %s: %s must be a number %s, got %r"
                         % (schedule, name, rng, v))
    return float(v)


class Schedule:
    """Base class: subclasses set `name`, list their arguments in `_args` and give
    `_lr(step)` (the learning rate before warm-up)."""

    name = "constant"
    _args = ()

    def __init__(self, warmup=0.0):
        self.warmup = _number(self.name, "warmup", warmup)
        self.base_lr = self.steps_per_epoch = self.total_steps = None

    # -- set up by the trainer
    def bind(self, base_lr, steps_per_epoch, total_steps):
        """The optimizer's learning rate and the run's length; a resumed run's base
        learning rate comes from its checkpoint instead (`load_state_dict`)."""
        self.base_lr = float(base_lr)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.total_steps = max(1, int(total_steps))
        return self

    def _epoch(self, step):
        return step // self.steps_per_epoch

    def _check_bound(self):
        if self.base_lr is None:
            raise RuntimeError("lr schedule %s: bind() it to a learning rate first" % self.name)

    def _warmup_steps(self):
        return int(round(self.warmup * self.steps_per_epoch))

    def lr(self, step):
        """The learning rate for optimizer step `step` (0-based)."""
        self._check_bound()
        lr = self._lr(int(step))
        w = self._warmup_steps()
        if step < w:
            lr *= (step + 1) / w
        return lr

    def _lr(self, step):
        return self.base_lr

    def epoch_end(self, metric, higher_is_better):
        """Called after each evaluated epoch with the monitored figure."""

    # -- checkpoints
    def config(self):
        return {"name": self.name, **{a: getattr(self, a) for a in ("warmup",) + self._args}}

    def _state(self):
        return {}

    def state_dict(self):
        return {"config": self.config(), "base_lr": self.base_lr, "state": self._state()}

    def check_state(self, sd):
        """What is wrong with `sd` for this schedule (text), or None; changes nothing."""
        if not isinstance(sd, dict) or not isinstance(sd.get("config"), dict):
            return "must be an object with 'config', 'base_lr' and 'state', got %r" % (sd,)
        if sd["config"] != self.config():
            return ("was written by the schedule %s; this Trainer's is %s (pass the same "
                    "schedule to continue exactly)" % (_show(sd["config"]), _show(self.config())))
        b = sd.get("base_lr")
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not (
                math.isfinite(b) and b > 0):
            return "base_lr must be a number > 0, got %r" % (b,)
        if not isinstance(sd.get("state"), dict) or set(sd["state"]) != set(self._state()):
            return "state must hold %s, got %r" % (sorted(self._state()), sd.get("state"))
        return None

    def load_state_dict(self, sd):
        problem = self.check_state(sd)
        if problem:
            raise ValueError("lr schedule %s: the stored state %s" % (self.name, problem))
        self.base_lr = float(sd["base_lr"])
        self._load(sd["state"])
        return self

    def _load(self, state):
        pass

    def __repr__(self):
        return _show(self.config())


def _show(cfg):
    cfg = dict(cfg)
    name = cfg.pop("name", "?")
    return "%s(%s)" % (name, ", ".join("%s=%r" % kv for kv in sorted(cfg.items())))


class Constant(Schedule):
    """The optimizer's learning rate throughout (after the optional warm-up)."""


class Step(Schedule):
    """``lr * gamma ** (epoch // step_size)``."""
    name, _args = "step", ("step_size", "gamma")

    def __init__(self, step_size=10, gamma=0.1, warmup=0.0):
        super().__init__(warmup)
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or \
                step_size < 1:
            raise ValueError("lr schedule step: step_size must be a positive int (epochs), "
                             "got %r" % (step_size,))
        self.step_size, self.gamma = int(step_size), _number(self.name, "gamma", gamma, 0, 1, True)

    def _lr(self, step):
        return self.base_lr * self.gamma ** (self._epoch(step) // self.step_size)


class MultiStep(Schedule):
    """``lr * gamma ** (number of milestones passed)``; milestones are epochs."""
    name, _args = "multistep", ("milestones", "gamma")

    def __init__(self, milestones=(30, 60, 90), gamma=0.1, warmup=0.0):
        super().__init__(warmup)
        ms = list(milestones) if isinstance(milestones, (list, tuple)) else None
        if not ms or any(isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1
                         for m in ms) or sorted(set(ms)) != ms:
            raise ValueError("lr schedule multistep: milestones must be increasing positive "
                             "ints (epochs), got %r" % (milestones,))
        self.milestones = [int(m) for m in ms]
        self.gamma = _number(self.name, "gamma", gamma, 0, 1, True)

    def _lr(self, step):
        e = self._epoch(step)
        return self.base_lr * self.gamma ** sum(1 for m in self.milestones if e >= m)


class Exponential(Schedule):
    """``lr * gamma ** epoch``."""
    name, _args = "exponential", ("gamma",)

    def __init__(self, gamma=0.95, warmup=0.0):
        super().__init__(warmup)
        self.gamma = _number(self.name, "gamma", gamma, 0, 1, True)

    def _lr(self, step):
        return self.base_lr * self.gamma ** self._epoch(step)


class Cosine(Schedule):
    """Linear warm-up, then half a cosine from lr down to ``min_lr`` at the last step."""
    name, _args = "cosine", ("min_lr",)

    def __init__(self, warmup=0.0, min_lr=0.0):
        super().__init__(warmup)
        self.min_lr = _number(self.name, "min_lr", min_lr)

    def lr(self, step):
        self._check_bound()
        w = self._warmup_steps()
        if step < w:
            return self.base_lr * (step + 1) / w
        p = min(1.0, (step - w) / max(1, self.total_steps - w))
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * p))


class Plateau(Schedule):
    """Multiply lr by ``factor`` after ``patience`` epochs without improvement of the
    monitored figure (validation accuracy with a validation split, else the epoch's
    mean training loss), by more than ``threshold``; never below ``min_lr``."""
    name, _args = "plateau", ("factor", "patience", "threshold", "min_lr")

    def __init__(self, factor=0.1, patience=2, threshold=1e-4, min_lr=0.0, warmup=0.0):
        super().__init__(warmup)
        self.factor = _number(self.name, "factor", factor, 0, 1, True)
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or \
                patience < 0:
            raise ValueError("lr schedule plateau: patience must be an int >= 0 (epochs), "
                             "got %r" % (patience,))
        self.patience = int(patience)
        self.threshold = _number(self.name, "threshold", threshold)
        self.min_lr = _number(self.name, "min_lr", min_lr)
        self.best, self.bad_epochs, self.scale = None, 0, 1.0

    def _lr(self, step):
        return max(self.min_lr, self.base_lr * self.scale)

    def epoch_end(self, metric, higher_is_better):
        if metric is None or not math.isfinite(metric):
            return
        m = metric if higher_is_better else -metric
        if self.best is None or m > self.best + self.threshold:
            self.best, self.bad_epochs = m, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.bad_epochs = 0

    def _state(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs, "scale": self.scale}

    def _load(self, st):
        self.best, self.bad_epochs, self.scale = st["best"], int(st["bad_epochs"]), st["scale"]


class OneCycle(Schedule):
    """One cycle (Smith): from ``lr/div_factor`` up to lr over the first ``pct_start``
    of the run, then down to ``lr/(div_factor*final_div_factor)``, both halves cosine."""
    name, _args = "onecycle", ("pct_start", "div_factor", "final_div_factor")

    def __init__(self, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, warmup=0.0):
        super().__init__(warmup)
        self.pct_start = _number(self.name, "pct_start", pct_start, 0, 1, True)
        self.div_factor = _number(self.name, "div_factor", div_factor, 1)
        self.final_div_factor = _number(self.name, "final_div_factor", final_div_factor, 1)

    def _lr(self, step):
        top = self.base_lr
        start, end = top / self.div_factor, top / (self.div_factor * self.final_div_factor)
        up = max(1, int(round(self.pct_start * self.total_steps)))
        if step < up:
            a, b, p = start, top, step / up
        else:
            a, b, p = top, end, min(1.0, (step - up) / max(1, self.total_steps - 1 - up))
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * p))


_BY_NAME = {c.name: c for c in (Constant, Step, MultiStep, Exponential, Cosine, Plateau,
                                 OneCycle)}
NAMES = tuple(_BY_NAME)


def from_spec(name, **kw):
    """The schedule called `name` (one of `NAMES`) with its arguments, e.g.
    ``from_spec("cosine", warmup=2)`` or ``from_spec("step", step_size=5, gamma=0.5)``.
    A `Schedule` is returned as it is."""
    if isinstance(name, Schedule):
        if kw:
            raise TypeError("from_spec: arguments %s can't be applied to the schedule %r"
                            % (sorted(kw), name))
        return name
    cls = _BY_NAME.get(name)
    if cls is None:
        raise ValueError("lr schedule: unknown name %r; choose one of %s"
                         % (name, ", ".join(NAMES)))
    allowed = cls._args + ("warmup",)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError("lr schedule %s: unknown argument%s %s; it takes %s"
                        % (name, "s" if len(unknown) > 1 else "", ", ".join(unknown),
                           ", ".join(allowed)))
    return cls(**kw)
