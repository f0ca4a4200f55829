"""Issue 20: hostile or careless inputs that used to get through (memory, hangs, silent
wrong answers), each checked by what it must do now."""
import copy
import io
import os
import pickle
import re
import struct
import tempfile
import threading
import warnings
import zlib

import numpy as np
import pytest

import xpnet
from memory_probe import peak_alloc_mib
from xpnet import book_params, explain
from xpnet import serialization as S
from xpnet.trainer import Trainer

# ---------------------------------------------------------------- book pickles


def _op_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _op_int(i):
    return b"J" + struct.pack("<i", i)


def _pickle_calling(global_line, args):
    """A protocol-2 pickle of ``{'W1': <global>(*args)}``: the crafted file of issue 20."""
    return (b"\x80\x02}" + _op_str("W1") + b"c" + global_line + b"\n(" + b"".join(args)
            + b"tRs.")


@pytest.mark.parametrize("global_line, args, match", [
    # _frombuffer(1200000000, 'f8', ...) made bytes(1200000000): 1.18 GB from 64 bytes
    (b"numpy._core.numeric\n_frombuffer",
     [_op_int(1200000000), _op_str("<f8"), _op_int(150000000), b"\x85", _op_str("C")],
     "_frombuffer needs the array's bytes, got int"),
    (b"numpy.core.numeric\n_frombuffer",
     [_op_int(1200000000), _op_str("<f8"), _op_int(150000000), b"\x85", _op_str("C")],
     "_frombuffer needs the array's bytes, got int"),
    # numpy.ndarray((150000000,), 'f8') would allocate 1.2 GB: not a callable here
    (b"numpy\nndarray", [_op_int(150000000), b"\x85", _op_str("<f8")], "not a readable"),
])
def test_a_tiny_book_pickle_cannot_make_a_big_allocation(tmp_path, global_line, args, match):
    p = tmp_path / "tiny.pkl"
    p.write_bytes(_pickle_calling(global_line, args))
    assert p.stat().st_size < 100
    mib, err = peak_alloc_mib(book_params.load_book_params, p)
    assert isinstance(err, ValueError) and re.search(match, str(err)), err
    assert mib < 1, mib


