"""Fuzz tests (hypothesis) over the readers of untrusted files: parameter files
(.npz + JSON metadata) and IDX files (raw and gzip).

Whatever the bytes, a reader either succeeds or raises a clear ValueError (IDXError is
one) or TypeError; never MemoryError, never another exception, never a long run. The
runs are derandomized and bounded (``max_examples``), so CI is deterministic; the whole
file takes about ten seconds.
"""
import gzip
import io
import json
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import xpnet  # noqa: E402
from xpnet import serialization as S  # noqa: E402
from xpnet.datasets import IDXError, read_idx  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OK_ERRORS = (ValueError, TypeError)
# A generous limit, not a timing check (the machine may be busy): it catches a reader
# that loops or waits, which a file of a few KiB must never make it do.
HANG_S = 30.0
MAX_ALLOC_MIB = 64    # the most one read of a file of a few KiB may allocate


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


TRACE_EVERY = 3      # tracing makes a read 4x slower: every third read is measured
_reads = [0]


def start_read():
    """Trace allocations for one read only (tracing hypothesis too would slow it 30x)."""
    _reads[0] += 1
    traced = _reads[0] % TRACE_EVERY == 0
    if traced:
        tracemalloc.start()
    return traced and tracemalloc.get_traced_memory()[0], time.monotonic()


def check_read(start):
    base, t0 = start
    if base is not False:
        mib = (tracemalloc.get_traced_memory()[1] - base) / (1 << 20)
        tracemalloc.stop()
        assert mib < MAX_ALLOC_MIB, "a fuzzed file made a reader allocate %.0f MiB" % mib
    took = time.monotonic() - t0
    assert took < HANG_S, "a reader ran for %.0f s" % took


def attempt(fn, *args):
    """Run a reader; only success or a clear ValueError/TypeError may come out."""
    start = start_read()
    try:
        fn(*args)
    except OK_ERRORS as e:
        text = str(e)
        assert text, "an error without a message"
        # a MemoryError dressed up as a ValueError still means "tried to allocate it"
        assert "MemoryError" not in text and "Unable to allocate" not in text, text
    check_read(start)


# ------------------------------------------------------------------ parameter files

