"""Reader (and a small writer) for the IDX format used by MNIST-style data sets.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the data in C order.  MNIST labels are
``0x00000801`` (uint8, 1-D) and images ``0x00000803`` (uint8, 3-D).
Files may be gzip-compressed; that is detected from the content, not the name.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["IDXError", "read_idx", "encode_idx", "gunzip"]

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
# Only uint8 is supported; the other codes are named so the error is readable.
_DTYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


class IDXError(ValueError):
    """A file is not a valid (uint8) IDX file, or not the one that was expected."""


def gunzip(data: bytes, name: str = "<bytes>", max_size: Optional[int] = None) -> bytes:
    """Decompress one gzip member, with clear errors for truncation and junk.

    ``max_size`` bounds the output so a hostile file cannot fill memory.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect a gzip wrapper
    try:
        if max_size is None:
            out = d.decompress(data)
        else:
            out = d.decompress(data, max_size + 1)
            if len(out) > max_size:
                raise IDXError(f"{name}: decompresses to more than {max_size} bytes, "
                               "larger than the expected IDX file")
        out += d.flush()
    except zlib.error as e:  # bad deflate data, CRC or length mismatch
        raise IDXError(f"{name}: corrupt gzip data ({e})") from None
    if not d.eof:
        raise IDXError(f"{name}: gzip stream ends early after {len(data)} bytes "
                       "(file truncated?)")
    if d.unused_data:
        raise IDXError(f"{name}: {len(d.unused_data)} unexpected bytes after the "
                       "end of the gzip stream")
    return out


def _magic_text(ndim: int) -> str:
    return f"0x{(_UBYTE << 8) | ndim:08x}"


def read_idx(
    source: Source,
    *,
    name: Optional[str] = None,
    expect_ndim: Optional[int] = None,
    expect_shape: Optional[Sequence[Optional[int]]] = None,
    max_size: Optional[int] = None,
) -> np.ndarray:
    """Parse an IDX file (raw or gzip) into a uint8 NumPy array.

    Args:
        source: a path, or the file's bytes.
        name: how to call the file in error messages (default: the path).
        expect_ndim: required number of dimensions (1 labels, 3 images).
        expect_shape: required shape; ``None`` entries match any size,
            e.g. ``(None, 28, 28)``.
        max_size: refuse files whose uncompressed size would exceed this.

    Returns:
        A writable uint8 array with the shape stored in the header.

    Raises:
        IDXError: naming the file and saying what was expected and found.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<bytes>"
    else:
        path = os.fspath(source)
        name = name or path
        with open(path, "rb") as f:
            data = f.read()
    if data[:2] == _GZIP_MAGIC:
        data = gunzip(data, name, max_size)

    if expect_shape is not None and expect_ndim is None:
        expect_ndim = len(expect_shape)
    want = (f"{_magic_text(expect_ndim)} ({expect_ndim}-D unsigned byte)"
            if expect_ndim else "0x00000801 (labels) or 0x00000803 (images)")

    if len(data) < 4:
        raise IDXError(f"{name}: only {len(data)} bytes, too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if zero != 0:
        raise IDXError(f"{name}: not an IDX file: magic number 0x{magic:08x}, "
                       f"expected {want}")
    if dtype != _UBYTE:
        kind = _DTYPE_NAMES.get(dtype, "unknown type")
        raise IDXError(f"{name}: IDX data type byte is 0x{dtype:02x} ({kind}), "
                       f"expected 0x08 (unsigned byte); magic 0x{magic:08x}, expected {want}")
    if ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
        raise IDXError(f"{name}: magic number 0x{magic:08x} declares {ndim} dimension(s), "
                       f"expected {want}")

    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated header: {len(data)} bytes, the {ndim}-D "
                       f"header alone needs {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if expect_shape is not None:
        ok = all(w is None or w == s for w, s in zip(expect_shape, shape))
        if not ok:
            shown = "(" + ", ".join("*" if w is None else str(w) for w in expect_shape) + ")"
            raise IDXError(f"{name}: header declares shape {tuple(shape)}, expected {shown}")

    n_items = 1
    for s in shape:
        n_items *= s
    expected_len = header + n_items
    if len(data) != expected_len:
        diff = len(data) - expected_len
        what = f"{-diff} bytes missing, truncated?" if diff < 0 else f"{diff} extra bytes"
        dims = "x".join(map(str, shape))
        raise IDXError(f"{name}: data is {len(data)} bytes, expected {expected_len} "
                       f"({header}-byte header + {dims} uint8 values): {what}")

    # bytearray makes the result writable without a second copy.
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an (uncompressed) IDX file; see ``read_idx``."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"encode_idx supports uint8 only, got {a.dtype}")
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {a.ndim}")
    head = struct.pack(">HBB", 0, _UBYTE, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + np.ascontiguousarray(a).tobytes()
