"""Checkpoints: the trainer's resumable state on disk, and back.

A checkpoint is ``<name>.npz`` (network state ``net/...``, optimizer slots
``opt/<param>/<slot>``, mid-epoch the sample order ``trainer/perm``, and the
metadata as JSON inside) plus a ``<name>.json`` copy of the metadata to read.
Both are written atomically; nothing is pickled, and a state holding NaN or Inf is
never written. `restore` checks every field of a file (types, ranges, the sample
order being a permutation, the random states, the optimizer's hyper-parameters,
names, shapes, dtypes and finiteness of every array) against itself and the trainer
before it changes anything, and names the file and the field it refuses; then it
puts back the network, optimizer, both random streams, the position in training and
the history, so a resumed run continues bit for bit.

The file format must stay readable (old checkpoints must still load). This module
must never run training, and touches arrays only through `arrays`.
"""
import math
import os
import stat

from ..version import __version__
from ..serialization import atomic_write_bytes, load_arrays, save_arrays
from . import arrays, history, runstate, streams

__all__ = ["CHECKPOINT_NAME", "HISTORY_NAME", "FORMAT", "find_checkpoint", "paths", "save",
           "restore", "live_state"]

CHECKPOINT_NAME = "checkpoint.npz"
HISTORY_NAME = "history.json"
FORMAT = "xpnet-checkpoint"


def find_checkpoint(path):
    """The checkpoint file for `path`: a ``.npz`` file, its ``.json`` twin, or a
    directory holding ``checkpoint.npz``."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, CHECKPOINT_NAME)
    elif p.endswith(".json"):
        p = p[:-5] + ".npz"
    if not os.path.isfile(p):
        why = _unreadable(p)
        if why:
            raise FileNotFoundError("resume: can't read the checkpoint %s: %s" % (p, why))
        raise FileNotFoundError("resume: no checkpoint at %s (give a checkpoint .npz file or the "
                                "checkpoint directory holding %s)" % (p, CHECKPOINT_NAME))
    return p


def _unreadable(p):
    """Why `p` exists but isn't a readable file (a symlink loop, a broken link, ...), or ''."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return ("it is a symbolic link to %s, which does not exist" % os.readlink(p)
                if os.path.islink(p) else "")
    except OSError as e:
        return e.strerror or str(e)
    return "it is a directory" if stat.S_ISDIR(st.st_mode) else "it is not a regular file"


def paths(checkpoint_dir, history_path):
    """``(checkpoint_dir, history_path)`` as str or None; the history goes in the
    checkpoint directory unless given."""
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        if history_path is None:
            history_path = os.path.join(checkpoint_dir, HISTORY_NAME)
    return checkpoint_dir, (os.fspath(history_path) if history_path is not None else None)


def save(tr, path=None):
    """Write trainer `tr`'s whole state to `path` (``.npz`` added; default
    ``checkpoint_dir/checkpoint.npz``); returns the path written."""
    if path is None:
        if tr.checkpoint_dir is None:
            raise ValueError("save_checkpoint: no path given and no checkpoint_dir set")
        path = os.path.join(tr.checkpoint_dir, CHECKPOINT_NAME)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    net = tr.network
    bad = arrays.first_non_finite(live_state(net))
    if bad is not None:
        raise ValueError("save_checkpoint: %r is NaN or infinite, so %s would not be a usable "
                         "checkpoint; nothing was written%s"
                         % (bad, path, "" if not tr.last_checkpoint else
                            " (the last good checkpoint is %s)" % tr.last_checkpoint))
    state = net.state_dict() if hasattr(net, "state_dict") else arrays.host_copy(net.params)
    out = {"net/" + k: v for k, v in state.items()}
    osd = tr.optimizer.state_dict()
    for key, slots in osd["state"].items():
        for slot, a in slots.items():
            out["opt/%s/%s" % (key, slot)] = a
    if tr._perm is not None:
        out["trainer/perm"] = tr._perm
    run_meta, run_arrays = runstate.save(tr)
    out.update(run_arrays)
    meta = {
        "format": FORMAT, "version": 1, "xpnet_version": __version__,
        "epoch": tr.current_epoch, "step": tr.current_iter, "pos_in_epoch": tr._pos,
        "mid_epoch": tr._perm is not None, "epoch_train_seconds": tr._epoch_train_seconds,
        "mini_batch_size": tr.batch_size, "train_size": tr.train_size,
        "drop_last": tr.drop_last, "architecture": dict(getattr(net, "config", {}) or {}),
        "dtype": arrays.network_dtype(net),
        "optimizer": {"type": osd["type"], "hyper": osd["hyper"], "t": osd["t"]},
        "rng": streams.state(tr._rng), "history": history.strict(tr.history),
    }
    if run_meta is not None:
        meta[runstate.KEY] = run_meta
    save_arrays(path, out, meta)
    atomic_write_bytes(path[:-4] + ".json", history.json_bytes(meta))
    return path


def live_state(net):
    """The net's arrays a checkpoint holds, by name (parameters, and buffers such as
    BatchNorm's running statistics for xpnet's nets), without copying them."""
    named = dict(net.params.items())
    if hasattr(net, "state_dict"):
        named.update(getattr(net, "buffers", None) or {})
    return named