def _seed_files():
    out = []
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    for compress in (False, True):
        arrays = {k: v for k, v in net.state_dict().items()}
        meta = {"format": "xpnet-params", "architecture": dict(net.config), "dtype": "float32"}
        out.append((arrays, meta, compress))
    bn = xpnet.MultiLayerNetExtend(3, [2], 2, use_batchnorm=True, seed=0, device="cpu")
    out.append((bn.state_dict(), {"architecture": dict(bn.config)}, False))
    seeds = []
    for arrays, meta, compress in out:
        buf = io.BytesIO()
        payload = dict(arrays)
        payload[S.META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        (np.savez_compressed if compress else np.savez)(buf, **payload)
        seeds.append(buf.getvalue())
    return seeds


SEEDS = _seed_files()


def _write(workdir, data, name="f.npz"):
    p = workdir / name
    p.write_bytes(data)
    return p


def _readers(path):
    yield S.load_arrays, path
    yield S.read_meta, path
    yield xpnet.load_net, path
    yield xpnet.TwoLayerNet(4, 3, 2, device="cpu").load_params, path


def _check_all(path):
    for fn, arg in _readers(path):
        attempt(fn, arg)


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "int"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "int" and len(data) >= pos + 4:   # a size field set to something big
            data[pos:pos + 4] = struct.pack("<I", draw(st.sampled_from(
                [0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2 ** 20])))
    return bytes(data)


@FUZZ
@given(data=mutated())
def test_fuzz_mutated_parameter_files(workdir, data):
    _check_all(_write(workdir, data))


DESCRS = ["<f4", "<f8", "<f2", ">f4", "|u1", "<i8", "|b1", "<c8", "|O", "<U5", "|S3",
          "|V8", "|V0", "<M8[s]", "<f16", [("a", "<f4")], ("<f4", (2,)), "", "zz", 3,
          None, "<f4\x00"]
DIMS = st.integers(-3, 2 ** 40) | st.sampled_from([0, 1, 2, 3, 4, 2 ** 31, 2 ** 63, -1])


@st.composite
def npy_member(draw):
    shape = draw(st.one_of(st.lists(DIMS, max_size=4).map(tuple),
                           st.sampled_from([(), (3, 2), (2,), [3], "x", None, (1.5,)])))
    d = {"descr": draw(st.sampled_from(DESCRS)), "fortran_order": draw(st.sampled_from(
        [False, True, 0, "no"])), "shape": shape}
    keys = draw(st.sampled_from(["all", "missing", "extra"]))
    if keys == "missing":
        d.pop("fortran_order")
    elif keys == "extra":
        d["extra"] = 1
    form = draw(st.sampled_from(["numpy", "numpy", "repr", "text"]))
    if form == "numpy":      # a header NumPy itself writes: only the sizes are hostile
        d = {"descr": draw(st.sampled_from(["<f4", "<f8", "|u1", "<i8", "<c16", "|b1"])),
             "fortran_order": draw(st.booleans()),
             "shape": tuple(draw(st.lists(st.integers(0, 2 ** 40) | st.sampled_from(
                 [0, 1, 3, 2 ** 28, 2 ** 31]), max_size=3)))}
    text = repr(d) if form != "text" else draw(st.text(max_size=60))
    text = text.encode("latin1", "replace")
    text += b" " * ((-(len(text) + 11)) % 64) + b"\n"
    version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (0, 9)]))
    if version[0] == 1:
        head = b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text))
    else:
        head = b"\x93NUMPY" + bytes(version) + struct.pack("<I", len(text))
    body = draw(st.binary(max_size=64))
    data = head + text + body
    size = draw(st.sampled_from(["true", "small", "huge", "random"]))
    declared = {"true": len(data), "small": max(len(data) - 8, 0), "huge": 2 ** 32 - 1,
                "random": draw(st.integers(0, 2 ** 32 - 1))}[size]
    name = draw(st.sampled_from(["W1.npy", "b1.npy", "W2.npy", "b2.npy", "extra.npy",
                                 S.META_KEY + ".npy", "W1", "dir/", "W1.npy"]))
    deflate = draw(st.booleans())
    return name, data, declared, deflate


def _zip(members):
    out, central = io.BytesIO(), []
    for name, data, declared, deflate in members:
        if deflate:
            co = zlib.compressobj(6, zlib.DEFLATED, -15)
            comp, method = co.compress(data) + co.flush(), 8
        else:
            comp, method = data, 0
        off, n = out.tell(), name.encode()
        crc = zlib.crc32(data)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc,
                              len(comp), declared, len(n), 0) + n + comp)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0,
                                   0, crc, len(comp), declared, len(n), 0, 0, 0, 0, 0, off) + n)
    cd, cd_off = b"".join(central), out.tell()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                               len(cd), cd_off, 0))
    return out.getvalue()


@FUZZ
@given(members=st.lists(npy_member(), max_size=5))
def test_fuzz_forged_npy_headers_and_zip_sizes(workdir, members):
    _check_all(_write(workdir, _zip(members)))


META_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats()
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12)
ARCH_FIELDS = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend",
                             "SimpleConvNet", "DeepConvNet", "Nope", 3]),
    "input_size": st.sampled_from([4, 0, -1, 4.0, "4", 10 ** 6, 2 ** 64, None, True]),
    "hidden_size": st.sampled_from([3, 0, 15000, 10 ** 9, [3], None]),
    "output_size": st.sampled_from([2, 1, 0, 10 ** 12]),
    "hidden_size_list": st.sampled_from([[3], [], [0], [10 ** 6, 10 ** 6], "3", [[3]],
                                         [1] * 70000]),
    "input_dim": st.sampled_from([[1, 8, 8], [1, 10 ** 6, 10 ** 6], [3], "abc", [1, 1, 1],
                                  [0, 8, 8]]),
    "conv_param": st.sampled_from([{"filter_num": 2, "filter_size": 3}, {"stride": 0},
                                   {"pad": -1}, {"filter_size": 10 ** 9}, [1, 2], {"x": 1}]),
    "use_batchnorm": st.booleans(),
    "weight_init_std": st.sampled_from([0.01, "he", -1, "bad", float("nan")]),
    "dtype": st.sampled_from(["float32", "float64", "int8", "float128", 3, None]),
    "device": st.sampled_from(["cpu", "gpu"]),
    "dropout_ratio": st.sampled_from([0.5, 2.0, -1]),
})


