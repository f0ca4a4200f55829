"""IDX parser, search order, real Fashion-MNIST, embedded MNIST sample."""

import gzip
import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import xpnet.datasets as D
from xpnet.datasets import (
    DatasetNotFoundError,
    DatasetWarning,
    IDXError,
    encode_idx,
    load_fashion_mnist,
    load_mnist,
    load_mnist_sample,
    read_idx,
)
from xpnet.datasets.mnist import SPECS
from xpnet.datasets.sample import SAMPLE_PATH, SAMPLE_SHA256, sample_arrays, stratified_split

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"{FASHION_DIR} missing (apt-get install dataset-fashion-mnist)")

NAMES = [fs.filename for fs in SPECS["mnist"].files.values()]
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = NAMES


def idx_bytes(a, magic=None):
    """Independent IDX writer (not the library's) for synthetic files."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    magic = 0x800 | a.ndim if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("XPNET_DATA_DIR", "XPNET_MNIST_MIRRORS", "XPNET_FASHION_MNIST_MIRRORS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-xpnet-test-cache")


# ------------------------------------------------------------------ IDX parser

IMAGES = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
LABELS = np.arange(7, dtype=np.uint8)


@pytest.mark.parametrize("arr", [IMAGES, LABELS], ids=["images", "labels"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_idx_round_trip(tmp_path, arr, compress, as_path):
    data = idx_bytes(arr)
    if compress:
        data = gzip.compress(data)
    src = data
    if as_path:
        src = tmp_path / ("f.gz" if compress else "f")
        src.write_bytes(data)
    out = read_idx(src, expect_ndim=arr.ndim)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    out[0] = 1  # writable, not a view of immutable bytes


def test_idx_magic_numbers_are_the_mnist_ones():
    assert idx_bytes(LABELS)[:4] == b"\x00\x00\x08\x01"
    assert idx_bytes(IMAGES)[:4] == b"\x00\x00\x08\x03"
    assert encode_idx(IMAGES) == idx_bytes(IMAGES)
    assert encode_idx(LABELS) == idx_bytes(LABELS)


def test_idx_gz_detected_by_content_not_name(tmp_path):
    p = tmp_path / "no-suffix"
    p.write_bytes(gzip.compress(idx_bytes(LABELS)))
    np.testing.assert_array_equal(read_idx(p), LABELS)


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "bad-magic.idx"
    p.write_bytes(b"\x12\x34" + idx_bytes(LABELS)[2:])
    with pytest.raises(IDXError, match=r"bad-magic\.idx: not an IDX file: magic number 0x12340801"):
        read_idx(p)


def test_idx_wrong_dtype_byte():
    data = idx_bytes(LABELS, magic=0x0D01)  # float32 labels
    with pytest.raises(IDXError, match=r"<bytes>: IDX data type byte is 0x0d \(float32\), "
                                       r"expected 0x08"):
        read_idx(data)


def test_idx_wrong_number_of_dims():
    with pytest.raises(IDXError, match=r"labels: magic number 0x00000803 declares 3 "
                                       r"dimension\(s\), expected 0x00000801"):
        read_idx(idx_bytes(IMAGES), name="labels", expect_ndim=1)


def test_idx_wrong_dims():
    small = np.zeros((3, 28, 27), np.uint8)
    with pytest.raises(IDXError, match=re.escape("x.gz: header declares shape (3, 28, 27), "
                                                 "expected (*, 28, 28)")):
        read_idx(idx_bytes(small), name="x.gz", expect_shape=(None, 28, 28))


def test_idx_truncated():
    data = idx_bytes(IMAGES)[:-10]
    with pytest.raises(IDXError, match=r"data is 5494 bytes, expected 5504 .*10 bytes missing"):
        read_idx(data)


def test_idx_extra_bytes():
    with pytest.raises(IDXError, match=r"data is 18 bytes, expected 15 .*3 extra bytes"):
        read_idx(idx_bytes(LABELS) + b"abc")


def test_idx_truncated_header():
    with pytest.raises(IDXError, match="truncated header"):
        read_idx(idx_bytes(IMAGES)[:10])
    with pytest.raises(IDXError, match="too short"):
        read_idx(b"\x00\x00")


def test_idx_truncated_gzip(tmp_path):
    p = tmp_path / "cut.gz"
    p.write_bytes(gzip.compress(idx_bytes(IMAGES))[:-30])
    with pytest.raises(IDXError, match=r"cut\.gz: .*gzip stream ends early"):
        read_idx(p)


def test_idx_corrupt_gzip_and_trailing_junk():
    gz = bytearray(gzip.compress(idx_bytes(IMAGES)))
    gz[-6] ^= 0xFF  # CRC/length trailer
    with pytest.raises(IDXError, match="corrupt gzip data"):
        read_idx(bytes(gz))
    with pytest.raises(IDXError, match="unexpected bytes after the end of the gzip stream"):
        read_idx(gzip.compress(idx_bytes(LABELS)) + b"junk")


# ------------------------------------------------------------------ search order

def make_dataset(directory, tag):
    """Synthetic MNIST-named files; ``tag`` shifts the labels to identify the copy."""
    directory.mkdir(parents=True, exist_ok=True)
    x = np.full((10, 28, 28), tag, np.uint8)
    t = ((np.arange(10) + tag) % 10).astype(np.uint8)
    blobs = {TRAIN_IMAGES: idx_bytes(x), TRAIN_LABELS: idx_bytes(t),
             TEST_IMAGES: idx_bytes(x[:4]), TEST_LABELS: idx_bytes(t[:4])}
    out = {}
    for name, raw in blobs.items():
        gz = gzip.compress(raw, mtime=0)
        (directory / name).write_bytes(gz)
        out[name] = hashlib.sha256(gz).hexdigest()
    return out


@pytest.fixture
def places(tmp_path):
    """data_dir, cache root and system dir holding copies tagged 1, 2, 3."""
    d = {"data": tmp_path / "data", "cache": tmp_path / "cache", "system": tmp_path / "system"}
    sums = {}
    for tag, (key, where) in enumerate(
            [("data", d["data"]), ("cache", d["cache"] / "mnist"), ("system", d["system"])], 1):
        for name, h in make_dataset(where, tag).items():
            sums.setdefault(name, []).append(h)
    d["checksums"] = sums
    return d


def tag_of(result):
    (x, t), _ = result
    return int(x[0, 0])


def load_from(places, **kw):
    kw.setdefault("cache_dir", places["cache"])
    kw.setdefault("system_dirs", [places["system"]])
    return load_mnist(normalize=False, checksums=places["checksums"], download=False, **kw)


def test_data_dir_beats_cache_beats_system(places):
    assert tag_of(load_from(places, data_dir=places["data"])) == 1
    assert tag_of(load_from(places)) == 2
    for p in (places["cache"] / "mnist").iterdir():
        p.unlink()
    assert tag_of(load_from(places)) == 3


def test_xpnet_data_dir_env_is_honoured(places, monkeypatch):
    monkeypatch.setenv("XPNET_DATA_DIR", str(places["data"]))
    assert tag_of(load_from(places)) == 1


def test_dataset_subdirectory_is_preferred(places, tmp_path):
    # Lets one XPNET_DATA_DIR hold mnist/ and fashion-mnist/ side by side.
    for name, h in make_dataset(places["data"] / "mnist", 4).items():
        places["checksums"][name].append(h)
    assert tag_of(load_from(places, data_dir=places["data"])) == 4


def test_each_file_from_first_valid_copy(places):
    (places["data"] / TRAIN_LABELS).unlink()
    (x, t), _ = load_from(places, data_dir=places["data"])
    assert x[0, 0] == 1 and t[0] == 2  # images from data_dir, labels from the cache


def test_bad_file_outside_cache_is_skipped_with_warning(places):
    bad = places["data"] / TRAIN_IMAGES
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.warns(DatasetWarning, match=re.escape(str(bad))):
        (x, t), _ = load_from(places, data_dir=places["data"])
    assert x[0, 0] == 2 and t[0] == 1


def test_real_checksums_reject_synthetic_files(places):
    with pytest.warns(DatasetWarning), pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=places["data"], cache_dir=places["cache"] / "empty", download=False)
    assert "is not a known value" in str(info.value)


def test_offline_and_missing_error_lists_files_and_dirs(tmp_path):
    data, cache, system = tmp_path / "d", tmp_path / "c", tmp_path / "s"
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=data, cache_dir=cache, system_dirs=[system], mirrors=[])
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for name in NAMES:
        assert name in msg
    for d in (data, data / "mnist", cache / "mnist", system):
        assert str(d) in msg
    assert "XPNET_DATA_DIR" in msg and "No download mirrors" in msg
    assert msg.index(str(data)) < msg.index(str(cache / "mnist")) < msg.index(str(system))


def test_locate_reports_without_downloading(places, monkeypatch):
    info = D.locate("mnist", data_dir=places["data"], cache_dir=places["cache"])
    json.dumps(info)  # plain data, printable by `xpnet info`
    assert info["found"] and info["dir"] == str(places["data"])
    origins = [e["origin"] for e in info["search_path"]]
    assert origins == ["data_dir", "data_dir", "cache"]
    assert info["mirrors"] == list(SPECS["mnist"].mirrors)

    empty = D.locate("mnist", cache_dir=places["cache"] / "none")
    assert not empty["found"] and empty["dir"] is None
    assert set(empty["files"]) == set(NAMES) and not any(empty["files"].values())
    assert empty["cache_dir"] == str(places["cache"] / "none" / "mnist")
    assert not (places["cache"] / "none").exists()

    monkeypatch.setenv("XPNET_MNIST_MIRRORS", "http://a/,http://b/")
    assert D.locate("mnist")["mirrors"] == ["http://a/", "http://b/"]

    s = D.locate("mnist-sample")
    assert s["found"] and s["files"]["mnist_sample.npz"] == str(SAMPLE_PATH)


def test_locate_verify_flags_bad_files(places):
    info = D.locate("mnist", data_dir=places["data"], cache_dir=places["cache"], verify=True)
    assert not info["found"]  # synthetic files fail the real checksums
    assert any("not a known value" in v for v in info["problems"].values())


def test_load_dispatch_and_class_names(monkeypatch):
    (x, _), _ = D.load("mnist-sample", n_test=500)
    assert x.shape == (4500, 784)
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        D.load("cifar")
    assert D.class_names("mnist") == [str(i) for i in range(10)]
    assert D.class_names("mnist_sample") == D.class_names("mnist")
    assert D.class_names("fashion-mnist") == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_checksum_table_is_well_formed():
    for spec in SPECS.values():
        assert len(spec.files) == 4 and spec.mirrors
        for fs in spec.files.values():
            for h in fs.sha256 + ((fs.raw_sha256,) if fs.raw_sha256 else ()):
                assert re.fullmatch(r"[0-9a-f]{64}", h)


# ------------------------------------------------------------------ Fashion-MNIST (real)

@needs_fashion
def test_fashion_mnist_from_debian_package(tmp_path):
    (x, t), (xt, tt) = load_fashion_mnist(cache_dir=tmp_path, download=False)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0 and xt.min() >= 0.0 and xt.max() <= 1.0
    assert t.dtype == np.int64 and t.shape == (60000,) and tt.shape == (10000,)
    assert np.bincount(t).tolist() == [6000] * 10
    assert np.bincount(tt).tolist() == [1000] * 10
    assert D.locate("fashion-mnist", cache_dir=tmp_path)["dir"] == str(FASHION_DIR)


@needs_fashion
def test_fashion_mnist_book_options(tmp_path):
    (x, t), (xt, tt) = load_fashion_mnist(normalize=False, flatten=False, one_hot_label=True,
                                          cache_dir=tmp_path, download=False)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert t.shape == (60000, 10) and t.dtype == np.float32
    assert (t.sum(axis=1) == 1).all() and (t.sum(axis=0) == 6000).all()


# Debian's copies differ from upstream only in the gzip header; restoring the
# file name and the original mtime must give upstream's published checksums.
UPSTREAM_HEADER = {  # file -> (original gzip mtime, upstream MD5 from the README)
    "train-labels-idx1-ubyte.gz": (1504176606, "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-labels-idx1-ubyte.gz": (1504176627, "bb300cfdad3c16e7a12a480ee83cd310"),
    "t10k-images-idx3-ubyte.gz": (1504176627, "bef4ecab320f06d8554ea6380940ec79"),
    "train-images-idx3-ubyte.gz": (1504176606, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
}


@needs_fashion
@pytest.mark.parametrize("name", list(UPSTREAM_HEADER))
def test_debian_fashion_files_are_upstream_originals(name):
    mtime, md5 = UPSTREAM_HEADER[name]
    deb = (FASHION_DIR / name).read_bytes()
    assert deb[:4] == b"\x1f\x8b\x08\x00"  # no FNAME field
    upstream = (b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + deb[8:10]
                + name[:-3].encode() + b"\x00" + deb[10:])
    assert hashlib.md5(upstream).hexdigest() == md5
    fs = next(f for f in SPECS["fashion-mnist"].files.values() if f.filename == name)
    assert hashlib.sha256(upstream).hexdigest() == fs.sha256[0]   # upstream (TFDS)
    assert hashlib.sha256(deb).hexdigest() == fs.sha256[1]        # Debian
    assert hashlib.sha256(gzip.decompress(deb)).hexdigest() == fs.raw_sha256


@needs_fashion
def test_recompressed_fashion_file_accepted_by_content_hash(tmp_path):
    # Not byte-identical to any known .gz, but the same IDX content.
    name = "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress((FASHION_DIR / name).read_bytes())
    (tmp_path / name).write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))
    info = D.locate("fashion-mnist", data_dir=tmp_path, cache_dir=tmp_path / "c", verify=True)
    assert info["files"][name] == str(tmp_path / name) and not info["problems"]


# ------------------------------------------------------------------ embedded sample

def test_sample_file_matches_recorded_checksum():
    digest = hashlib.sha256(SAMPLE_PATH.read_bytes()).hexdigest()
    assert digest == SAMPLE_SHA256
    readme = (SAMPLE_PATH.parent / "README.md").read_text()
    assert SAMPLE_SHA256 in readme
    with np.load(SAMPLE_PATH, allow_pickle=False) as z:
        assert sorted(z.files) == ["images", "labels"]
    images, labels = sample_arrays()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10


def test_sample_split_is_stratified_shuffled_and_disjoint():
    (x, t), (xt, tt) = load_mnist_sample()
    assert x.shape == (4000, 784) and xt.shape == (1000, 784)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    assert t.dtype == np.int64
    assert np.bincount(t).tolist() == [400] * 10
    assert np.bincount(tt).tolist() == [100] * 10
    assert not (np.diff(t) >= 0).all() and not (np.diff(tt) >= 0).all()  # not sorted
    train_rows = {r.tobytes() for r in x}
    test_rows = {r.tobytes() for r in xt}
    assert len(train_rows) == 4000 and len(test_rows) == 1000
    assert not train_rows & test_rows


def test_sample_split_is_deterministic():
    a = load_mnist_sample(normalize=False)
    b = load_mnist_sample(normalize=False)
    c = load_mnist_sample(normalize=False, seed=1)
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0][1], c[0][1])


def test_sample_options():
    (x, t), (xt, tt) = load_mnist_sample(normalize=False, flatten=False, one_hot_label=True,
                                         n_test=250)
    assert x.shape == (4750, 1, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert t.shape == (4750, 10) and t.dtype == np.float32
    assert tt.sum(axis=0).tolist() == [25.0] * 10
    with pytest.raises(ValueError, match="n_test"):
        load_mnist_sample(n_test=5000)


def test_stratified_split_uneven_classes():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    tr, te = stratified_split(labels, 5, seed=3)
    assert len(te) == 5 and len(tr) == 5
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(10))
    # Exact shares 3.5 / 1.0 / 0.5: floors 3/1/0, one left over goes to the 0.5s.
    assert np.bincount(labels[te], minlength=3).tolist() in ([4, 1, 0], [3, 1, 1])


# ------------------------------------------------------------------ hostile IDX files (issue 10)

import zlib

from memory_probe import peak_alloc_mib
from xpnet.datasets import idx as I


def calls_alloc_mib(*calls):
    """Peak MiB allocated (tracemalloc) while the ``(fn, args, error, match)`` calls run,
    each raising `error` matching `match`."""
    def run():
        for fn, args, error, match in calls:
            with pytest.raises(error, match=match):
                fn(*args)
    mib, err = peak_alloc_mib(run)
    if isinstance(err, BaseException):
        raise err
    return mib


class CountingDecompressor:
    """zlib.decompressobj that counts the bytes it hands out (the work a reader does)."""
    made = []

    def __init__(self, *args):
        self.d = CountingDecompressor.real(*args)
        self.out = 0
        CountingDecompressor.made.append(self)

    def decompress(self, data, max_length=0):
        got = self.d.decompress(data, max_length)
        self.out += len(got)
        return got

    def __getattr__(self, name):
        return getattr(self.d, name)


def gzip_zeros_bomb(head, mib):
    """A gzip stream of ``head`` then ``mib`` MiB of zeros (about 1 KiB per MiB),
    built without holding the data; the trailer is left off (a reader that
    decompresses it all finds out only at the end)."""
    co = zlib.compressobj(6, zlib.DEFLATED, 31)
    z = bytes(1 << 20)
    first = co.compress(head) + co.flush(zlib.Z_SYNC_FLUSH)
    pieces = [co.compress(z) + co.flush(zlib.Z_SYNC_FLUSH) for _ in range(3)]
    assert pieces[1] == pieces[2]
    return first + pieces[0] + pieces[1] * (mib - 1)


def test_idx_declared_dims_are_checked_against_the_file_before_allocating(tmp_path):
    huge = struct.pack(">I3I", 0x803, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    p = tmp_path / "huge.idx"
    p.write_bytes(huge + b"abc")
    # and a big file with a small header: refused from its size, nothing read
    big = tmp_path / "big.idx"
    with open(big, "wb") as f:
        f.write(idx_bytes(LABELS))
        f.truncate(10**9)                 # sparse
    mib = calls_alloc_mib(
        (read_idx, (huge,), IDXError, r"data is 16 bytes, expected 79228162458924105385300197"
                                      r"391 .*bytes missing"),
        (read_idx, (p,), IDXError, "huge.idx: data is 19 bytes"),
        (read_idx, (big,), IDXError, r"big.idx: data is 1000000000 bytes, expected 15 "),
        (lambda b: read_idx(b, max_size=100), (big,), IDXError,
         r"big.idx: data is 1000000000 bytes"))
    assert mib < 8, mib


def test_idx_gzip_bomb_stops_at_the_declared_size(tmp_path, monkeypatch):
    head = struct.pack(">II", 0x801, 10)            # declares 10 labels ...
    bomb = gzip_zeros_bomb(head, 1024)               # ... followed by 1 GiB of zeros
    assert len(bomb) < 2 << 20
    p = tmp_path / "bomb.gz"
    p.write_bytes(bomb)
    monkeypatch.setattr(CountingDecompressor, "real", zlib.decompressobj, raising=False)
    monkeypatch.setattr(CountingDecompressor, "made", [])
    monkeypatch.setattr(zlib, "decompressobj", CountingDecompressor)
    match = r"data is at least \d+ bytes, expected 18 .*extra bytes"
    mib = calls_alloc_mib((read_idx, (bomb,), IDXError, match),
                          (read_idx, (p,), IDXError, match))
    assert mib < 8, mib
    # the work is bounded too: each read stopped within a few MiB of the 1 GiB
    assert len(CountingDecompressor.made) == 2
    assert all(d.out < 4 << 20 for d in CountingDecompressor.made), \
        [d.out for d in CountingDecompressor.made]


def test_idx_gzip_declaring_too_much_is_refused_before_decompressing(monkeypatch):
    head = struct.pack(">II", 0x801, 2**32 - 1)     # 4 GiB of labels declared
    bomb = gzip_zeros_bomb(head, 2)
    with pytest.raises(IDXError, match=r"header declares shape \(4294967295,\), 4294967303 bytes, "
                                       r"more than the 2147483648 allowed for a compressed "
                                       r"file \(pass max_size= to allow more\)"):
        read_idx(bomb)
    with pytest.raises(IDXError, match=r"4294967303 bytes, more than the 1000 allowed$"):
        read_idx(bomb, max_size=1000)
    monkeypatch.setattr(I, "DEFAULT_MAX_SIZE", 100)
    with pytest.raises(IDXError, match="decompresses to more than 100 bytes"):
        I.gunzip(bomb)


def test_idx_max_size_applies_to_raw_files_too():
    with pytest.raises(IDXError, match=r"5504 bytes, more than the 1000 allowed"):
        read_idx(idx_bytes(IMAGES), max_size=1000)
    np.testing.assert_array_equal(read_idx(idx_bytes(IMAGES), max_size=5504), IMAGES)
    np.testing.assert_array_equal(read_idx(gzip.compress(idx_bytes(IMAGES)), max_size=5504),
                                  IMAGES)


def test_idx_empty_dimension_and_empty_input():
    out = read_idx(struct.pack(">I3I", 0x803, 0, 28, 28))
    assert out.shape == (0, 28, 28)
    for data in (b"", gzip.compress(b"")):
        with pytest.raises(IDXError, match="only 0 bytes, too short"):
            read_idx(data)


def test_sample_file_elsewhere_is_checked_before_decompressing(tmp_path, monkeypatch):
    """sample_arrays(path) on another file: a member declaring more than a sample can
    hold is refused from the zip directory, before np.load decompresses anything."""
    from xpnet.datasets import sample as SM
    p = tmp_path / "sample.npz"
    np.savez_compressed(p, images=np.zeros((50, 28, 28), np.uint8), labels=np.zeros(50, np.uint8))
    monkeypatch.setattr(SM, "_MAX_MEMBER", 1000)      # the rule, on a small file
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load was reached"))
    with pytest.raises(OSError, match=r"images.npy declares 39328 bytes, more than a "
                                      r"5000-image sample needs \(1000\)"):
        sample_arrays(p)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(OSError, match=r"expected the arrays images and labels, found \['x.npy'\]"):
        sample_arrays(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(OSError, match="junk.npz: not a readable .npz file"):
        sample_arrays(tmp_path / "junk.npz")
