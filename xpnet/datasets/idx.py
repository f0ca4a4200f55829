"""Reader (and a small writer) for the IDX format used by MNIST-style data sets.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the data in C order.  MNIST labels are
``0x00000801`` (uint8, 1-D) and images ``0x00000803`` (uint8, 3-D).
Files may be gzip-compressed; that is detected from the content, not the name.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["IDXError", "read_idx", "encode_idx", "gunzip", "DEFAULT_MAX_SIZE"]

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


#: The most bytes ``read_idx`` decompresses from a gzip file when no ``max_size``
#: is given (2 GiB; MNIST's largest file is 47 MB).  Uncompressed files need no such
#: cap: their declared size must equal the file's own before anything is allocated.
DEFAULT_MAX_SIZE = 2 ** 31
_READ = 1 << 16


class _Gunzip:
    """Decompress one gzip member from ``src`` (a binary file) on demand, never more
    output than asked for, with clear errors for truncation, corruption and junk."""

    def __init__(self, src, name: str):
        self.src, self.name = src, name
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect a gzip wrapper
        self.consumed = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes (fewer only at the end of the stream)."""
        out = bytearray()
        while len(out) < n:
            if self.d.eof:      # (zlib may leave the junk after the end in both tails)
                break
            if self.d.unconsumed_tail:
                inp = self.d.unconsumed_tail
            else:
                inp = self.src.read(_READ)
                if not inp:
                    break
                self.consumed += len(inp)
            try:
                got = self.d.decompress(inp, n - len(out))
            except zlib.error as e:  # bad deflate data, CRC or length mismatch
                raise IDXError(f"{self.name}: corrupt gzip data ({e})") from None
            if not got and self.d.unconsumed_tail == inp and not self.d.eof:
                break           # no progress (never seen): don't spin
            out += got
        return bytes(out)

    def finish(self) -> int:
        """Check that the stream ends here: returns how many more output bytes there
        are (counted up to 64 KiB, never kept); raises for a cut stream or junk."""
        extra = len(self.read(_READ))
        if extra:
            return extra
        if not self.d.eof:
            raise IDXError(f"{self.name}: gzip stream ends early after {self.consumed} "
                           "bytes (file truncated?)")
        junk = len(self.d.unused_data)
        while True:
            rest = self.src.read(_READ)
            if not rest:
                break
            junk += len(rest)
        if junk:
            raise IDXError(f"{self.name}: {junk} unexpected bytes after the end of the "
                           "gzip stream")
        return 0


def gunzip(data: bytes, name: str = "<bytes>", max_size: Optional[int] = None) -> bytes:
    """Decompress one gzip member, with clear errors for truncation and junk.

    ``max_size`` bounds the output so a hostile file cannot fill memory (default
    ``DEFAULT_MAX_SIZE``).
    """
    limit = DEFAULT_MAX_SIZE if max_size is None else max_size
    g = _Gunzip(io.BytesIO(data), name)
    out = g.read(limit + 1)
    if len(out) > limit:
        raise IDXError(f"{name}: decompresses to more than {limit} bytes, "
                       "larger than the expected IDX file")
    if g.finish():
        raise IDXError(f"{name}: decompresses to more than {limit} bytes, "
                       "larger than the expected IDX file")
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

    The header is read first, and the size it declares is checked before the data
    is read: against the file's length (uncompressed files), against ``max_size``,
    and for gzip files against ``DEFAULT_MAX_SIZE`` when no ``max_size`` is given.
    Gzip data is decompressed only up to the declared size (plus one byte to tell
    "too long"), so neither a lying header nor a gzip bomb can fill memory.

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
        name = name or "<bytes>"
        data = bytes(source)
        return _parse(io.BytesIO(data), len(data), name, expect_ndim, expect_shape, max_size)
    path = os.fspath(source)
    name = name or path
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return _parse(f, size, name, expect_ndim, expect_shape, max_size)


def _parse(f, size, name, expect_ndim, expect_shape, max_size) -> np.ndarray:
    start = f.read(2)
    f.seek(0)
    gz = None
    if start == _GZIP_MAGIC:
        gz = _Gunzip(f, name)
        read, total = gz.read, None          # decompressed length unknown until read
    else:
        read, total = f.read, size

    if expect_shape is not None and expect_ndim is None:
        expect_ndim = len(expect_shape)
    want = (f"{_magic_text(expect_ndim)} ({expect_ndim}-D unsigned byte)"
            if expect_ndim else "0x00000801 (labels) or 0x00000803 (images)")

    head = read(4)
    if len(head) < 4:
        raise IDXError(f"{name}: only {len(head)} bytes, too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", head)
    magic = int.from_bytes(head, "big")
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
    dims = read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise IDXError(f"{name}: truncated header: {4 + len(dims)} bytes, the {ndim}-D "
                       f"header alone needs {header}")
    shape = struct.unpack(f">{ndim}I", dims)
    if expect_shape is not None:
        ok = all(w is None or w == s for w, s in zip(expect_shape, shape))
        if not ok:
            shown = "(" + ", ".join("*" if w is None else str(w) for w in expect_shape) + ")"
            raise IDXError(f"{name}: header declares shape {tuple(shape)}, expected {shown}")

    n_items = 1
    for s in shape:
        n_items *= s
    expected_len = header + n_items
    dims_text = "x".join(map(str, shape))

    def wrong_length(actual: int, at_least: bool = False) -> IDXError:
        diff = actual - expected_len
        what = f"{-diff} bytes missing, truncated?" if diff < 0 else f"{diff} extra bytes"
        more = "at least " if at_least else ""
        if at_least:
            what = "extra bytes"
        return IDXError(f"{name}: data is {more}{actual} bytes, expected {expected_len} "
                        f"({header}-byte header + {dims_text} uint8 values): {what}")

    # The declared size, checked before anything of that size is read or allocated.
    if total is not None and total != expected_len:
        raise wrong_length(total)
    limit = max_size if max_size is not None else (DEFAULT_MAX_SIZE if gz else None)
    if limit is not None and expected_len > limit:
        raise IDXError(f"{name}: header declares shape {tuple(shape)}, {expected_len} bytes, "
                       f"more than the {limit} allowed"
                       + ("" if max_size is not None else
                          " for a compressed file (pass max_size= to allow more)"))

    if gz is None:
        body = bytearray(n_items)
        got = f.readinto(body) if n_items else 0
        if got != n_items:   # the file changed under us
            raise wrong_length(header + (got or 0))
    else:
        body = bytearray()
        while len(body) < n_items:
            chunk = gz.read(min(1 << 20, n_items - len(body)))
            if not chunk:
                break
            body += chunk
        if len(body) < n_items:
            gz.finish()      # a cut stream says "ends early"; else the data is short
            raise wrong_length(header + len(body))
        extra = gz.finish()
        if extra:
            raise wrong_length(expected_len + extra, at_least=True)
    # bytearray makes the result writable without a second copy.
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an (uncompressed) IDX file; see ``read_idx``."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"encode_idx supports uint8 only, got {a.dtype}")
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {a.ndim}")
    head = struct.pack(">HBB", 0, _UBYTE, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + np.ascontiguousarray(a).tobytes()
