"""Reading an ``.npz`` parameter file, trusting nothing in it, and the limits it reads under.

Reading trusts nothing in the file. `NpzReader` reads the zip directory and every
``.npy`` header (names, shapes, dtypes) first, and refuses before any array data is
read: members that are not ``.npy`` arrays, duplicate names, object (pickle),
structured, string and date dtypes, declared sizes that don't match the header
(zip bombs), more than `MAX_ARRAY_BYTES` in all or more than `max_expansion` times the
file's own size (beyond a free `EXPANSION_FLOOR_BYTES`), and metadata that is not a UTF-8
JSON object of at most `MAX_META_BYTES`. What is not a regular file (a FIFO, a device, a
socket) is refused before it is opened, so reading one never blocks. A parameter file is then checked against
the names and shapes a net expects (`check_params`: real floating dtypes only), and
its values are checked to be finite (`check_finite`) before anything is loaded.
Every refusal is a ``ValueError`` naming the file and the array.
"""
import io
import json
import math
import os
import struct
import zipfile

import numpy as np

from .files import open_regular

META_KEY = "__xpnet_meta__"

#: The most array data (bytes, all arrays together, as declared in the .npy headers)
#: `load_arrays` reads from one file unless told otherwise (``max_bytes=``).
MAX_ARRAY_BYTES = 2 ** 31
#: A file may declare at most this many times its own size in array data (beyond
#: `EXPANSION_FLOOR_BYTES`): xpnet writes its files uncompressed (about 1x), and trained
#: weights deflate by less than 2x, so only a forged file (zeros deflate 1032:1) goes past.
MAX_EXPANSION = 16
#: Array data any file may declare whatever its size.
EXPANSION_FLOOR_BYTES = 2 ** 26
#: The most bytes of JSON metadata a file may hold.
MAX_META_BYTES = 2 ** 25
#: ... and at most this many times the file's size, beyond `META_FLOOR_BYTES`: parsed JSON
#: takes up to ~20 times its text (``[],`` is a 56-byte list), and xpnet stores it
#: uncompressed.
MAX_META_EXPANSION = 4
META_FLOOR_BYTES = 2 ** 20
#: The most members a file's zip directory may list.
MAX_MEMBERS = 2 ** 16
_MAX_HEADER = 10000        # NumPy's own limit for a .npy header (max_header_size)
_CHUNK = 1 << 20
_MAX_DEFLATE_RATIO = 1032   # deflate's largest expansion: 258 bytes from 2 bits
# dtype kinds a file may hold: bool, ints, floats, complex (never object, void/structured,
# strings or dates). Parameters: real floats only.
_KINDS = "biufc"
_PARAM_DTYPES = ("float16", "float32", "float64")


def expansion_allowance(file_size, max_expansion=MAX_EXPANSION):
    """The most bytes of array data a file of `file_size` bytes may make xpnet allocate."""
    return max(EXPANSION_FLOOR_BYTES, max_expansion * file_size)


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "bytes" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def _zip_entries(f):
    """Entry count from the end-of-central-directory record, read before zipfile builds
    one object per entry; None when it can't be told (zipfile then decides)."""
    try:
        end = zipfile._EndRecData(f)            # stable since Python 2, but private
        return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])
    except Exception:
        return None


class _Array:
    """What one ``.npy`` member declares: name, shape, dtype, order, sizes."""
    __slots__ = ("name", "member", "shape", "dtype", "fortran", "nbytes", "offset")

    def __repr__(self):
        return "%s %s %s" % (self.name, self.shape, self.dtype)


