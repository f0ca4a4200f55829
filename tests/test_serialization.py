"""Parameter files: .npz + JSON, never pickle; round trips across devices; refusals;
atomic writes."""
import json
import re
import os

import numpy as np
import pytest

import xpnet
from xpnet import serialization as S

GPU_OK, GPU_WHY = xpnet.gpu_available()


def make_nets(device):
    return {
        "TwoLayerNet": xpnet.TwoLayerNet(6, 5, 3, seed=0, device=device),
        "MultiLayerNet": xpnet.MultiLayerNet(6, [5, 4], 3, activation="tanh", seed=0,
                                             weight_decay_lambda=0.01, device=device),
        "MultiLayerNetExtend": xpnet.MultiLayerNetExtend(
            6, [5], 3, use_batchnorm=True, use_dropout=True, dropout_ratio=0.2, seed=0,
            device=device),
        "SimpleConvNet": xpnet.SimpleConvNet(
            (1, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
            hidden_size=5, output_size=3, seed=0, device=device),
        "DeepConvNet": xpnet.DeepConvNet((1, 12, 12), *[{"filter_num": 2}] * 6, hidden_size=5,
                                         output_size=3, seed=0, device=device),
    }


def input_for(net, n=3):
    shape = tuple(net.config.get("input_dim", [net.config.get("input_size")]))
    return np.random.default_rng(1).standard_normal((n,) + shape).astype(np.float32)


def listing(d):
    return sorted(os.listdir(d))


@pytest.mark.parametrize("name", ["TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend",
                                  "SimpleConvNet", "DeepConvNet"])
def test_save_load_round_trip(backend, tmp_path, name):
    net = make_nets(backend.device)[name]
    x = input_for(net)
    if "gamma1" in net.params:       # non-trivial running statistics
        net.gradient(x, np.array([0, 1, 2]))
    y = backend.np(net.predict(x))
    path = net.save_params(tmp_path / "model")
    assert path == str(tmp_path / "model.npz")
    assert listing(tmp_path) == ["model.json", "model.npz"]
    # readable without pickle; the metadata is JSON
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(net.params) | set(net.buffers) | {S.META_KEY}
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format"] == "xpnet-params"
    assert meta["architecture"]["type"] == name
    assert meta["dtype"] == "float32"
    assert meta["params"]["W1"] == list(net.params["W1"].shape)
    assert S.read_meta(path) == meta
    devices = ["cpu", backend.device] + (["gpu"] if GPU_OK else [])
    for dev in devices:
        again = xpnet.load_net(path, device=dev)
        assert type(again).__name__ == name
        assert again.device == xpnet.get_device(dev)
        for k, v in net.state_dict().items():
            got = (again.params[k] if k in again.params else again.buffers[k])
            assert xpnet.asnumpy(got).tobytes() == v.tobytes(), (dev, k)
        np.testing.assert_allclose(xpnet.asnumpy(again.predict(x)), y, rtol=1e-5, atol=1e-6)
    # into an existing net of the same architecture
    other = make_nets(backend.device)[name]
    other.params["W1"][...] = 0
    other.load_params(path)
    np.testing.assert_array_equal(backend.np(other.params["W1"]), backend.np(net.params["W1"]))


def test_load_net_dtype_override(tmp_path):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=1, device="cpu")
    net.save_params(tmp_path / "m.npz")
    n64 = xpnet.load_net(tmp_path / "m.npz", device="cpu", dtype="float64")
    assert n64.dtype == np.float64
    np.testing.assert_array_equal(n64.params["W1"], net.params["W1"].astype(np.float64))


def test_load_on_the_other_device(backend, tmp_path):
    src = "gpu" if backend.device == "cpu" else "cpu"
    if src == "gpu" and not GPU_OK:
        pytest.skip("needs CuPy and a GPU: " + GPU_WHY)
    net = make_nets(src)["SimpleConvNet"]
    net.save_params(tmp_path / "m")
    again = xpnet.load_net(tmp_path / "m.npz", device=backend.device)
    assert again.device == xpnet.get_device(backend.device)
    for k in net.params:
        assert xpnet.asnumpy(again.params[k]).tobytes() == \
            xpnet.asnumpy(net.params[k]).tobytes(), k