class _Plan:
    """What `restore` will put in place, every piece checked."""


def _bad(path, field, problem):
    return ValueError("resume: %s: %s %s" % (path, field, problem))


def _field(path, d, key, prefix=""):
    if key not in d:
        raise _bad(path, "field %r" % (prefix + key),
                   "is missing (the file is damaged or was not written by xpnet)")
    return d[key]


def _count(path, d, key, minimum=0, prefix=""):
    v = _field(path, d, key, prefix)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _bad(path, "field %r" % (prefix + key), "must be an int >= %d, got %r" % (minimum, v))
    return v


def _flag(path, d, key):
    v = _field(path, d, key)
    if not isinstance(v, bool):
        raise _bad(path, "field %r" % key, "must be true or false, got %r" % (v,))
    return v


def _check_history(path, h, epoch, step):
    if not isinstance(h, dict):
        raise _bad(path, "field 'history'", "must be an object, got %r" % (type(h).__name__,))
    for key, value in h.items():
        if key not in history.LISTS:
            continue
        if not isinstance(value, list) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                for v in value):
            raise _bad(path, "field 'history/%s'" % key, "must be a list of numbers")
    n_losses = len(h.get("train_loss", []))
    if n_losses != step:
        raise ValueError("resume: %s is inconsistent: %d losses for %d steps"
                         % (path, n_losses, step))
    for key in ("train_acc", "test_acc"):
        n = len(h.get(key, []))
        if n != epoch:
            raise ValueError("resume: %s is inconsistent: %d values in history/%s for %d epochs"
                             % (path, n, key, epoch))


def _check_optimizer(path, stored, o, tr):
    """The optimizer's state dict, checked the way its own load_state_dict would, and
    its slots against the network's parameters (names, shapes, dtypes, finite)."""
    opt = tr.optimizer
    if not isinstance(o, dict):
        raise _bad(path, "field 'optimizer'", "must be an object, got %r" % (o,))
    want, mine = _field(path, o, "type", "optimizer/"), type(opt).__name__
    if want != mine:
        raise ValueError("resume: %s: optimizer state is for %r, this optimizer is %s (pass "
                         "the same optimizer)" % (path, want, mine))
    hyper = _field(path, o, "hyper", "optimizer/")
    if not isinstance(hyper, dict):
        raise _bad(path, "field 'optimizer/hyper'", "must be an object, got %r" % (hyper,))
    unknown = sorted(set(hyper) - set(opt._hyper))
    if unknown:
        raise _bad(path, "field 'optimizer/hyper'", "has %s, which %s does not take (it takes %s)"
                   % (", ".join(map(repr, unknown)), mine, ", ".join(opt._hyper)))
    try:
        type(opt)(**hyper)          # the constructor's checks (lr > 0, betas in [0, 1), ...)
    except (TypeError, ValueError) as e:
        raise _bad(path, "field 'optimizer/hyper'", "is not valid: %s" % e) from None
    t = _count(path, o, "t", 0, "optimizer/")
    params = dict(tr.network.params.items())
    slots = {}
    for k, a in stored.items():
        if not k.startswith("opt/"):
            continue
        parts = k.split("/")
        if len(parts) != 3 or parts[1] not in params or parts[2] not in opt._slots:
            raise _bad(path, "array %r" % k, "is not optimizer state of this network and %s "
                       "(expected opt/<parameter>/<one of %s>)" % (mine, ", ".join(opt._slots) or
                                                                  "no slots"))
        problem = arrays.stored_array_problem(a, tuple(params[parts[1]].shape))
        if problem:
            raise _bad(path, "array %r" % k, problem)
        slots.setdefault(parts[1], {})[parts[2]] = a
    for key, st in slots.items():
        missing = [s for s in opt._slots if s not in st]
        if missing:
            raise _bad(path, "optimizer state of %r" % key, "lacks %s" % ", ".join(missing))
    if t > 0 and opt._slots and not slots:
        raise _bad(path, "optimizer state", "is missing, but %s has taken %d steps" % (mine, t))
    return {"type": want, "hyper": hyper, "t": t, "state": slots}


def _check_net(path, stored, net):
    state = {k[4:]: a for k, a in stored.items() if k.startswith("net/")}
    live = live_state(net)
    missing, extra = sorted(set(live) - set(state)), sorted(set(state) - set(live))
    if missing or extra:
        raise ValueError("resume: %s does not fit this network: missing %s, unexpected %s"
                         % (path, missing or "none", extra or "none"))
    for k, a in state.items():
        cur = tuple(live[k].shape)
        if tuple(a.shape) != cur:
            raise ValueError("resume: %s does not fit this network: parameter %r: file has "
                             "shape %s, the network %s" % (path, k, tuple(a.shape), cur))
        problem = arrays.stored_array_problem(a)
        if problem:
            raise _bad(path, "array %r" % ("net/" + k), problem + (
                " (written after training diverged?); resume from an earlier checkpoint"
                if problem.startswith("holds") else ""))
    return state


