"""A real 5,000-digit MNIST sample shipped inside the package (works offline).

Provenance and licence: ``xpnet/datasets/data/README.md``; built by
``tools/make_mnist_sample.py``.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from .mnist import to_book_format

__all__ = ["SAMPLE_PATH", "SAMPLE_SHA256", "load_mnist_sample", "sample_arrays", "stratified_split"]

SAMPLE_PATH = Path(__file__).resolve().parent / "data" / "mnist_sample.npz"
# Must match data/README.md; tools/make_mnist_sample.py prints it.
SAMPLE_SHA256 = "63818dc867dd7ee1181196c2588842f34debadc19cc80dc16b1dc1401cbb62c4"
SAMPLE_SIZE = 5000
# The largest .npy member a sample file can need (uint8 images plus a header); a file
# declaring more (a zip bomb) is refused before anything is decompressed.
_MAX_MEMBER = SAMPLE_SIZE * 28 * 28 + 4096


def _check_members(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise OSError(f"{path}: not a readable .npz file ({e})") from None
    names = sorted(i.filename for i in infos)
    if names != ["images.npy", "labels.npy"]:
        raise OSError(f"{path}: expected the arrays images and labels, found {names[:10]}")
    for i in infos:
        if i.file_size > _MAX_MEMBER:
            raise OSError(f"{path}: {i.filename} declares {i.file_size} bytes, more than a "
                          f"{SAMPLE_SIZE}-image sample needs ({_MAX_MEMBER})")


def sample_arrays(path: Path = SAMPLE_PATH):
    """The raw sample: uint8 images (5000, 28, 28) and uint8 labels, sorted by class."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path == SAMPLE_PATH and digest != SAMPLE_SHA256:
        raise OSError(f"{path}: SHA-256 {digest} does not match the shipped sample "
                      f"({SAMPLE_SHA256}); reinstall xpnet")
    _check_members(Path(path))
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise OSError(f"{path}: unreadable sample file ({type(e).__name__}: {e})") from None
    if (images.shape != (SAMPLE_SIZE, 28, 28) or images.dtype != np.uint8
            or labels.shape != (SAMPLE_SIZE,)):
        raise OSError(f"{path}: unexpected arrays {images.shape} {images.dtype} / {labels.shape}")
    return images, labels


def stratified_split(labels: np.ndarray, n_test: int, seed: int = 0):
    """Indices ``(train, test)``: each class gets its share of ``n_test`` (largest
    remainders break ties), both sets shuffled; deterministic for a given seed."""
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < n_test < n:
        raise ValueError(f"n_test must be between 1 and {n - 1}, got {n_test}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / n
    quota = np.floor(exact).astype(int)
    # Hand out what flooring lost, to the largest remainders (stable order).
    extra = n_test - quota.sum()
    quota[np.argsort(-(exact - quota), kind="stable")[:extra]] += 1
    train, test = [], []
    for c, q in zip(classes, quota):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:q])
        train.append(idx[q:])
    train_idx = rng.permutation(np.concatenate(train))
    test_idx = rng.permutation(np.concatenate(test))
    return train_idx, test_idx


def load_mnist_sample(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    n_test: int = 1000,
    seed: int = 0,
):
    """The embedded MNIST sample in ``load_mnist``'s format, no download needed.

    5,000 real MNIST training digits (500 per class) split into
    ``5000 - n_test`` training and ``n_test`` test images, stratified by class
    and shuffled.  The same ``seed`` always gives the same split.

    Returns ``((x_train, t_train), (x_test, t_test))``; see ``load_mnist`` for
    ``normalize`` (uint8 when False), ``flatten`` and ``one_hot_label``.
    """
    images, labels = sample_arrays()
    tr, te = stratified_split(labels, n_test, seed)
    train = to_book_format(images[tr], labels[tr], normalize, flatten, one_hot_label)
    test = to_book_format(images[te], labels[te], normalize, flatten, one_hot_label)
    return train, test
