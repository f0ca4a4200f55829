"""MNIST and Fashion-MNIST: find the four IDX files, verify, download, load.

Where files come from, in order (each file independently, first valid copy wins):

1. ``data_dir=`` argument, then ``$XPNET_DATA_DIR``: for a directory ``R``,
   ``R/<dataset>/`` is tried, then ``R`` itself;
2. the user cache ``<cache root>/<dataset>/`` (``$XDG_CACHE_HOME/xpnet`` or
   ``~/.cache/xpnet``);
3. known system locations (Debian's ``dataset-fashion-mnist`` package);
4. a download from the mirrors into the cache.

Every file is checked against its known SHA-256 before use.  A cached file
that fails the check is downloaded again; a bad file elsewhere is skipped with
a warning.  Nothing is written outside the cache directory.  What each dataset is
(names, sizes, checksums, mirrors) is in `specs`.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .download import DEFAULT_TIMEOUT, DownloadError, default_cache_root, download_file, mirror_url
from .idx import IDXError, gunzip, read_idx
from .specs import ROLES, FileSpec, DatasetSpec, SPECS, Checksums, PathLike  # noqa: F401

__all__ = [
    "DatasetNotFoundError",
    "DatasetWarning",
    "FileSpec",
    "DatasetSpec",
    "SPECS",
    "load_mnist",
    "load_fashion_mnist",
    "load_idx_dataset",
    "locate_idx_dataset",
    "search_path",
]


class DatasetNotFoundError(FileNotFoundError):
    """No valid copy of a data set could be found or downloaded."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DatasetWarning(UserWarning):
    """A data file was found but rejected (bad checksum or format)."""


# ---------------------------------------------------------------- search path

def search_path(
    name: str,
    data_dir: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    system_dirs: Optional[Sequence[PathLike]] = None,
) -> List[Tuple[str, Path]]:
    """Directories searched for ``name``'s files, in order, as ``(origin, dir)``.

    ``origin`` is one of ``"data_dir"``, ``"XPNET_DATA_DIR"``, ``"cache"``,
    ``"system"``.  ``cache_dir`` is the cache *root*; files live in
    ``<cache_dir>/<name>/``.
    """
    spec = SPECS[name]
    out: List[Tuple[str, Path]] = []
    roots = [("data_dir", data_dir), ("XPNET_DATA_DIR", os.environ.get("XPNET_DATA_DIR") or None)]
    for origin, root in roots:
        if root is not None:
            r = Path(root).expanduser()
            out += [(origin, r / spec.name), (origin, r)]
    out.append(("cache", cache_path(name, cache_dir)))
    for d in spec.system_dirs if system_dirs is None else system_dirs:
        out.append(("system", Path(d)))
    # A directory reached twice (e.g. data_dir == cache) is searched once.
    seen, unique = set(), []
    for origin, d in out:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            unique.append((origin, d))
    return unique


def cache_path(name: str, cache_dir: Optional[PathLike] = None) -> Path:
    """The directory downloads of ``name`` go to."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / SPECS[name].name


def mirror_list(name: str, mirrors: Optional[Sequence[str]] = None) -> List[str]:
    """``mirrors`` if given, else ``$XPNET_<NAME>_MIRRORS`` (comma separated), else built-in."""
    if mirrors is not None:
        return list(mirrors)
    spec = SPECS[name]
    env = os.environ.get(spec.mirrors_env)
    if env is not None:
        return [m.strip() for m in env.split(",") if m.strip()]
    return list(spec.mirrors)


# ---------------------------------------------------------------- verification

def _accepted(fs: FileSpec, checksums: Optional[Checksums]) -> Tuple[set, Optional[str]]:
    if checksums is None:
        return set(fs.sha256), fs.raw_sha256
    want = checksums.get(fs.filename)
    if want is None:
        raise KeyError(f"checksums= has no entry for {fs.filename}")
    return ({want} if isinstance(want, str) else set(want)), None


def _load_checked(path: Path, fs: FileSpec, checksums: Optional[Checksums]) -> np.ndarray:
    """Read, verify and parse one file; ``ValueError`` says why it is rejected."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > fs.max_size:   # never read a huge file into memory to hash it
            raise ValueError(f"{size} bytes, larger than any valid {fs.filename} "
                             f"({fs.max_size} bytes at most)")
        data = f.read(fs.max_size + 1)
    if len(data) > fs.max_size:  # grew while being read
        raise ValueError(f"larger than any valid {fs.filename} ({fs.max_size} bytes at most)")
    accepted, raw_hash = _accepted(fs, checksums)
    digest = hashlib.sha256(data).hexdigest()
    # With checksums= (tests), only the number of items may differ.
    shape = fs.shape if checksums is None else (None,) + fs.shape[1:]
    if digest in accepted:
        return read_idx(data, name=str(path), expect_shape=shape)
    problem = f"SHA-256 {digest} is not a known value for {fs.filename} ({len(data)} bytes)"
    try:
        raw = gunzip(data, str(path), fs.raw_size) if data[:2] == b"\x1f\x8b" else data
        arr = read_idx(raw, name=str(path), expect_shape=shape)
    except IDXError as e:
        raise ValueError(f"{problem}; {e}") from None
    if raw_hash is not None and hashlib.sha256(raw).hexdigest() == raw_hash:
        return arr  # same content, compressed differently
    raise ValueError(problem + "; the IDX structure looks fine, so the content differs")