def _check(path, stored, meta, tr):
    """Every field of the checkpoint, checked against itself and the trainer; returns
    a `_Plan`. Raises ValueError naming the file and the field; changes nothing."""
    if not isinstance(meta, dict):
        raise ValueError("resume: %s: its metadata must be a JSON object, got %s"
                         % (path, type(meta).__name__))
    if meta.get("format") != FORMAT:
        raise ValueError("resume: %s is not an xpnet checkpoint (format %r); a parameter "
                         "file from save_params holds no training state"
                         % (path, meta.get("format")))
    version = _field(path, meta, "version")
    if version != 1:
        raise _bad(path, "field 'version'", "is %r; this xpnet (%s) reads version 1"
                   % (version, __version__))
    mid = _flag(path, meta, "mid_epoch")
    got = {"mini_batch_size": _count(path, meta, "mini_batch_size", 1),
           "train_size": _count(path, meta, "train_size", 1),
           "drop_last": _flag(path, meta, "drop_last")}
    for key, mine in (("mini_batch_size", tr.batch_size), ("train_size", tr.train_size),
                      ("drop_last", tr.drop_last)):
        if got[key] != mine and mid:
            raise ValueError("resume: %s was written with %s=%r mid-epoch, this Trainer has "
                             "%r; use the same value to continue exactly"
                             % (path, key, got[key], mine))
    if got["train_size"] != tr.train_size:
        raise ValueError("resume: %s was trained on %d samples, x_train has %d"
                         % (path, got["train_size"], tr.train_size))
    plan = _Plan()
    plan.epoch = _count(path, meta, "epoch")
    plan.step = _count(path, meta, "step")
    plan.pos = _count(path, meta, "pos_in_epoch")
    if mid and plan.pos > tr.iter_per_epoch:
        raise _bad(path, "field 'pos_in_epoch'", "is %d, but an epoch here has %d steps"
                   % (plan.pos, tr.iter_per_epoch))
    if not mid and plan.pos:
        raise _bad(path, "field 'pos_in_epoch'", "is %d between epochs (mid_epoch is false)"
                   % plan.pos)
    if plan.step < plan.epoch + plan.pos:
        raise _bad(path, "field 'step'", "is %d, fewer than %d epochs and %d steps need"
                   % (plan.step, plan.epoch, plan.pos))
    secs = meta.get("epoch_train_seconds", 0.0)
    if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not (
            math.isfinite(secs) and secs >= 0):
        raise _bad(path, "field 'epoch_train_seconds'", "must be a number >= 0, got %r" % (secs,))
    plan.seconds = float(secs)
    plan.history = _field(path, meta, "history")
    _check_history(path, plan.history, plan.epoch, plan.step)
    problem = streams.check(tr._rng, _field(path, meta, "rng"))
    if problem:
        raise _bad(path, "field", problem)
    plan.net = _check_net(path, stored, tr.network)
    plan.optimizer = _check_optimizer(path, stored, _field(path, meta, "optimizer"), tr)
    plan.perm = None
    if mid:
        if "trainer/perm" not in stored:
            raise _bad(path, "array 'trainer/perm'", "is missing; a checkpoint written "
                       "mid-epoch needs the epoch's sample order")
        problem = arrays.permutation_problem(stored["trainer/perm"], tr.train_size)
        if problem:
            raise _bad(path, "array 'trainer/perm'", problem)
        plan.perm = arrays.host_int_array(stored["trainer/perm"])
    plan.run_state = runstate.check(path, meta.get(runstate.KEY), stored, tr,
                                    live_state(tr.network))
    for k in stored:
        if not k.startswith(("net/", "opt/", runstate.PREFIX)) and not (k == "trainer/perm"):
            raise _bad(path, "array %r" % k, "is not part of an xpnet checkpoint")
    return plan


def restore(tr, path):
    """Load the checkpoint at `path` (file or directory) into trainer `tr`; returns the
    file's path. Everything is checked before anything is changed."""
    path = find_checkpoint(path)
    stored, meta = load_arrays(path)
    plan = _check(path, stored, meta, tr)
    net = tr.network
    try:
        if hasattr(net, "load_state_dict"):
            net.load_state_dict(plan.net)
        else:
            arrays.load_params(net.params, plan.net, tr.device)
    except ValueError as e:
        raise ValueError("resume: %s does not fit this network: %s" % (path, e)) from None
    try:
        tr.optimizer.load_state_dict(plan.optimizer, device=tr.device)
    except ValueError as e:
        raise ValueError("resume: %s: %s (pass the same optimizer)" % (path, e)) from None
    streams.restore(tr._rng, meta["rng"])
    runstate.restore(tr, plan.run_state, stored)
    tr.current_epoch, tr.current_iter, tr._pos = plan.epoch, plan.step, plan.pos
    tr._perm = plan.perm
    tr._idx = None
    tr._epoch_train_seconds = plan.seconds
    tr.history.update(history.restored_lists(plan.history),
                      epochs_done=tr.current_epoch, steps=tr.current_iter, resumed_from=path)
    tr.history["config"] = history.config(tr)   # hyper-parameters now come from the file
    return path