def test_mismatching_shapes_name_the_first_parameter(tmp_path):
    xpnet.MultiLayerNet(6, [5, 4], 3, seed=0, device="cpu").save_params(tmp_path / "a")
    net = xpnet.MultiLayerNet(6, [5, 7], 3, seed=0, device="cpu")
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ValueError, match=r"parameter 'W2': file has shape \(5, 4\), "
                                         r"MultiLayerNet expects \(5, 7\)"):
        net.load_params(tmp_path / "a.npz")
    for k, v in net.params.items():          # nothing was half-loaded
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    with pytest.raises(ValueError, match=r"parameter file doesn't match MultiLayerNetExtend: "
                                         r"missing \['gamma1'"):
        xpnet.MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, device="cpu").load_params(
            tmp_path / "a.npz")


def test_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, W1=np.array([{"x": 1}, None], dtype=object))   # needs pickle to load
    with pytest.raises(ValueError, match="not a valid xpnet parameter file: array 'W1' holds "
                                         "Python objects .*pickle"):
        S.load_arrays(path)
    net = xpnet.TwoLayerNet(4, 3, 2, device="cpu")
    with pytest.raises(ValueError, match="pickle"):
        net.load_params(path)
    with pytest.raises(ValueError, match="pickle"):
        xpnet.load_net(path)
    np.save(tmp_path / "plain.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        S.load_arrays(tmp_path / "plain.npy")


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="junk.npz is not a readable .npz file"):
        S.load_arrays(bad)
    with pytest.raises(FileNotFoundError, match="parameter file not found: .*nope.npz"):
        S.load_arrays(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        xpnet.load_net(tmp_path / "nope")


def test_load_net_needs_architecture(tmp_path):
    S.save_arrays(tmp_path / "raw.npz", {"W1": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="has no architecture metadata; build the net yourself"):
        xpnet.load_net(tmp_path / "raw.npz")


def test_save_arrays_round_trip_and_reserved_name(backend, tmp_path):
    arrays = {"a": backend.asarray(np.arange(6.0).reshape(2, 3), np.float32),
              "b": np.array([1, 2, 3], dtype=np.int64)}
    meta = {"epoch": 3, "note": "ünïcode"}
    for compress in (False, True):
        p = S.save_arrays(tmp_path / ("x%d.npz" % compress), arrays, meta, compress=compress)
        got, m = S.load_arrays(p)
        assert m == meta
        assert got["a"].dtype == np.float32 and type(got["a"]) is np.ndarray
        np.testing.assert_array_equal(got["a"], backend.np(arrays["a"]))
        np.testing.assert_array_equal(got["b"], arrays["b"])
    with pytest.raises(ValueError, match="array name '__xpnet_meta__' is reserved"):
        S.save_arrays(tmp_path / "y.npz", {S.META_KEY: np.zeros(1)})


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "ckpt.npz"          # the folder is created
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    net.save_params(target)
    assert listing(target.parent) == ["ckpt.json", "ckpt.npz"]
    good = target.read_bytes()

    # a crash while writing: the old file stays whole, no temporary file is left
    def boom(*a, **k):
        raise OSError("disk full (test)")
    monkeypatch.setattr(os, "fsync", boom)
    net.params["W1"][...] = 1
    with pytest.raises(OSError, match="disk full"):
        net.save_params(target)
    monkeypatch.undo()
    assert target.read_bytes() == good
    assert listing(target.parent) == ["ckpt.json", "ckpt.npz"]

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        S.atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == good
    assert listing(target.parent) == ["ckpt.json", "ckpt.npz"]

    S.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert listing(target.parent) == ["ckpt.json", "ckpt.npz"]


# ---------------------------------------------------------------- hostile files (issue 10)
# Every refusal below happens from the zip directory and the .npy headers, before any
# array data is read: the tests check time and peak memory, never allocating much.

import io as _io
import struct
import zipfile
import zlib

from memory_probe import peak_alloc_mib
from xpnet import cli
from xpnet import nets as N


def npy_header(shape, dtype="<f4", version=(1, 0), fortran=False):
    buf = _io.BytesIO()
    d = {"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, d)
    else:
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def raw_zip(members):
    """A zip archive written by hand: ``members`` is a list of ``(name, stored_bytes,
    method, crc, file_size)``, so the declared sizes can be anything."""
    out, central = _io.BytesIO(), []
    for name, comp, method, crc, size in members:
        off, n = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc,
                              len(comp), size, len(n), 0) + n + comp)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0,
                                   0, crc, len(comp), size, len(n), 0, 0, 0, 0, 0, off) + n)
    cd, cd_off = b"".join(central), out.tell()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                               len(cd), cd_off, 0))
    return out.getvalue()