# ---------------------------------------------------------------- locate / fetch

def locate_idx_dataset(
    name: str,
    data_dir: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    *,
    verify: bool = False,
    system_dirs: Optional[Sequence[PathLike]] = None,
) -> dict:
    """Where ``name``'s files are (or would be looked for); never downloads.

    Without ``verify`` a file counts as found when it exists; with it, only
    when it passes the checksum (hashing ~40 MB, a fraction of a second).
    """
    spec = SPECS[name]
    path = search_path(name, data_dir, cache_dir, system_dirs)
    files: Dict[str, Optional[str]] = {}
    problems: Dict[str, str] = {}
    for fs in spec.files.values():
        files[fs.filename] = None
        for _, d in path:
            p = d / fs.filename
            if not p.is_file():
                continue
            if verify:
                try:
                    _load_checked(p, fs, None)
                except (OSError, ValueError) as e:
                    problems[str(p)] = str(e)
                    continue
            files[fs.filename] = str(p)
            break
    dirs = {str(Path(p).parent) for p in files.values() if p}
    complete = all(files.values())
    return {
        "name": spec.name,
        "title": spec.title,
        "found": complete,
        "dir": dirs.pop() if complete and len(dirs) == 1 else None,
        "files": files,
        "search_path": [{"origin": o, "dir": str(d), "exists": d.is_dir()} for o, d in path],
        "cache_dir": str(cache_path(name, cache_dir)),
        "mirrors": mirror_list(name),
        "problems": problems,
    }


def load_idx_dataset(
    name: str,
    data_dir: Optional[PathLike] = None,
    *,
    cache_dir: Optional[PathLike] = None,
    mirrors: Optional[Sequence[str]] = None,
    download: bool = True,
    progress: Optional[bool] = None,
    timeout: float = DEFAULT_TIMEOUT,
    checksums: Optional[Checksums] = None,
    system_dirs: Optional[Sequence[PathLike]] = None,
) -> Dict[str, np.ndarray]:
    """Find, verify (downloading if needed) and parse the four IDX files.

    Returns ``{role: uint8 array}`` for the roles in ``ROLES``.
    ``checksums`` (``{filename: sha256 or [sha256, ...]}``) replaces the
    built-in table; it is meant for tests with synthetic files.
    """
    spec = SPECS[name]
    path = search_path(name, data_dir, cache_dir, system_dirs)
    cache = cache_path(name, cache_dir)
    found: Dict[str, np.ndarray] = {}
    rejected: List[Tuple[str, str]] = []   # (path, reason)
    missing: List[str] = []

    for role, fs in spec.files.items():
        for origin, d in path:
            p = d / fs.filename
            if not p.is_file():
                continue
            try:
                found[role] = _load_checked(p, fs, checksums)
                break
            except (OSError, ValueError) as e:
                rejected.append((str(p), str(e)))
                if origin != "cache":  # the cache copy is simply fetched again
                    warnings.warn(f"xpnet: ignoring {p}: {e}", DatasetWarning, stacklevel=3)
        else:
            missing.append(role)

    failures: List[Tuple[str, str]] = []
    urls = mirror_list(name, mirrors)
    if missing and download:
        unreachable: Dict[str, str] = {}
        for role in list(missing):
            fs = spec.files[role]

            def check(tmp: Path, fs: FileSpec = fs) -> None:
                _load_checked(tmp, fs, checksums)

            try:
                p = download_file(fs.filename, cache, urls, check, timeout=timeout,
                                  progress=progress, unreachable=unreachable,
                                  max_bytes=fs.max_size)
                found[role] = _load_checked(p, fs, checksums)
                missing.remove(role)
            except DownloadError as e:
                failures += e.failures

    if missing:
        raise DatasetNotFoundError(_not_found_message(
            spec, [spec.files[r].filename for r in missing], path, rejected,
            urls, failures, download, cache))
    return found


