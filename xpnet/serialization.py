"""Parameter files: ``.npz`` arrays + JSON metadata, never pickle.

The metadata (architecture config, dtype, xpnet version) is stored inside the
``.npz`` as UTF-8 bytes under ``__xpnet_meta__`` so one file is the whole
truth, and also written beside it as ``<name>.json`` for people to read.
Writes go to a temporary file that is renamed into place, so a crash never
leaves a half-written file under the final name.

Reading trusts nothing in the file: that is `xpnet.npz`'s job (`NpzReader`, the
limits it reads under). A parameter file is then checked against the names and shapes
a net expects, and its values are checked to be finite before anything is loaded.
"""
import io
import json
import os
import warnings

import numpy as np

from .version import __version__
from .backend import asnumpy, dtype_name
from .files import atomic_write_bytes, current_umask, open_regular
from .npz import (EXPANSION_FLOOR_BYTES, MAX_ARRAY_BYTES, MAX_EXPANSION, MAX_MEMBERS,
                  MAX_META_BYTES, META_KEY, NpzReader, expansion_allowance)
from .npz import MAX_META_EXPANSION, META_FLOOR_BYTES  # noqa: F401 (read here by tests)

__all__ = ["atomic_write_bytes", "save_arrays", "load_arrays", "save_net", "load_into",
           "read_meta", "npz_path", "NpzReader", "load_param_file", "check_finite",
           "current_umask", "open_regular", "expansion_allowance", "NonFiniteWarning",
           "MAX_ARRAY_BYTES", "MAX_META_BYTES", "MAX_MEMBERS", "MAX_EXPANSION",
           "EXPANSION_FLOOR_BYTES"]


class NonFiniteWarning(UserWarning):
    """Parameters holding NaN or infinite values were saved (a diverged net)."""


def save_arrays(path, arrays, meta=None, compress=False):
    """Save a dict of arrays (host or device) and a JSON-able `meta` dict atomically."""
    out = {}
    for k, v in arrays.items():
        if k == META_KEY:
            raise ValueError("array name %r is reserved" % META_KEY)
        out[k] = asnumpy(v)
    out[META_KEY] = np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode("utf-8"),
                                  dtype=np.uint8)
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **out)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def check_finite(arrays, path):
    """Refuse NaN or infinite values, naming the first array that holds one."""
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype.kind in "fc" and not np.isfinite(v).all():
            bad = int(np.count_nonzero(~np.isfinite(v)))
            raise ValueError("parameter %r in %s holds %d NaN or infinite value%s; refusing "
                             "to load it" % (k, path, bad, "" if bad == 1 else "s"))


def load_arrays(path, max_bytes=MAX_ARRAY_BYTES, max_expansion=MAX_EXPANSION):
    """Return ``(arrays, meta)`` from a file written by `save_arrays` (no pickle).

    Headers are checked before data is read: numbers only (no object, structured or
    string dtypes), sizes that agree with the zip entries, at most `max_bytes` of
    array data in all and at most `max_expansion` times the file's size (beyond
    `EXPANSION_FLOOR_BYTES`). Refusals are ``ValueError``; a missing file is
    ``FileNotFoundError``."""
    with NpzReader(path, max_bytes, max_expansion) as r:
        return r.read(), r.meta


def read_meta(path):
    """The metadata dict of a file, reading no array data."""
    with NpzReader(path) as r:
        return r.meta


def load_param_file(path, expected, what, allow_nonfinite=False):
    """``(arrays, meta)`` from a parameter file checked against `expected`
    (``{name: shape}``): names, shapes and float dtypes from the headers before any
    data is read, then finite values (unless `allow_nonfinite`)."""
    with NpzReader(path) as r:
        r.check_params(expected, what)
        arrays = r.read()
        meta = r.meta
    if not allow_nonfinite:
        check_finite(arrays, path)
    return arrays, meta


def _warn_non_finite(arrays, path, stacklevel):
    bad = [k for k, v in arrays.items()
           if v.dtype.kind in "fc" and not np.isfinite(v).all()]
    if bad:
        warnings.warn("save_params: parameter%s %s of %s hold%s NaN or infinite values (a "
                      "diverged net?); the file is written, but loading it takes "
                      "load_net(..., allow_nonfinite=True) or "
                      "net.load_params(..., allow_nonfinite=True)"
                      % ("" if len(bad) == 1 else "s", ", ".join(map(repr, bad)), path,
                         "s" if len(bad) == 1 else ""), NonFiniteWarning,
                      stacklevel=stacklevel + 1)


def npz_path(file_name):
    file_name = os.fspath(file_name)
    return file_name if file_name.endswith(".npz") else file_name + ".npz"


def existing_npz_path(file_name):
    """`file_name` if something is there (even a broken link, so its own error names
    it), else with ``.npz`` added."""
    file_name = os.fspath(file_name)
    return file_name if os.path.lexists(file_name) else npz_path(file_name)


def save_net(net, file_name, extra_meta=None):
    """Save a net's parameters and buffers plus its architecture; returns the path.

    A ``.pkl`` name (the book's scripts use one) gets ``.npz`` instead, with a warning
    that says so: xpnet writes no pickles."""
    name = os.fspath(file_name)
    if name.endswith(".pkl"):
        name = name[:-len(".pkl")] + ".npz"
        warnings.warn("save_params: xpnet writes no pickles; wrote %s (and %s) instead of %s "
                      "(load it with load_params(%r); load_params(%r) reads it only while "
                      "no %s is there)" % (name, name[:-4] + ".json", os.fspath(file_name),
                                          name, os.fspath(file_name), os.fspath(file_name)),
                      UserWarning, stacklevel=3)
    path = npz_path(name)
    meta = {
        "format": "xpnet-params",
        "xpnet_version": __version__,
        "architecture": dict(net.config),
        "dtype": dtype_name(net.dtype),
        "params": {k: list(v.shape) for k, v in net.params.items() if v is not None},
    }
    if extra_meta:
        meta.update(extra_meta)
    state = net.state_dict()
    _warn_non_finite(state, path, stacklevel=3)
    save_arrays(path, state, meta)
    atomic_write_bytes(path[:-4] + ".json",
                       (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def load_into(net, file_name, allow_nonfinite=False):
    """Load a parameter file into an existing net (any device, cast to its dtype).
    The file is checked against the net's own names and shapes before its data is
    read, and its values must be finite (unless `allow_nonfinite`)."""
    path = existing_npz_path(file_name)
    expected = {k: tuple(v.shape) for k, v in net.params.items() if v is not None}
    expected.update({k: tuple(v.shape) for k, v in net.buffers.items() if v is not None})
    arrays, _ = load_param_file(path, expected, type(net).__name__, allow_nonfinite)
    net.load_state_dict(arrays, allow_nonfinite=allow_nonfinite)
    return net
