"""Checkpoints: the trainer's resumable state on disk, and back.

A checkpoint is ``<name>.npz`` (network state ``net/...``, optimizer slots
``opt/<param>/<slot>``, mid-epoch the sample order ``trainer/perm``, and the
metadata as JSON inside) plus a ``<name>.json`` copy of the metadata to read.
Both are written atomically; nothing is pickled. `restore` checks that a file is a
checkpoint that fits the trainer before it changes anything, and puts back the
network, optimizer, both random streams, the position in training and the history,
so a resumed run continues bit for bit.

The file format must stay readable (old checkpoints must still load). This module
must never run training, and touches arrays only through `arrays`.
"""
import os

from ..version import __version__
from ..serialization import atomic_write_bytes, load_arrays, save_arrays
from . import arrays, history, streams

__all__ = ["CHECKPOINT_NAME", "HISTORY_NAME", "FORMAT", "find_checkpoint", "paths", "save",
           "restore"]

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
        raise FileNotFoundError("resume: no checkpoint at %s (give a checkpoint .npz file or the "
                                "checkpoint directory holding %s)" % (p, CHECKPOINT_NAME))
    return p


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
    state = net.state_dict() if hasattr(net, "state_dict") else arrays.host_copy(net.params)
    out = {"net/" + k: v for k, v in state.items()}
    osd = tr.optimizer.state_dict()
    for key, slots in osd["state"].items():
        for slot, a in slots.items():
            out["opt/%s/%s" % (key, slot)] = a
    if tr._perm is not None:
        out["trainer/perm"] = tr._perm
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
    save_arrays(path, out, meta)
    atomic_write_bytes(path[:-4] + ".json", history.json_bytes(meta))
    return path


def _check(path, meta, tr):
    """Raise ValueError naming what doesn't fit; nothing has been changed yet."""
    if meta.get("format") != FORMAT:
        raise ValueError("resume: %s is not an xpnet checkpoint (format %r); a parameter "
                         "file from save_params holds no training state"
                         % (path, meta.get("format")))
    for key, mine in (("mini_batch_size", tr.batch_size), ("train_size", tr.train_size),
                      ("drop_last", tr.drop_last)):
        if meta[key] != mine and meta.get("mid_epoch"):
            raise ValueError("resume: %s was written with %s=%r mid-epoch, this Trainer has "
                             "%r; use the same value to continue exactly"
                             % (path, key, meta[key], mine))
    if meta["train_size"] != tr.train_size:
        raise ValueError("resume: %s was trained on %d samples, x_train has %d"
                         % (path, meta["train_size"], tr.train_size))
    want, mine = meta["optimizer"]["type"], type(tr.optimizer).__name__
    if want != mine:
        raise ValueError("resume: %s: optimizer state is for %r, this optimizer is %s (pass "
                         "the same optimizer)" % (path, want, mine))
    n_losses = len((meta.get("history") or {}).get("train_loss", []))
    if n_losses != int(meta["step"]):
        raise ValueError("resume: %s is inconsistent: %d losses for %d steps"
                         % (path, n_losses, int(meta["step"])))


def restore(tr, path):
    """Load the checkpoint at `path` (file or directory) into trainer `tr`; returns the
    file's path."""
    path = find_checkpoint(path)
    stored, meta = load_arrays(path)
    _check(path, meta, tr)
    net = tr.network
    net_state = {k[4:]: v for k, v in stored.items() if k.startswith("net/")}
    try:
        if hasattr(net, "load_state_dict"):
            net.load_state_dict(net_state)
        else:
            arrays.load_params(net.params, net_state, tr.device)
    except ValueError as e:
        raise ValueError("resume: %s does not fit this network: %s" % (path, e)) from None
    slots = {}
    for k, v in stored.items():
        if k.startswith("opt/"):
            _, key, slot = k.split("/", 2)
            slots.setdefault(key, {})[slot] = v
    o = meta["optimizer"]
    try:
        tr.optimizer.load_state_dict({"type": o["type"], "hyper": o["hyper"], "t": o["t"],
                                      "state": slots}, device=tr.device)
    except ValueError as e:
        raise ValueError("resume: %s: %s (pass the same optimizer)" % (path, e)) from None
    streams.restore(tr._rng, meta["rng"])
    tr.current_epoch, tr.current_iter = int(meta["epoch"]), int(meta["step"])
    tr._pos = int(meta["pos_in_epoch"])
    tr._perm = stored.get("trainer/perm") if meta.get("mid_epoch") else None
    tr._idx = None
    tr._epoch_train_seconds = float(meta.get("epoch_train_seconds", 0.0))
    tr.history.update(history.restored_lists(meta.get("history")),
                      epochs_done=tr.current_epoch, steps=tr.current_iter, resumed_from=path)
    tr.history["config"] = history.config(tr)   # hyper-parameters now come from the file
    return path
