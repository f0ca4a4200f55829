"""Argument checks for `Trainer`: turn the caller's values into validated settings.

Every error names the argument and the value it got. This module only inspects
Python values and array shapes; it must never read, copy or move array data.
"""
import json
import operator
import os

from ..optimizers import Optimizer, get_optimizer

__all__ = ["count", "optional_count", "check_data", "make_optimizer", "steps_per_epoch",
           "json_dict", "callback", "file_path"]


def count(v, name, minimum=1):
    """`v` as an int >= `minimum`; bools and floats are refused."""
    what = "a positive int" if minimum == 1 else "an int >= %d" % minimum
    if isinstance(v, bool):
        raise TypeError("Trainer: %s must be %s, got %r" % (name, what, v))
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError("Trainer: %s must be %s, got %r" % (name, what, v)) from None
    if v < minimum:
        raise ValueError("Trainer: %s must be %s, got %d" % (name, what, v))
    return v


def optional_count(v, name):
    return None if v is None else count(v, name)


def check_data(x_train, t_train, x_test, t_test):
    for name, x, t in (("train", x_train, t_train), ("test", x_test, t_test)):
        if not hasattr(x, "shape") or not hasattr(t, "shape"):
            raise TypeError("Trainer: x_%s and t_%s must be arrays, got %s and %s"
                            % (name, name, type(x).__name__, type(t).__name__))
        if x.shape[0] != t.shape[0]:
            raise ValueError("Trainer: x_%s has %d samples but t_%s has %d labels"
                             % (name, x.shape[0], name, t.shape[0]))
        if x.shape[0] == 0:
            raise ValueError("Trainer: x_%s is empty" % name)


def make_optimizer(optimizer, optimizer_param):
    """An `Optimizer` from a name and its parameters (the book's way), or the instance given."""
    if isinstance(optimizer, Optimizer):
        if optimizer_param is not None:
            raise ValueError("Trainer: optimizer_param can't be used with an Optimizer "
                             "instance (%r); set its hyper-parameters when creating it"
                             % (optimizer,))
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError("Trainer: optimizer must be a name like 'SGD' or 'Adam' or an "
                        "Optimizer, got %r" % (optimizer,))
    param = {"lr": 0.01} if optimizer_param is None else dict(optimizer_param)
    return get_optimizer(optimizer, **param)


def steps_per_epoch(train_size, batch_size, drop_last):
    """ceil(N / batch) steps, or floor with `drop_last` (which must leave one batch)."""
    if not drop_last:
        return -(-train_size // batch_size)
    if train_size < batch_size:
        raise ValueError("Trainer: drop_last=True with mini_batch_size=%d > %d training "
                         "samples leaves no batch" % (batch_size, train_size))
    return train_size // batch_size


def json_dict(v, name):
    d = dict(v) if v else {}
    try:
        json.dumps(d)
    except TypeError as e:
        raise TypeError("Trainer: %s must be JSON-serialisable: %s" % (name, e)) from None
    return d


def callback(f, name):
    """None or a callable (checked now, not at the first step or epoch)."""
    if f is not None and not callable(f):
        raise TypeError("Trainer: %s must be a function or None, got %r" % (name, f))
    return f


def file_path(path, name):
    """A path a file will be written to: not an existing directory."""
    if path is not None and os.path.isdir(path):
        raise IsADirectoryError("Trainer: %s %s is a directory; give a file name, such as %s"
                                % (name, path, os.path.join(path, "history.json")))
    return path