def _not_found_message(spec, missing, path, rejected, urls, failures, download, cache) -> str:
    lines = [f"{spec.title} is not available: {len(missing)} of 4 files could not be "
             "found or downloaded.",
             "Missing: " + ", ".join(missing),
             "Looked in (in this order):"]
    for origin, d in path:
        state = "" if d.is_dir() else "  [does not exist]"
        lines.append(f"  {d}  ({origin}){state}")
    if rejected:
        lines.append("Rejected files:")
        lines += [f"  {p}: {why}" for p, why in rejected]
    if not download:
        lines.append("Downloading was disabled (download=False).")
    elif failures:
        lines.append("Download attempts (mirrors tried in order):")
        lines += [f"  {u}: {why}" for u, why in failures]
    elif not urls:
        lines.append("No download mirrors configured.")
    lines += [
        "To provide the files, either:",
        f"  - copy {', '.join(fs.filename for fs in spec.files.values())}",
        f"    into {cache}",
        "  - or put them in a directory D and pass data_dir=D or set XPNET_DATA_DIR=D",
        f"    (D/{spec.name}/ is looked at first, then D itself)",
        f"  - or set {spec.mirrors_env} to comma-separated base URLs of a reachable mirror.",
    ]
    if spec.name == "fashion-mnist":
        lines.append("  - on Debian/Ubuntu: apt-get install dataset-fashion-mnist")
    else:
        lines.append("For a quick offline start, load_mnist_sample() uses 5,000 real "
                     "MNIST digits shipped with xpnet.")
    return "\n".join(lines)


# ---------------------------------------------------------------- formatting

def to_book_format(
    images: np.ndarray,
    labels: np.ndarray,
    normalize: bool,
    flatten: bool,
    one_hot_label: bool,
    n_classes: int = 10,
) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W) and labels (N,) into the book's layout."""
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if n and int(labels.max()) >= n_classes:
        raise ValueError(f"label {int(labels.max())} out of range 0..{n_classes - 1}")
    x = images.reshape(n, -1) if flatten else images.reshape(n, 1, *images.shape[1:])
    if normalize:
        x = x.astype(np.float32)
        x /= np.float32(255.0)
    else:
        x = np.ascontiguousarray(x, dtype=np.uint8)
    t = labels.astype(np.int64)
    if one_hot_label:
        oh = np.zeros((n, n_classes), dtype=np.float32)
        oh[np.arange(n), t] = 1.0
        t = oh
    return x, t


def _load_book(name, normalize, flatten, one_hot_label, data_dir, **kw):
    a = load_idx_dataset(name, data_dir, **kw)
    n_classes = len(SPECS[name].classes)
    train = to_book_format(a["train_images"], a["train_labels"], normalize, flatten,
                           one_hot_label, n_classes)
    test = to_book_format(a["test_images"], a["test_labels"], normalize, flatten,
                          one_hot_label, n_classes)
    return train, test


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    data_dir: Optional[PathLike] = None,
    **kwargs,
):
    """MNIST as in "Deep Learning from Scratch": ``((x_train, t_train), (x_test, t_test))``.

    Args:
        normalize: images as float32 in [0, 1]; if False they stay uint8 0..255
            (as in the book).
        flatten: images as (N, 784); if False (N, 1, 28, 28).
        one_hot_label: labels as float32 one-hot (N, 10); else int64 (N,).
        data_dir: directory holding the four ``.gz`` files (searched first).
        **kwargs: ``cache_dir``, ``mirrors``, ``download`` (False: never
            touch the network), ``progress``, ``timeout``, ``checksums``;
            see ``load_idx_dataset``.

    Returns host NumPy arrays: 60,000 training and 10,000 test images.

    Raises:
        DatasetNotFoundError: the files are neither found nor downloadable;
            the message lists where it looked and why each mirror failed.
    """
    return _load_book("mnist", normalize, flatten, one_hot_label, data_dir, **kwargs)


def load_fashion_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    data_dir: Optional[PathLike] = None,
    **kwargs,
):
    """Fashion-MNIST with the same interface and return value as ``load_mnist``.

    On Debian/Ubuntu, ``apt-get install dataset-fashion-mnist`` provides the
    files in ``/usr/share/datasets/fashion-mnist``, which is searched.
    """
    return _load_book("fashion-mnist", normalize, flatten, one_hot_label, data_dir, **kwargs)


def expected_urls(name: str, mirrors: Optional[Sequence[str]] = None) -> List[str]:
    """Every URL a download of ``name`` may try, in order (for diagnostics)."""
    return [mirror_url(m, fs.filename) for fs in SPECS[name].files.values()
            for m in mirror_list(name, mirrors)]
