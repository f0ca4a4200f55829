"""Data sets for xpnet: MNIST, Fashion-MNIST and an embedded MNIST sample.

Loaders return host NumPy arrays in the book's format
``((x_train, t_train), (x_test, t_test))``; move them to the GPU yourself.
Only NumPy and the standard library are used here.  See docs/datasets.md.
"""

from __future__ import annotations

from typing import List

from .download import USER_AGENT, DownloadError, default_cache_root
from .idx import IDXError, encode_idx, read_idx
from .mnist import (
    SPECS,
    DatasetNotFoundError,
    DatasetWarning,
    load_fashion_mnist,
    load_idx_dataset,
    load_mnist,
    locate_idx_dataset,
    search_path,
)
from .sample import SAMPLE_PATH, load_mnist_sample

__all__ = [
    "NAMES",
    "load",
    "load_mnist",
    "load_fashion_mnist",
    "load_mnist_sample",
    "load_idx_dataset",
    "class_names",
    "locate",
    "search_path",
    "read_idx",
    "encode_idx",
    "default_cache_root",
    "DatasetNotFoundError",
    "DatasetWarning",
    "DownloadError",
    "IDXError",
    "USER_AGENT",
]

NAMES = ("mnist", "fashion-mnist", "mnist-sample")


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key == "fashion":
        key = "fashion-mnist"
    if key not in NAMES:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    return key


def load(name: str, **kwargs):
    """``load("mnist" | "fashion-mnist" | "mnist-sample", **kwargs)``.

    Keyword arguments go to ``load_mnist``, ``load_fashion_mnist`` or
    ``load_mnist_sample``.
    """
    key = _canonical(name)
    if key == "mnist":
        return load_mnist(**kwargs)
    if key == "fashion-mnist":
        return load_fashion_mnist(**kwargs)
    return load_mnist_sample(**kwargs)


def class_names(name: str) -> List[str]:
    """Human-readable class names, index = label."""
    key = _canonical(name)
    return list(SPECS["mnist" if key == "mnist-sample" else key].classes)


def locate(name: str, data_dir=None, cache_dir=None, *, verify: bool = False) -> dict:
    """Where a data set is, or would be looked for, without downloading.

    Returns a dict with ``found`` (all files present), ``dir`` (the directory
    holding them all, or None), ``files`` (filename -> path or None),
    ``search_path`` (list of ``{"origin", "dir", "exists"}``), ``cache_dir``,
    ``mirrors`` and ``problems`` (only filled with ``verify=True``, which
    checks SHA-256s).  Meant for ``xpnet info``.
    """
    key = _canonical(name)
    if key == "mnist-sample":
        ok = SAMPLE_PATH.is_file()
        return {
            "name": key,
            "title": "MNIST sample (5,000 digits, embedded)",
            "found": ok,
            "dir": str(SAMPLE_PATH.parent) if ok else None,
            "files": {SAMPLE_PATH.name: str(SAMPLE_PATH) if ok else None},
            "search_path": [{"origin": "package", "dir": str(SAMPLE_PATH.parent),
                             "exists": SAMPLE_PATH.parent.is_dir()}],
            "cache_dir": None,
            "mirrors": [],
            "problems": {},
        }
    return locate_idx_dataset(key, data_dir, cache_dir, verify=verify)