@FUZZ
@given(arch=ARCH_FIELDS | META_VALUES, dtype=st.sampled_from(["float32", "float64", None, 7]),
       raw=st.none() | st.binary(max_size=40))
def test_fuzz_metadata_and_architectures(workdir, arch, dtype, raw):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    meta = {"format": "xpnet-params", "architecture": arch}
    if dtype is not None:
        meta["dtype"] = dtype
    payload = dict(net.state_dict())
    text = raw if raw is not None else json.dumps(meta).encode()
    payload[S.META_KEY] = np.frombuffer(text, np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **payload)
    _check_all(_write(workdir, buf.getvalue()))


def test_fuzz_seeds_themselves_load(workdir):
    for data in SEEDS[:2]:
        p = _write(workdir, data, "seed.npz")
        assert type(xpnet.load_net(p)).__name__ == "TwoLayerNet"


# ------------------------------------------------------------------ IDX files

IDX_SEEDS = [
    struct.pack(">I", 0x801) + struct.pack(">I", 5) + bytes(range(5)),
    struct.pack(">I", 0x803) + struct.pack(">3I", 2, 3, 4) + bytes(range(24)),
]


@st.composite
def idx_bytes(draw):
    kind = draw(st.sampled_from(["mutate", "forge"]))
    if kind == "mutate":
        data = bytearray(draw(st.sampled_from(IDX_SEEDS)))
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["flip", "cut", "insert", "dim"]))
            if op == "flip" and pos < len(data):
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "cut":
                del data[pos:]
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            elif op == "dim" and len(data) >= 8:
                data[4:8] = struct.pack(">I", draw(st.sampled_from(
                    [0, 1, 2 ** 16, 2 ** 31, 2 ** 32 - 1])))
    else:
        ndim = draw(st.integers(0, 6))
        magic = draw(st.sampled_from([0x800, 0x900, 0xD00, 0x10800, 0])) | ndim
        dims = [draw(st.sampled_from([0, 1, 2, 3, 28, 2 ** 16, 2 ** 32 - 1]))
                for _ in range(ndim)]
        data = struct.pack(">I", magic) + struct.pack(">%dI" % ndim, *dims)
        data += draw(st.binary(max_size=64))
    data = bytes(data)
    wrap = draw(st.sampled_from(["raw", "gzip", "gzip-cut", "gzip-junk", "gzip-flip"]))
    if wrap != "raw":
        gz = bytearray(gzip.compress(data, mtime=0))
        if wrap == "gzip-cut":
            del gz[draw(st.integers(0, len(gz) - 1)):]
        elif wrap == "gzip-junk":
            gz += draw(st.binary(min_size=1, max_size=8))
        elif wrap == "gzip-flip":
            gz[draw(st.integers(0, len(gz) - 1))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(gz)
    return data


@FUZZ
@given(data=idx_bytes(), max_size=st.sampled_from([None, 0, 30, 2 ** 20]),
       as_file=st.booleans(), expect=st.sampled_from([None, (None,), (None, 3, 4)]))
def test_fuzz_idx_reader(workdir, data, max_size, as_file, expect):
    src = data
    if as_file:
        src = workdir / "f.idx"
        src.write_bytes(data)
    start = start_read()
    try:
        out = read_idx(src, max_size=max_size, expect_shape=expect)
    except IDXError as e:
        assert isinstance(e, ValueError) and str(e)
        check_read(start)
    else:
        check_read(start)
        assert out.dtype == np.uint8
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        assert out.tobytes() == raw[len(raw) - out.size:]
        assert max_size is None or len(raw) <= max_size


@FUZZ
@given(data=st.binary(max_size=200), max_size=st.sampled_from([None, 10, 1000]))
def test_fuzz_gunzip(data, max_size):
    from xpnet.datasets.idx import gunzip
    for blob in (data, gzip.compress(data, mtime=0)[: len(data) + 20]):
        try:
            out = gunzip(blob, "x", max_size)
        except IDXError as e:
            assert str(e)
        else:
            assert max_size is None or len(out) <= max_size