class NpzReader:
    """An ``.npz`` file read header first (see the module docstring).

    ``NpzReader(path)`` opens the zip, reads every member's ``.npy`` header and the
    metadata, and checks them; nothing else is read until `read`. ``headers`` maps
    array names to ``(shape, dtype)``, ``meta`` is the metadata dict. Use it as a
    context manager (or call `close`)."""

    def __init__(self, path, max_bytes=MAX_ARRAY_BYTES, max_expansion=MAX_EXPANSION):
        self.path = path = os.fspath(path)
        self.cap_bytes = max_bytes
        self._zip = None
        f = open_regular(path, "parameter file")
        self.file_size = os.fstat(f.fileno()).st_size
        self.max_bytes = min(max_bytes, expansion_allowance(self.file_size, max_expansion))
        try:
            self._open(f, max_expansion)
        except BaseException:
            f.close()
            self.close()
            raise

    # -- errors
    def _bad(self, why):
        return ValueError("%s is not a valid xpnet parameter file: %s" % (self.path, why))

    def _unreadable(self, why):
        return ValueError("%s is not a readable .npz file: %s" % (self.path, why))

    def _open(self, f, max_expansion):
        head = f.read(4)
        if head != b"PK\x03\x04":
            # np.load would try pickle on it and report "pickled data", which misleads
            if not head:
                raise self._unreadable("the file is empty")
            raise self._unreadable("it is not a zip archive (starts with %r)" % (head,))
        n = _zip_entries(f)
        if n is not None and n > MAX_MEMBERS:
            raise self._bad("its zip directory lists %d members, more than xpnet reads "
                            "(%d)" % (n, MAX_MEMBERS))
        f.seek(0)
        try:
            self._zip = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                struct.error, NotImplementedError, OverflowError) as e:
            raise self._unreadable("%s (truncated or not an .npz file?)"
                                   % (_reason(e),)) from None
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise self._bad("it has %d members, more than xpnet reads (%d)"
                            % (len(infos), MAX_MEMBERS))
        self.arrays = {}
        meta_info = None
        total = 0
        for info in infos:
            a = self._header(info)
            if a.name in self.arrays or (a.name == META_KEY and meta_info is not None):
                raise self._bad("it holds two arrays named %r" % a.name)
            if a.name == META_KEY:
                meta_info = a
                continue
            self.arrays[a.name] = a
            total += a.nbytes
        if total > self.max_bytes:
            big = max(self.arrays.values(), key=lambda a: a.nbytes)
            raise self._bad("its arrays declare %s in all (the largest, %r, has shape %s and "
                            "dtype %s), more than the %s xpnet reads from this file (at most "
                            "%d times its size of %s, and at most %s; pass max_bytes= or "
                            "max_expansion= to allow more)"
                            % (_size(total), big.name, big.shape, big.dtype,
                               _size(self.max_bytes), max_expansion, _size(self.file_size),
                               _size(self.cap_bytes)))
        self.meta = self._read_meta(meta_info)

    def _header(self, info):
        """Check one member's zip entry and .npy header; read nothing else."""
        name = info.filename
        if not name.endswith(".npy") or name.endswith("/"):
            raise self._bad("member %r is not a .npy array" % name)
        a = _Array()
        a.name, a.member = name[:-4], info
        if info.flag_bits & 0x1:
            raise self._bad("array %r is encrypted" % a.name)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._bad("array %r uses zip compression method %d; .npz files are stored "
                            "or deflated" % (a.name, info.compress_type))
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise self._bad("array %r is stored uncompressed, yet its zip entry declares %d "
                            "bytes held in %d (a forged or corrupt file)"
                            % (a.name, info.file_size, info.compress_size))
        if info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + 1024:
            raise self._bad("array %r: its zip entry declares %d bytes from %d compressed, "
                            "more than deflate can expand (%d:1) (a forged or corrupt file)"
                            % (a.name, info.file_size, info.compress_size, _MAX_DEFLATE_RATIO))
        try:
            with self._zip.open(info) as s:
                head = _read_exactly(s, 8)
                if len(head) < 8 or head[:6] != b"\x93NUMPY":
                    raise self._bad("array %r has no .npy header (starts with %r)"
                                    % (a.name, head[:8]))
                version = (head[6], head[7])
                if version == (1, 0):
                    rest = _read_exactly(s, 2)
                    hlen = struct.unpack("<H", rest)[0] if len(rest) == 2 else None
                elif version in ((2, 0), (3, 0)):
                    rest = _read_exactly(s, 4)
                    hlen = struct.unpack("<I", rest)[0] if len(rest) == 4 else None
                else:
                    raise self._bad("array %r: unknown .npy format version %d.%d"
                                    % (a.name, version[0], version[1]))
                if hlen is None:
                    raise self._bad("array %r: the .npy header is cut short" % a.name)
                if hlen > _MAX_HEADER:
                    raise self._bad("array %r: its .npy header declares %d bytes, more than "
                                    "%d" % (a.name, hlen, _MAX_HEADER))
                text = _read_exactly(s, hlen)
                if len(text) < hlen:
                    raise self._bad("array %r: the .npy header is cut short" % a.name)
        except ValueError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, struct.error, NotImplementedError,
                RuntimeError, OverflowError) as e:
            raise self._unreadable("array %r: %s" % (a.name, _reason(e))) from None
        except Exception as e:      # zlib.error and the like: corrupt data
            raise self._unreadable("array %r: %s" % (a.name, _reason(e))) from None
        a.offset = len(head) + len(rest) + hlen
        fp = io.BytesIO(head + rest + text)
        try:
            np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:   # 3.0 only adds UTF-8 field names, i.e. structured dtypes: refused
                raise ValueError("format 3.0 (structured dtypes with non-Latin names)")
        except Exception as e:   # ValueError, SyntaxError, tokenize.TokenError, RecursionError
            # ... from parsing at most _MAX_HEADER bytes of text: all mean "bad header"
            raise self._bad("array %r: unreadable .npy header (%s)"
                            % (a.name, _reason(e))) from None
        if dtype.hasobject:
            raise self._bad("array %r holds Python objects (dtype %s), which only pickle "
                            "could load, and xpnet refuses pickle" % (a.name, dtype))
        if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
            raise self._bad("array %r has dtype %s; xpnet files hold numbers only (bool, "
                            "int, float, complex)" % (a.name, dtype))
        if any(d < 0 for d in shape):
            raise self._bad("array %r declares a negative dimension: shape %s"
                            % (a.name, shape))
        a.shape, a.dtype, a.fortran = tuple(shape), dtype, fortran
        a.nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != a.offset + a.nbytes:
            raise self._bad("array %r: shape %s and dtype %s take %d bytes, but the zip "
                            "entry declares %d (a forged or corrupt file)"
                            % (a.name, a.shape, dtype, a.offset + a.nbytes, info.file_size))
        return a

    def _read_meta(self, a):
        if a is None:
            return {}
        if a.dtype != np.uint8 or len(a.shape) != 1:
            raise self._bad("its metadata %r must be 1-D uint8 (UTF-8 text), got shape %s "
                            "dtype %s" % (META_KEY, a.shape, a.dtype))
        cap = min(MAX_META_BYTES, max(META_FLOOR_BYTES, MAX_META_EXPANSION * self.file_size))
        if a.nbytes > cap:
            raise self._bad("its metadata declares %s, more than the %s xpnet reads from this "
                            "file (at most %d times its size of %s, and at most %s)"
                            % (_size(a.nbytes), _size(cap), MAX_META_EXPANSION,
                               _size(self.file_size), _size(MAX_META_BYTES)))
        raw = self._data(a).tobytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._bad("its metadata is not UTF-8 text (%s)" % e) from None
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError) as e:   # JSONDecodeError is a ValueError
            raise self._bad("its metadata is not valid JSON (%s)" % _reason(e)) from None
        if not isinstance(meta, dict):
            raise self._bad("its metadata must be a JSON object, got %s"
                            % type(meta).__name__)
        return meta

    # -- data
    def _data(self, a):
        count = a.nbytes // a.dtype.itemsize if a.dtype.itemsize else 0
        try:
            flat = np.empty(count, dtype=a.dtype)
        except MemoryError:
            raise ValueError("%s: not enough memory for array %r (shape %s, %s, %s)"
                             % (self.path, a.name, a.shape, a.dtype, _size(a.nbytes))) from None
        view = memoryview(flat.view(np.uint8))
        got = 0
        try:
            with self._zip.open(a.member) as s:
                s.read(a.offset)
                while got < a.nbytes:
                    chunk = s.read(min(_CHUNK, a.nbytes - got))
                    if not chunk:
                        break
                    view[got:got + len(chunk)] = chunk
                    got += len(chunk)
                s.read(1)        # reach the end: zipfile checks the CRC there
        except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as e:
            raise self._unreadable("array %r: %s" % (a.name, _reason(e))) from None
        except Exception as e:   # zlib.error: corrupt deflate data
            raise self._unreadable("array %r: %s" % (a.name, _reason(e))) from None
        if got != a.nbytes:
            raise self._unreadable("array %r: data ends after %d of %d bytes (truncated?)"
                                   % (a.name, got, a.nbytes))
        return flat.reshape(a.shape, order="F" if a.fortran else "C")

    @property
    def headers(self):
        """``{name: (shape, dtype)}`` as declared in the file (metadata excluded)."""
        return {k: (a.shape, a.dtype) for k, a in self.arrays.items()}

    def check_params(self, expected, what):
        """Refuse, before reading data, a file whose arrays aren't exactly `expected`
        (``{name: shape}``) in a real floating dtype; `what` names the net."""
        missing = [k for k in expected if k not in self.arrays]
        extra = [k for k in self.arrays if k not in expected]
        if missing or extra:
            raise ValueError("parameter file doesn't match %s: missing %s, unexpected %s "
                             "(file: %s)" % (what, missing or "none", extra or "none",
                                             self.path))
        for k, shape in expected.items():
            a = self.arrays[k]
            if a.shape != tuple(shape):
                raise ValueError("parameter %r: file has shape %s, %s expects %s (file: %s)"
                                 % (k, a.shape, what, tuple(shape), self.path))
            if a.dtype.kind != "f" or a.dtype.name not in _PARAM_DTYPES:
                raise ValueError("parameter %r in %s has dtype %s; parameters must be %s"
                                 % (k, self.path, a.dtype, "/".join(_PARAM_DTYPES)))

    def read(self, names=None):
        """``{name: host array}`` for `names` (default: all), read now."""
        names = list(self.arrays) if names is None else names
        return {k: self._data(self.arrays[k]) for k in names}

    def close(self):
        if self._zip is not None:
            fp = self._zip.fp
            self._zip.close()
            if fp is not None:
                fp.close()
            self._zip = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_exactly(s, n):
    out = b""
    while len(out) < n:
        b = s.read(n - len(out))
        if not b:
            break
        out += b
    return out


def _reason(e):
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__
