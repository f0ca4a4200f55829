"""The validation split the trainer holds out, and the best epoch on it.

`split` holds out ``round(fraction * N)`` training samples, chosen by a generator
with a fixed seed: the same images for every run and every seed on the same data,
so runs compare and a resumed run holds out what the first one did (each part keeps
the data's order). `Best` keeps a host copy of the net's state at the epoch with the
highest validation accuracy (the earliest on a tie) and counts the epochs since it,
for early stopping after ``patience`` of them. Nothing here decides when to
evaluate or writes files.
"""
import math
import numbers

from ..backend import device_of, namespace, new_host_rng, to_device
from . import arrays

__all__ = ["check_fraction", "split", "Best"]

SPLIT_SEED = 20230923       # fixed: the held-out images don't depend on the run's seed


def check_fraction(v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or \
            not 0 <= v < 1:
        raise ValueError("Trainer: val_split must be a fraction in [0, 1), got %r" % (v,))
    return float(v)


def _rows(a, idx):
    return namespace(a).take(a, to_device(idx, device_of(a)), axis=0)


def split(x, t, fraction):
    """``(x_train, t_train, x_val, t_val)`` with `fraction` of the samples held out."""
    n = int(x.shape[0])
    k = int(round(fraction * n))
    if k < 1 or k >= n:
        raise ValueError("Trainer: val_split=%g of %d training samples holds out %d; it must "
                         "leave at least one sample on each side" % (fraction, n, k))
    order = new_host_rng(SPLIT_SEED).permutation(n)
    held, kept = order[:k], order[k:]
    held.sort()
    kept.sort()
    return _rows(x, kept), _rows(t, kept), _rows(x, held), _rows(t, held)


def _state(net):
    return net.state_dict() if hasattr(net, "state_dict") else arrays.host_copy(net.params)


def _load(net, state, device):
    if hasattr(net, "load_state_dict"):
        net.load_state_dict(state)
    else:
        arrays.load_params(net.params, state, device)


class Best:
    """The best epoch so far by validation accuracy; `patience` (epochs, or None for
    never) stops training after that many epochs without a better one."""

    def __init__(self, patience=None):
        self.patience = patience
        self.epoch = self.acc = None
        self.bad_epochs = 0
        self.state = None           # host arrays by name
        self.last = None            # the last epoch's, while the best is put back

    def update(self, epoch, acc, net):
        """Record epoch `epoch`'s accuracy; True when it is the new best (state copied)."""
        if self.acc is None or acc > self.acc:
            self.epoch, self.acc, self.bad_epochs = epoch, acc, 0
            self.state = _state(net)
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self):
        return self.patience is not None and self.bad_epochs >= self.patience

    def put_back(self, net, device):
        """Load the best epoch's state into `net` (no-op before the first epoch); the
        last epoch's is kept for `take_back`, should training go on."""
        if self.state is None:
            return False
        self.last = _state(net)
        _load(net, self.state, device)
        return True

    def take_back(self, net, device):
        """Undo `put_back` (training goes on from the last epoch); True if it did."""
        last, self.last = self.last, None
        if last is None:
            return False
        _load(net, last, device)
        return True

    # -- checkpoints: the JSON part and the arrays ("best/<name>")
    def meta(self):
        return {"epoch": self.epoch, "acc": self.acc, "bad_epochs": self.bad_epochs}

    def arrays(self):
        return {} if self.state is None else {"best/" + k: v for k, v in self.state.items()}

    def check(self, meta, stored, live):
        """What is wrong with the stored best epoch (text), or None; changes nothing."""
        if not isinstance(meta, dict) or set(meta) != {"epoch", "acc", "bad_epochs"}:
            return "must be an object with epoch, acc and bad_epochs, got %r" % (meta,)
        e, acc, bad = meta["epoch"], meta["acc"], meta["bad_epochs"]
        if isinstance(bad, bool) or not isinstance(bad, int) or bad < 0:
            return "bad_epochs must be an int >= 0, got %r" % (bad,)
        state = {k[5:]: a for k, a in stored.items() if k.startswith("best/")}
        if e is None:
            return None if acc is None and not state else "has arrays or acc but no epoch"
        if isinstance(e, bool) or not isinstance(e, int) or e < 1 or isinstance(acc, bool) \
                or not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
            return "epoch must be an int >= 1 and acc a fraction, got %r and %r" % (e, acc)
        if set(state) != set(live):
            return "arrays best/... are %s; the network has %s" % (sorted(state), sorted(live))
        for k, a in state.items():
            problem = arrays.stored_array_problem(a, tuple(live[k].shape))
            if problem:
                return "array 'best/%s' %s" % (k, problem)
        return None

    def load(self, meta, stored):
        self.epoch, self.acc, self.bad_epochs = meta["epoch"], meta["acc"], meta["bad_epochs"]
        state = {k[5:]: a for k, a in stored.items() if k.startswith("best/")}
        self.state = state or None
