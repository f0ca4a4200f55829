"""Parameter files: ``.npz`` arrays + JSON metadata, never pickle.

The metadata (architecture config, dtype, xpnet version) is stored inside the
``.npz`` as UTF-8 bytes under ``__xpnet_meta__`` so one file is the whole
truth, and also written beside it as ``<name>.json`` for people to read.
Writes go to a temporary file that is renamed into place, so a crash never
leaves a half-written file under the final name.
"""
import io
import json
import os
import tempfile

import numpy as np

from .version import __version__
from .backend import asnumpy, dtype_name

__all__ = ["atomic_write_bytes", "save_arrays", "load_arrays", "save_net", "load_into",
           "read_meta", "npz_path"]

META_KEY = "__xpnet_meta__"


def atomic_write_bytes(path, data):
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        # mkstemp makes 0600 files; give the usual umask-based mode instead
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def load_arrays(path):
    """Return ``(arrays, meta)`` from a file written by `save_arrays` (no pickle)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("parameter file not found: %s" % path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        # np.load would try pickle on it and report "pickled data", which misleads
        raise ValueError("%s is not a readable .npz file: it is not a zip archive (starts with %r)"
                         % (path, head))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise ValueError("%s is not a valid xpnet parameter file (it may need pickle, which "
                         "xpnet refuses to load): %s" % (path, e)) from None
    except Exception as e:  # zipfile.BadZipFile, truncated file ...
        raise ValueError("%s is not a readable .npz file: %s: %s"
                         % (path, type(e).__name__, e)) from None
    raw = arrays.pop(META_KEY, None)
    meta = json.loads(raw.tobytes().decode("utf-8")) if raw is not None else {}
    return arrays, meta


def read_meta(path):
    return load_arrays(path)[1]


def npz_path(file_name):
    file_name = os.fspath(file_name)
    return file_name if file_name.endswith(".npz") else file_name + ".npz"


def save_net(net, file_name, extra_meta=None):
    """Save a net's parameters and buffers plus its architecture; returns the path."""
    path = npz_path(file_name)
    meta = {
        "format": "xpnet-params",
        "xpnet_version": __version__,
        "architecture": dict(net.config),
        "dtype": dtype_name(net.dtype),
        "params": {k: list(v.shape) for k, v in net.params.items()},
    }
    if extra_meta:
        meta.update(extra_meta)
    save_arrays(path, net.state_dict(), meta)
    atomic_write_bytes(path[:-4] + ".json",
                       (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def load_into(net, file_name):
    """Load a parameter file into an existing net (any device, cast to its dtype)."""
    arrays, _ = load_arrays(npz_path(file_name) if not os.path.exists(file_name) else file_name)
    net.load_state_dict(arrays)
    return net
