"""What the datasets are: each file's name, size and accepted checksums, the mirrors,
the system directories that may hold a copy, and the class names (`SPECS`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class FileSpec:
    filename: str
    shape: Tuple[int, ...]
    sha256: Tuple[str, ...]          # accepted hashes of the .gz file as stored
    raw_sha256: Optional[str] = None  # hash of the decompressed IDX, if known
    md5: Optional[str] = None         # upstream's published MD5, documentation only

    @property
    def raw_size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return 4 + 4 * len(self.shape) + n

    @property
    def max_size(self) -> int:
        """The largest acceptable file as stored: the IDX file gzip-compressed at
        worst (deflate's stored blocks, zlib's compressBound) plus 64 KiB for gzip
        header fields.  Downloads stop past it; larger local files are not read."""
        n = self.raw_size
        return n + n // 4096 + n // 16384 + 13 + 18 + 65536


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    files: Dict[str, FileSpec]      # role -> file
    mirrors: Tuple[str, ...]
    mirrors_env: str
    system_dirs: Tuple[str, ...] = ()
    classes: Tuple[str, ...] = field(default_factory=tuple)


# MNIST .gz SHA-256 and sizes: tensorflow/datasets,
# tensorflow_datasets/url_checksums/mnist.txt (CVDF mirror; the same four values
# are used by many independent projects for the ossci and LeCun copies).
# MD5: as listed by torchvision.  Sizes 9912422/28881/1648877/4542 bytes match
# those on yann.lecun.com/exdb/mnist.  The decompressed hashes are not known
# here, so a re-compressed MNIST .gz is rejected.
_MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    files={
        "train_images": FileSpec(
            "train-images-idx3-ubyte.gz", (60000, 28, 28),
            ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
            md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": FileSpec(
            "train-labels-idx1-ubyte.gz", (60000,),
            ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
            md5="d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": FileSpec(
            "t10k-images-idx3-ubyte.gz", (10000, 28, 28),
            ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
            md5="9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": FileSpec(
            "t10k-labels-idx1-ubyte.gz", (10000,),
            ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
            md5="ec29112dd5afa0611ce80d1b7f02629c"),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    mirrors_env="XPNET_MNIST_MIRRORS",
    system_dirs=(),  # no distribution packages MNIST; add paths here if one does
    classes=tuple(str(i) for i in range(10)),
)

# Fashion-MNIST.  First hash of each file: the upstream .gz as served by the
# S3 mirror (tensorflow/datasets, url_checksums/fashion_mnist.txt).  Second:
# Debian's dataset-fashion-mnist copy, whose gzip header was normalised
# (file name dropped, mtime changed) but whose deflate data is byte-identical:
# putting the name and the original mtime back reproduces the upstream MD5 from
# the zalandoresearch/fashion-mnist README and the first SHA-256 exactly (see
# tests/test_datasets.py).  raw_sha256 is the decompressed IDX, so any other
# faithful re-compression (e.g. a git checkout) is accepted too.
_FASHION = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files={
        "train_images": FileSpec(
            "train-images-idx3-ubyte.gz", (60000, 28, 28),
            ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
             "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
            raw_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": FileSpec(
            "train-labels-idx1-ubyte.gz", (60000,),
            ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
             "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
            raw_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            md5="25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": FileSpec(
            "t10k-images-idx3-ubyte.gz", (10000, 28, 28),
            ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
             "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
            raw_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            md5="bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": FileSpec(
            "t10k-labels-idx1-ubyte.gz", (10000,),
            ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
             "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
            raw_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            md5="bb300cfdad3c16e7a12a480ee83cd310"),
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    mirrors_env="XPNET_FASHION_MNIST_MIRRORS",
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian/Ubuntu package
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)

SPECS: Dict[str, DatasetSpec] = {s.name: s for s in (_MNIST, _FASHION)}

Checksums = Mapping[str, Union[str, Iterable[str]]]
PathLike = Union[str, "os.PathLike[str]"]