def _book_net_and_arrays():
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu", dtype="float64")
    rng = np.random.default_rng(1)
    return net, {k: rng.standard_normal(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_book_pickles_of_every_protocol_are_read(tmp_path, protocol):
    net, arrays = _book_net_and_arrays()
    p = tmp_path / "params.pkl"
    p.write_bytes(pickle.dumps(arrays, protocol=protocol))
    assert book_params.is_pickle(p)
    got = book_params.load_book_params(p)
    assert got.keys() == arrays.keys()
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
    net.load_params(p)
    for k in arrays:
        np.testing.assert_array_equal(xpnet.asnumpy(net.params[k]), arrays[k])


def test_load_params_reads_the_pkl_it_is_given_not_the_npz_beside_it(tmp_path):
    net, arrays = _book_net_and_arrays()
    pkl = tmp_path / "params.pkl"
    pkl.write_bytes(pickle.dumps(arrays))
    other = xpnet.TwoLayerNet(4, 3, 2, seed=5, device="cpu", dtype="float64")
    with pytest.warns(UserWarning, match="writes no pickles"):
        other.save_params(pkl)                  # writes params.npz beside it
    assert (tmp_path / "params.npz").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # and says nothing about the .npz
        net.load_params(pkl)
    np.testing.assert_array_equal(xpnet.asnumpy(net.params["W1"]), arrays["W1"])
    # only when the named .pkl is not there is the .npz written in its place read
    pkl.unlink()
    net.load_params(pkl)
    np.testing.assert_array_equal(xpnet.asnumpy(net.params["W1"]),
                                  xpnet.asnumpy(other.params["W1"]))


# ---------------------------------------------------------------- file sizes bound memory

def _deflated_zeros_member(name, shape, dtype):
    """A .npy member of zeros, deflated (about 1 KiB per MiB): the steady-state piece of
    one MiB is repeated. Its CRC is true up to 128 MiB; larger ones are never read."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    head = buf.getvalue()
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    mib, rest = divmod(n, 1 << 20)
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    z = bytes(1 << 20)
    parts = [co.compress(head) + co.flush(zlib.Z_SYNC_FLUSH)]
    pieces = [co.compress(z) + co.flush(zlib.Z_SYNC_FLUSH) for _ in range(min(mib, 3))]
    parts += pieces[:2] + pieces[1:2] * (mib - 2) if mib >= 3 else pieces
    parts.append(co.compress(z[:rest]) + co.flush())
    crc = zlib.crc32(head)
    if n <= 128 << 20:
        for _ in range(mib):
            crc = zlib.crc32(z, crc)
        crc = zlib.crc32(z[:rest], crc)
    return name + ".npy", b"".join(parts), crc, len(head) + n


def raw_zip(members):
    """A zip archive written by hand from ``(name, data, method, crc, size)`` members
    (deflated data is kept as it is; zipfile would recompress it)."""
    out, central = io.BytesIO(), []
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


def _arch_file(path, arch, shapes, dtype="<f8"):
    import json
    meta = json.dumps({"format": "xpnet-params", "architecture": arch,
                       "dtype": "float64"}).encode()
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (len(meta),)})
    meta_data = buf.getvalue() + meta
    members = [(S.META_KEY + ".npy", meta_data, 0, zlib.crc32(meta_data), len(meta_data))]
    for k, shape in shapes.items():
        name, data, crc, size = _deflated_zeros_member(k, shape, dtype)
        members.append((name, data, 8, crc, size))
    path.write_bytes(raw_zip(members))
    return path


def test_a_small_file_at_the_architecture_cap_is_refused_before_allocating(tmp_path):
    # issue 20: 507 KB of float64 zeros declaring 2**26 values took 1.57 GB to load
    arch = {"type": "TwoLayerNet", "input_size": 8192, "hidden_size": 8189, "output_size": 2}
    shapes = xpnet.nets.state_shapes(arch)
    assert sum(int(np.prod(s)) for s in shapes.values()) <= xpnet.nets.MAX_PARAMETERS
    p = _arch_file(tmp_path / "cap.npz", arch, shapes)
    assert p.stat().st_size < 600 << 10
    mib, err = peak_alloc_mib(xpnet.load_net, p)
    assert isinstance(err, ValueError) and "more than the 64.0 MiB xpnet reads from this " \
        "file (at most 16 times its size" in str(err), err
    assert mib < 4, mib


def test_worst_case_of_a_file_under_1_mb(tmp_path):
    # the most a small file may declare (EXPANSION_FLOOR_BYTES of float64 zeros, a net
    # whose float64 build is as large): loaded, within the documented worst case
    values = S.EXPANSION_FLOOR_BYTES // 8
    hidden = (values - 2) // (1024 + 1 + 2)
    arch = {"type": "TwoLayerNet", "input_size": 1024, "hidden_size": hidden, "output_size": 2}
    shapes = xpnet.nets.state_shapes(arch)
    p = _arch_file(tmp_path / "worst.npz", arch, shapes)
    assert p.stat().st_size < 1 << 20
    mib, net = peak_alloc_mib(xpnet.load_net, p, dtype="float64")
    assert isinstance(net, xpnet.TwoLayerNet), net
    assert mib < 3.25 * 64, mib       # docs/reliability.md: about 3x the 64 MiB floor (197 seen)
    bigger = dict(arch, hidden_size=hidden + 64)
    p2 = _arch_file(tmp_path / "over.npz", bigger, xpnet.nets.state_shapes(bigger))
    mib, err = peak_alloc_mib(xpnet.load_net, p2)
    assert isinstance(err, ValueError), err
    assert mib < 4, mib


def _deflated_meta_file(path, text):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (len(text),)})
    data = buf.getvalue() + text
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    comp = co.compress(data) + co.flush()
    path.write_bytes(raw_zip([(S.META_KEY + ".npy", comp, 8, zlib.crc32(data), len(data))]))
    return path


def test_deflated_json_metadata_is_bounded_by_the_file_size(tmp_path):
    # 32 MiB of "[]," deflate to 33 KB and parsed into 11 million lists (757 MiB)
    n = (S.MAX_META_BYTES - 16) // 3
    p = _deflated_meta_file(tmp_path / "meta.npz", b'{"x":[' + b"[]," * n + b"[]]}")
    assert p.stat().st_size < 64 << 10
    mib, err = peak_alloc_mib(S.read_meta, p)
    assert isinstance(err, ValueError) and re.search(
        r"its metadata declares 32.0 MiB, more than the 1.0 MiB xpnet reads from this file "
        r"\(at most 4 times its size", str(err)), err
    assert mib < 4, mib
    # the most a small file's metadata may be: 1 MiB of text, parsed within tens of MiB
    n = (S.META_FLOOR_BYTES - 16) // 3
    p = _deflated_meta_file(tmp_path / "small.npz", b'{"x":[' + b"[]," * n + b"[]]}")
    mib, meta = peak_alloc_mib(S.read_meta, p)
    assert len(meta["x"]) == n + 1 and mib < 40, mib


# ---------------------------------------------------------------- special files never block

def _fifo(tmp_path, name):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    p = tmp_path / name
    os.mkfifo(p)
    return p


def _returns_within(f, seconds=30):
    """f's exception, or a failure if it blocks (a generous limit, not a timing check:
    the call must not wait on the FIFO at all)."""
    box = []

    def run():
        try:
            f()
            box.append(None)
        except Exception as e:
            box.append(e)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    return th, box


@pytest.mark.parametrize("name, load", [
    ("p.npz", lambda p: xpnet.load_net(p)),
    ("p.npz", lambda p: xpnet.TwoLayerNet(4, 3, 2, device="cpu").load_params(p)),
    ("p.pkl", lambda p: xpnet.TwoLayerNet(4, 3, 2, device="cpu").load_params(p)),
    ("p.npz", lambda p: S.load_arrays(p)),
    ("p.pkl", lambda p: book_params.load_book_params(p)),
])
def test_a_fifo_is_refused_without_blocking(tmp_path, name, load):
    p = _fifo(tmp_path, name)
    th, box = _returns_within(lambda: load(p))
    if th.is_alive():           # unblock the reader so the test process can end
        fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("reading a FIFO blocked")
    assert isinstance(box[0], ValueError) and "is a FIFO (named pipe), not a" in str(box[0]), \
        box


def test_a_device_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    link = tmp_path / "zero.npz"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="zero.npz is a device, not a parameter file"):
        xpnet.load_net(link)


# ---------------------------------------------------------------- NaN weights

def test_save_warns_on_nan_weights_and_load_reads_them_only_when_asked(tmp_path):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    net.params["W1"][0, 0] = float("nan")
    net.params["b2"][1] = float("inf")
    with pytest.warns(S.NonFiniteWarning, match=r"parameters 'W1', 'b2' of .*nan.npz hold NaN "
                                                r"or infinite values .*allow_nonfinite=True"):
        p = net.save_params(tmp_path / "nan")
    with pytest.raises(ValueError, match="parameter 'W1' in .*nan.npz holds 1 NaN"):
        xpnet.load_net(p)
    got = xpnet.load_net(p, allow_nonfinite=True)
    assert np.isnan(xpnet.asnumpy(got.params["W1"])[0, 0])
    other = xpnet.TwoLayerNet(4, 3, 2, seed=1, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        other.load_params(p)
    other.load_params(p, allow_nonfinite=True)
    assert np.isinf(xpnet.asnumpy(other.params["b2"])[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a finite net saves without a word
        xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu").save_params(tmp_path / "ok")


# ---------------------------------------------------------------- Trainer labels

@pytest.mark.parametrize("row, total", [([0, 0, 0], "0"), ([1, 1, 0], "2"),
                                        ([0.5, 0.2, 0.1], "0.8")])
def test_one_hot_rows_must_sum_to_one(row, total):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    t = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    t[4] = row
    net = xpnet.TwoLayerNet(4, 5, 3, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"Trainer: t_train row 4 sums to %s; one-hot or soft "
                                         r"target rows must sum to 1" % re.escape(total)):
        Trainer(net, x, t, x, np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]], verbose=False)
    with pytest.raises(ValueError, match="t_test row 4 sums to"):
        Trainer(net, x, np.eye(3)[[0, 1, 2, 0, 1, 2]], x, t, verbose=False)
    soft = np.full((6, 3), 1 / 3, np.float32)           # soft rows that sum to 1 are fine
    Trainer(net, x, soft, x, soft.astype(np.float64), verbose=False)


# ---------------------------------------------------------------- explain.occlusion

def test_occlusion_stride_must_leave_no_pixel_uncovered():
    net = xpnet.SimpleConvNet((1, 10, 10), {"filter_num": 2, "filter_size": 3, "pad": 0,
                                            "stride": 1}, 4, 3, seed=0, device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 1, 10, 10))
    for stride in (999999999, 4, (1, 5)):
        with pytest.raises(ValueError, match=r"occlusion: stride must be between 1 and the "
                                             r"window \(3, 3\), so that every pixel is covered; "
                                             r"got %s \(image 10x10\)" % re.escape(repr(stride))):
            explain.occlusion(net, x, window=3, stride=stride)
    m = xpnet.asnumpy(explain.occlusion(net, x, window=3, stride=3))
    assert np.isfinite(m).all()


# ---------------------------------------------------------------- nets

def test_deepcopy_waits_for_a_pass_in_another_thread():
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    done = threading.Event()
    out = []

    def copier():
        out.append(copy.deepcopy(net))
        done.set()
    with net._pass_lock:                 # a training pass is under way in "another thread"
        th = threading.Thread(target=copier, daemon=True)
        th.start()
        assert not done.wait(0.5), "deepcopy did not wait for the pass to end"
    assert done.wait(60)
    th.join()
    twin = out[0]
    assert twin is not net and twin._pass_lock is not net._pass_lock
    np.testing.assert_array_equal(xpnet.asnumpy(twin.params["W1"]),
                                  xpnet.asnumpy(net.params["W1"]))
    twin.params["W1"][...] = 0
    assert xpnet.asnumpy(net.params["W1"]).any()


def test_deepcopy_while_a_trainer_trains_in_another_thread():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    t = rng.integers(0, 3, 400)
    net = xpnet.TwoLayerNet(8, 16, 3, seed=0, device="cpu")
    tr = Trainer(net, x, t, x[:50], t[:50], epochs=3, mini_batch_size=10, verbose=False)
    errors = []
    th = threading.Thread(target=lambda: tr.train(), daemon=True)
    th.start()
    while th.is_alive():
        try:
            copy.deepcopy(net)
        except Exception as e:          # "dictionary changed size during iteration"
            errors.append(e)
            break
    th.join()
    assert errors == []


def test_setting_a_parameter_to_a_list_is_a_type_error():
    net = xpnet.TwoLayerNet(2, 2, 2, seed=0, device="cpu")
    with pytest.raises(TypeError, match=r"params\['W1'\] must be set to an array .*got list; "
                                        r"wrap it: np.asarray"):
        net.params["W1"] = [[1.0, 2.0], [3.0, 4.0]]
    net.params["W1"] = np.asarray([[1.0, 2.0], [3.0, 4.0]])
    assert xpnet.asnumpy(net.params["W1"]).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_loss_and_last_loss_are_python_floats(backend):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device=backend.device)
    x = np.random.default_rng(0).standard_normal((5, 4))
    t = np.array([0, 1, 1, 0, 1])
    loss = net.loss(x, t)
    assert type(loss) is float and repr(loss)[0].isdigit()
    assert net.last_loss is None
    net.gradient(x, t)
    assert type(net.last_loss) is float
    assert net.last_loss == pytest.approx(float(net.loss_array(x, t, train_flg=True)))


# ---------------------------------------------------------------- atomic writes

def test_an_atomic_write_to_a_directory_makes_no_temporary_file(tmp_path, monkeypatch):
    made = []
    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: made.append(k) or real(*a, **k))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match="out is a directory; give a file name"):
        S.atomic_write_bytes(target, b"data")
    assert made == [] and sorted(os.listdir(tmp_path)) == ["out"]


def test_the_trainer_reads_losses_from_the_device_array_not_the_float(monkeypatch):
    # last_loss is a float, so reading it waits for the device: the Trainer must keep
    # reading last_loss_array and bring losses back in batches
    reads = []
    prop = xpnet.nets.Sequential.last_loss
    monkeypatch.setattr(xpnet.nets.Sequential, "last_loss", property(
        lambda self: reads.append(1) or prop.fget(self), prop.fset))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    t = rng.integers(0, 3, 60)
    net = xpnet.TwoLayerNet(4, 5, 3, seed=0, device="cpu")
    tr = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=10, verbose=False)
    before = len(reads)
    h = tr.train()
    assert len(h["train_loss"]) == 12 and all(type(v) is float for v in h["train_loss"])
    assert len(reads) == before
