"""Parameter files: .npz + JSON, never pickle; round trips across devices; refusals;
atomic writes."""
import json
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
    if not GPU_OK:
        pytest.skip("needs CuPy and a GPU: " + GPU_WHY)
    src = "gpu" if backend.device == "cpu" else "cpu"
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
    with pytest.raises(ValueError, match="not a valid xpnet parameter file .*pickle"):
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