def stored(name, data):
    return (name, data, 0, zlib.crc32(data), len(data))


def deflated_zeros(name, mib, dtype="<f4", crc=True):
    """A ``.npy`` member of ``mib`` MiB of zeros, deflated (about 1 KiB per MiB), with a
    true CRC: np.load would read it all. Built without holding the data in memory."""
    itemsize = np.dtype(dtype).itemsize
    head = npy_header(((mib << 20) // itemsize,), dtype)
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    z = bytes(1 << 20)
    first = co.compress(head) + co.flush(zlib.Z_SYNC_FLUSH)
    pieces = [co.compress(z) + co.flush(zlib.Z_SYNC_FLUSH) for _ in range(3)]
    assert pieces[1] == pieces[2]                 # steady state: the rest repeats
    data = first + pieces[0] + pieces[1] * (mib - 1) + co.flush()
    c = zlib.crc32(head)
    if crc:
        for _ in range(mib):
            c = zlib.crc32(z, c)
    return (name + ".npy", data, 8, c, len(head) + (mib << 20))


def meta_member(meta):
    raw = json.dumps(meta).encode() if not isinstance(meta, bytes) else meta
    return stored(S.META_KEY + ".npy", npy_header((len(raw),), "|u1") + raw)


def members_of(path):
    """The members of a real .npz as raw_zip tuples (stored)."""
    with zipfile.ZipFile(path) as z:
        return [stored(i.filename, z.read(i)) for i in z.infolist()]


def small_two_layer(tmp_path, name="m"):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    return net, net.save_params(tmp_path / name)


@pytest.fixture(scope="module")
def bomb_member():
    """1.2 GiB of float32 zeros deflated into about 1.3 MB."""
    return deflated_zeros("extra", 1200)


def test_forged_zip_writer_is_a_valid_npz(tmp_path):
    p = tmp_path / "small.npz"
    p.write_bytes(raw_zip([deflated_zeros("a", 2), stored("b.npy", npy_header((2,), "<f8")
                                                          + np.array([1.0, 2.0]).tobytes())]))
    with np.load(p, allow_pickle=False) as z:        # NumPy reads it, CRCs included
        assert z["a"].shape == ((2 << 20) // 4,) and not z["a"].any()
        assert z["b"].tolist() == [1.0, 2.0]
    got, meta = S.load_arrays(p)
    assert meta == {} and got["a"].shape == ((2 << 20) // 4,) and got["b"].tolist() == [1.0, 2.0]


def test_small_file_with_huge_deflated_extra_array_is_refused_before_reading(
        tmp_path, bomb_member):
    _, good = small_two_layer(tmp_path)
    p = tmp_path / "bomb.npz"
    p.write_bytes(raw_zip(members_of(good) + [bomb_member]))
    assert p.stat().st_size < 2 << 20
    net = xpnet.TwoLayerNet(4, 3, 2, device="cpu")
    for load in (xpnet.load_net, net.load_params):
        mib, err = peak_alloc_mib(load, p)
        assert isinstance(err, ValueError) and re.search(
            r"arrays declare 1.2 GiB in all \(the largest, 'extra', .*more than the 64.0 MiB "
            r"xpnet reads from this file \(at most 16 times its size of 1.2 MiB", str(err)), err
        assert mib < 8, mib          # refused from the headers: no array data read



def test_load_arrays_caps_the_total_declared_size(tmp_path, bomb_member):
    p = tmp_path / "bomb2.npz"
    second = ("more",) + bomb_member[1:]
    second = ("more.npy",) + bomb_member[1:]
    p.write_bytes(raw_zip([bomb_member, second]))      # 2.4 GiB declared in 2.6 MB
    for kw, cap in (({}, "64.0 MiB"), ({"max_expansion": 10 ** 6}, "2.0 GiB"),
                    ({"max_bytes": 1 << 20}, "1.0 MiB")):
        mib, err = peak_alloc_mib(S.load_arrays, p, **kw)
        assert isinstance(err, ValueError) and re.search(
            r"arrays declare 2.3 GiB in all .*more than the %s xpnet reads from this file "
            r".*pass max_bytes=" % re.escape(cap), str(err)), (kw, err)
        assert mib < 8, (kw, mib)


def test_zip_entry_size_must_match_the_npy_header(tmp_path):
    head = npy_header((1000,), "<f8")
    data = head + bytes(8000)
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    comp = co.compress(data) + co.flush()
    p = tmp_path / "lie.npz"
    for size in (len(data) - 8, len(data) + 8):          # deflated: sizes must agree
        p.write_bytes(raw_zip([("W1.npy", comp, 8, zlib.crc32(data), size)]))
        with pytest.raises(ValueError, match=r"array 'W1': shape \(1000,\) and dtype float64 "
                                             r"take 8128 bytes, but the zip entry declares"):
            S.load_arrays(p)
    # stored: the declared size must be the bytes actually there
    p.write_bytes(raw_zip([("W1.npy", data, 0, zlib.crc32(data), 2 ** 31)]))
    with pytest.raises(ValueError, match=r"array 'W1' is stored uncompressed, yet its zip entry "
                                         r"declares 2147483648 bytes held in 8128"):
        S.load_arrays(p)
    # deflated: no more than deflate can expand (1032:1), whatever the header says
    big = npy_header((2 ** 28,), "<f8")
    p.write_bytes(raw_zip([("W1.npy", comp, 8, 0, len(big) + 2 ** 31)]))
    with pytest.raises(ValueError, match=r"array 'W1': its zip entry declares 2147483776 bytes "
                                         r"from \d+ compressed, more than deflate can expand"):
        S.load_arrays(p)


def test_npy_header_length_and_members_are_checked(tmp_path):
    cases = {
        "notnpy": ([stored("W1.txt", b"hello")], r"member 'W1.txt' is not a .npy array"),
        "nomagic": ([stored("W1.npy", b"not an npy file at all")], "has no .npy header"),
        "version": ([stored("W1.npy", b"\x93NUMPY\x09\x00" + bytes(20))],
                    r"unknown .npy format version 9.0"),
        "bighead": ([stored("W1.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 ** 31))],
                    "header declares 2147483648 bytes"),
        "shorthead": ([stored("W1.npy", npy_header((3,))[:20])], "header is cut short"),
        "badhead": ([stored("W1.npy", b"\x93NUMPY\x01\x00\x08\x00{'a': 1}")],
                    "unreadable .npy header"),
        "dup": ([stored("W1.npy", npy_header((0,))), stored("W1.npy", npy_header((0,)))],
                "two arrays named 'W1'"),
        "negative": ([stored("W1.npy", b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', "
                                       b"'fortran_order': False, 'shape': (-4,), }"
                                       + b" " * 11 + b"\n")], "negative dimension"),
    }
    for name, (members, msg) in cases.items():
        p = tmp_path / (name + ".npz")
        p.write_bytes(raw_zip(members))
        with pytest.raises(ValueError, match=msg) as info:
            S.load_arrays(p)
        assert "pickle" not in str(info.value), name
        assert str(p) in str(info.value), name


@pytest.mark.parametrize("dtype,word", [
    ("|O", "Python objects .*pickle"), ("<U3", "dtype <U3"), ("|S3", "dtype |S3"),
    ("<M8[s]", "dtype datetime64"), ("|V8", "dtype |V8"),
    ([("a", "<f4"), ("b", "<f4")], "dtype")])
def test_non_numeric_dtypes_are_refused_from_the_header(tmp_path, dtype, word):
    p = tmp_path / "d.npz"
    p.write_bytes(raw_zip([stored("W1.npy", npy_header((2,), dtype))]))   # no data at all
    with pytest.raises(ValueError, match=r"array 'W1' (holds|has) .*" + word):
        S.load_arrays(p)


def no_building(monkeypatch):
    """Every ready net draws its weights through nets.book._weights: fail if one is drawn."""
    monkeypatch.setattr(N.book, "_weights", lambda *a, **k: pytest.fail("a net was being built"))
    monkeypatch.setattr(N.book, "_zeros", lambda *a, **k: pytest.fail("a net was being built"))


def huge_arch_file(tmp_path, arch, name="huge.npz"):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    p = tmp_path / name
    S.save_arrays(p, net.state_dict(), {"format": "xpnet-params", "architecture": arch,
                                         "dtype": "float32"})
    return p


@pytest.mark.parametrize("n", [15000, 10 ** 6, 10 ** 30])
def test_metadata_declaring_a_huge_net_is_refused_before_building(tmp_path, n, monkeypatch):
    p = huge_arch_file(tmp_path, {"type": "TwoLayerNet", "input_size": n, "hidden_size": n,
                                  "output_size": 10, "weight_init_std": 0.01})
    no_building(monkeypatch)
    with pytest.raises(ValueError, match=r"huge.npz: bad architecture metadata: TwoLayerNet's "
                                         r"config declares [\d,]+ parameter values, more than "
                                         r"xpnet builds \(MAX_PARAMETERS = 67,108,864\): the "
                                         r"largest, W1, has shape \(%d, %d\) from "
                                         r"input_size=%d, hidden_size=%d" % (n, n, n, n)):
        xpnet.load_net(p)
    with pytest.raises(ValueError, match="MAX_PARAMETERS"):
        xpnet.build_net({"type": "TwoLayerNet", "input_size": n, "hidden_size": n,
                         "output_size": 10})


@pytest.mark.parametrize("arch,match", [
    ({"type": "MultiLayerNet", "input_size": 784, "hidden_size_list": [1] * 100000,
      "output_size": 10}, "hidden_size_list has 100000 entries"),
    ({"type": "MultiLayerNetExtend", "input_size": 784, "hidden_size_list": [10 ** 6, 10 ** 6],
      "output_size": 10, "use_batchnorm": True},
     r"W2, has shape \(1000000, 1000000\) from hidden_size_list\[0\]=1000000, "
     r"hidden_size_list\[1\]=1000000"),
    ({"type": "SimpleConvNet", "input_dim": [1, 100000, 100000]},
     r"W2, has shape \(74994000120, 100\) from input_dim=\[1, 100000, 100000\]"),
    ({"type": "SimpleConvNet", "conv_param": {"filter_num": 10 ** 9, "filter_size": 1}},
     r"conv_param=\{'filter_num': 1000000000"),
    ({"type": "DeepConvNet", "input_dim": [3, 20000, 20000]}, r"W7, has shape"),
    ({"type": "DeepConvNet", "conv_param_3": {"filter_size": 10 ** 5}},
     r"Convolution \(conv_param_3\): window 100000 is larger than the padded input"),
    ({"type": "TwoLayerNet", "input_size": -3, "hidden_size": 2, "output_size": 2},
     "input_size must be a positive int, got -3"),
    ({"type": "TwoLayerNet", "input_size": 4.5, "hidden_size": 2, "output_size": 2},
     "input_size must be a positive int, got 4.5"),
    ({"type": "TwoLayerNet", "input_size": 4, "output_size": 2},
     "config lacks the field 'hidden_size'"),
    ({"type": "TwoLayerNet", "input_size": 4, "hidden_size": 3, "output_size": 2,
      "device": "gpu"}, "TwoLayerNet has no config field 'device'"),
    ({"type": "TwoLayerNet", "input_size": 4, "hidden_size": 3, "output_size": 2,
      "bogus": 1}, "TwoLayerNet has no config field 'bogus'"),
    ({"type": "Evil"}, "unknown network type 'Evil'"),
    ({"type": ["TwoLayerNet"]}, r"unknown network type \['TwoLayerNet'\]"),
    ({"type": "TwoLayerNet", "input_size": 4, "hidden_size": 3, "output_size": 2,
      "dtype": "float128"}, "dtype must be one of float32, float64, float16, got 'float128'"),
])
def test_bad_or_huge_architectures_name_the_field(tmp_path, arch, match, monkeypatch):
    p = huge_arch_file(tmp_path, arch)
    no_building(monkeypatch)            # the work is bounded: refused before building
    with pytest.raises(ValueError, match="huge.npz: bad architecture metadata: .*" + match):
        xpnet.load_net(p)


def test_architecture_must_match_the_file_before_the_net_is_built(tmp_path, monkeypatch):
    # within the limits, but not what the file holds: refused from the headers
    p = huge_arch_file(tmp_path, {"type": "TwoLayerNet", "input_size": 784,
                                  "hidden_size": 2000, "output_size": 10})
    no_building(monkeypatch)
    with pytest.raises(ValueError, match=r"parameter 'W1': file has shape \(4, 3\), TwoLayerNet "
                                         r"expects \(784, 2000\) \(file: .*huge.npz\)"):
        xpnet.load_net(p)


CONFIGS = [
    ("TwoLayerNet", dict(input_size=7, hidden_size=5, output_size=3)),
    ("MultiLayerNet", dict(input_size=7, hidden_size_list=[5, 4, 6], output_size=3)),
    ("MultiLayerNetExtend", dict(input_size=7, hidden_size_list=[5, 4], output_size=3,
                                 use_batchnorm=True, use_dropout=True)),
    ("MultiLayerNetExtend", dict(input_size=7, hidden_size_list=[5], output_size=3)),
    ("SimpleConvNet", dict(input_dim=(2, 9, 11), hidden_size=5, output_size=3,
                           conv_param={"filter_num": 3, "filter_size": 3, "pad": 1,
                                       "stride": 2})),
    ("SimpleConvNet", dict(input_dim=(1, 12, 12), hidden_size=4, output_size=2,
                           conv_param={"filter_num": 2, "filter_size": 2, "pad": (0, 1),
                                       "stride": (1, 2)})),
    ("DeepConvNet", dict(input_dim=(1, 16, 14), hidden_size=5, output_size=3,
                         conv_param_1={"filter_num": 2}, conv_param_4={"filter_num": 3,
                                                                        "pad": 0})),
]


@pytest.mark.parametrize("name,kw", CONFIGS)
def test_state_shapes_match_the_built_net(name, kw):
    net = N.NETS[name](device="cpu", seed=0, **kw)
    built = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert N.state_shapes(net.config) == built
    assert list(N.state_shapes(net.config)) == list(built)      # the same order, too


def param_file_with(tmp_path, name, value):
    net, p = small_two_layer(tmp_path, "ok")
    sd = net.state_dict()
    sd[name] = value
    out = tmp_path / "bad.npz"
    S.save_arrays(out, sd, S.read_meta(p))
    return out


@pytest.mark.parametrize("make,match", [
    (lambda a: a.astype(np.complex64), "dtype complex64"),
    (lambda a: a.astype(int), "dtype int64"),
    (lambda a: a > 0, "dtype bool"),
    (lambda a: a.astype(np.int8), "dtype int8"),
    (lambda a: a.astype(str), "dtype <U"),
    (lambda a: np.zeros(a.shape, [("x", "<f4")]), "dtype"),
])
def test_parameter_dtypes_other_than_float_are_refused_by_name(tmp_path, make, match):
    w = np.ones((4, 3), np.float32)
    p = param_file_with(tmp_path, "W1", make(w))
    with pytest.raises(ValueError, match=r"'W1'.*" + match):
        xpnet.load_net(p)
    with pytest.raises(ValueError, match=r"'W1'.*" + match):
        xpnet.TwoLayerNet(4, 3, 2, device="cpu").load_params(p)
    if make(w).dtype.kind not in "UV":      # those can't even be built in a state dict
        net = xpnet.TwoLayerNet(4, 3, 2, device="cpu")
        sd = net.state_dict()
        sd["W1"] = make(w)
        before = net.params["W1"].copy()
        with pytest.raises(ValueError, match=r"parameter 'W1' has dtype"):
            net.load_state_dict(sd)
        np.testing.assert_array_equal(net.params["W1"], before)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_parameters_are_refused_by_name(tmp_path, bad, backend):
    w = np.ones((3, 2), np.float32)
    w[1, 1] = bad
    p = param_file_with(tmp_path, "W2", w)
    with pytest.raises(ValueError, match=r"parameter 'W2' in .*bad.npz holds 1 NaN or infinite "
                                         r"value; refusing to load it"):
        xpnet.load_net(p)
    with pytest.raises(ValueError, match=r"parameter 'W2' in .*bad.npz holds 1 NaN"):
        xpnet.TwoLayerNet(4, 3, 2, device="cpu").load_params(p)
    net = xpnet.TwoLayerNet(4, 3, 2, device=backend.device)
    sd = net.state_dict()
    sd["W2"] = backend.asarray(w, np.float32)
    with pytest.raises(ValueError, match=r"parameter 'W2' holds 1 NaN or infinite value"):
        net.load_state_dict(sd)


def test_negative_running_variance_is_refused(tmp_path):
    net = xpnet.MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, seed=0, device="cpu")
    sd = net.state_dict()
    sd["running_var1"] = -np.ones(5, np.float32)
    with pytest.raises(ValueError, match="'running_var1' .*negative"):
        net.load_state_dict(sd)


def test_eval_of_a_nan_file_fails_cleanly(tmp_path, capsys):
    w = np.ones((3, 2), np.float32)
    w[0, 0] = np.nan
    p = param_file_with(tmp_path, "W2", w)
    code = cli.main(["eval", str(p), "--dataset", "mnist-sample", "--limit", "10",
                     "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code not in (0, None)
    assert "NaN" in err and "W2" in err and "Traceback" not in err
    assert not (tmp_path / "ev" / "eval.json").exists()


@pytest.mark.parametrize("meta,match", [
    (b"\xff\xfe not utf-8", "its metadata is not UTF-8 text"),
    (b"[1, 2, 3]", "its metadata must be a JSON object, got list"),
    (b"3", "its metadata must be a JSON object, got int"),
    (b"null", "its metadata must be a JSON object, got NoneType"),
    (b'"architecture"', "its metadata must be a JSON object, got str"),
    (b"{'single': 'quotes'}", "its metadata is not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "its metadata is not valid JSON"),
    (b"", "its metadata is not valid JSON"),
])
def test_bad_metadata_is_a_clear_value_error(tmp_path, meta, match):
    net, good = small_two_layer(tmp_path)
    members = [m for m in members_of(good) if not m[0].startswith(S.META_KEY)]
    p = tmp_path / "meta.npz"
    p.write_bytes(raw_zip(members + [meta_member(meta)]))
    for load in (S.load_arrays, S.read_meta, xpnet.load_net,
                 xpnet.TwoLayerNet(4, 3, 2, device="cpu").load_params):
        with pytest.raises(ValueError, match="meta.npz is not a valid xpnet parameter file: "
                                             + match):
            load(p)


def test_architecture_that_is_not_an_object(tmp_path):
    p = huge_arch_file(tmp_path, ["TwoLayerNet", 4, 3, 2])
    with pytest.raises(ValueError, match="metadata field 'architecture' must be a JSON object, "
                                         "got list"):
        xpnet.load_net(p)


def test_truncated_empty_and_non_zip_files_never_mention_pickle(tmp_path):
    _, good = small_two_layer(tmp_path)
    data = open(good, "rb").read()
    cuts = sorted({0, 1, 3, 4, 10, 30, 64, len(data) // 3, len(data) // 2, len(data) - 30,
                   len(data) - 1})
    for n in cuts:
        p = tmp_path / ("cut%d.npz" % n)
        p.write_bytes(data[:n])
        for load in (S.load_arrays, xpnet.load_net):
            with pytest.raises(ValueError, match="cut%d.npz" % n) as info:
                load(p)
            assert "pickle" not in str(info.value), (n, str(info.value))
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz is not a readable .npz file: the file is "
                                         "empty"):
        S.load_arrays(tmp_path / "empty.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a zip archive"):
        S.load_arrays(tmp_path / "plain.npy")


def test_corrupt_data_is_refused_with_the_array_name(tmp_path):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    p = S.save_arrays(tmp_path / "c.npz", net.state_dict(), compress=True)
    members = members_of(p)
    # flip bytes in W1's data but keep the declared sizes and CRC: the CRC check fails
    name, data, method, crc, size = members[0]
    assert name == "W1.npy"
    bad = data[:-8] + bytes(8)
    p2 = tmp_path / "crc.npz"
    p2.write_bytes(raw_zip([(name, bad, 0, crc, size)] + members[1:]))
    with pytest.raises(ValueError, match=r"crc.npz is not a readable .npz file: array 'W1': "
                                         r"BadZipFile: Bad CRC-32"):
        S.load_arrays(p2)
    # deflate data that isn't deflate
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    z = comp.compress(data) + comp.flush()
    p3 = tmp_path / "zlib.npz"
    p3.write_bytes(raw_zip([(name, b"\xff" * 8 + z[8:], 8, crc, size)] + members[1:]))
    with pytest.raises(ValueError, match=r"zlib.npz is not a readable .npz file: array 'W1'"):
        S.load_arrays(p3)
    # deflate stream that stops early
    p4 = tmp_path / "short.npz"
    p4.write_bytes(raw_zip([(name, z[: len(z) // 2], 8, crc, size)] + members[1:]))
    with pytest.raises(ValueError, match=r"short.npz is not a readable .npz file: array 'W1'"):
        S.load_arrays(p4)


def test_directories_and_symlink_loops_are_named_as_given(tmp_path):
    d = tmp_path / "dir.npz"
    d.mkdir()
    with pytest.raises(ValueError, match="dir.npz is a directory, not a parameter file"):
        xpnet.load_net(d)
    with pytest.raises(ValueError, match="dir.npz is a directory"):
        S.load_arrays(d)
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    with pytest.raises(ValueError, match=r"cannot read parameter file .*loop.npz: Too many "
                                         r"levels of symbolic links") as info:
        xpnet.load_net(loop)
    assert "loop.npz.npz" not in str(info.value)
    dangling = tmp_path / "dangling.npz"
    os.symlink(tmp_path / "nowhere", dangling)
    with pytest.raises(FileNotFoundError, match="dangling.npz"):
        xpnet.load_net(dangling)


def test_read_meta_reads_no_array_data(tmp_path, monkeypatch):
    net, p = small_two_layer(tmp_path)
    monkeypatch.setattr(S.NpzReader, "read", lambda *a: pytest.fail("array data was read"))
    assert S.read_meta(p)["architecture"]["type"] == "TwoLayerNet"


def test_too_many_zip_members_are_refused_before_listing_them(tmp_path, monkeypatch):
    monkeypatch.setattr(xpnet.npz, "MAX_MEMBERS", 5)
    p = tmp_path / "many.npz"
    p.write_bytes(raw_zip([stored("a%d.npy" % i, npy_header((0,))) for i in range(6)]))
    with pytest.raises(ValueError, match="lists 6 members, more than xpnet reads"):
        S.load_arrays(p)


def test_files_are_written_with_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        _, p = small_two_layer(tmp_path)
    finally:
        os.umask(old)
    assert os.stat(p).st_mode & 0o777 == 0o640
    assert os.stat(p[:-4] + ".json").st_mode & 0o777 == 0o640
