"""ONNX export (xpnet.onnx, `xpnet export`): onnxruntime must give what `predict` gives.

Needs the onnx extra (pip install -e ".[onnx]"); without onnx or onnxruntime the tests
that need them skip with the reason, and the ones about the missing package still run.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet import cli
from xpnet import layers as L
from xpnet import onnx as xonnx

try:
    import onnx
except ImportError as e:
    onnx, _ONNX_WHY = None, "onnx is not installed (pip install -e \".[onnx]\"): %s" % e
try:
    import onnxruntime as ort
except ImportError as e:
    ort, _ORT_WHY = None, "onnxruntime is not installed (pip install -e \".[onnx]\"): %s" % e

need_onnx = pytest.mark.skipif(onnx is None, reason=_ONNX_WHY if onnx is None else "")
need_ort = pytest.mark.skipif(onnx is None or ort is None,
                              reason=(_ONNX_WHY if onnx is None else
                                      _ORT_WHY if ort is None else ""))

TOL = dict(rtol=1e-5, atol=1e-5)


def run_onnx(model_or_path, x):
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def with_running_stats(net, shape):
    """Train-mode passes on shifted data, so BatchNorm's running statistics are far
    from their start (mean 0, var 1) and an export that ignored them would show."""
    rng = np.random.default_rng(3)
    for _ in range(3):
        net.predict(rng.random((16,) + shape, dtype=np.float32) * 3 + 1, train_flg=True)
    b = {k: xpnet.asnumpy(v) for k, v in net.buffers.items()}
    moved = [np.abs(b[k]).max() > 0.1 or np.abs(b[k.replace("mean", "var")] - 1).max() > 0.1
             for k in b if k.startswith("running_mean")]
    assert moved and all(moved), b
    return net


def ready_nets():
    return {
        "TwoLayerNet": (lambda: xpnet.TwoLayerNet(784, 30, 10, seed=1), (784,)),
        "MultiLayerNet": (lambda: xpnet.MultiLayerNet(784, [40, 30], 10, activation="sigmoid",
                                                      seed=1), (784,)),
        "MultiLayerNetExtend": (lambda: with_running_stats(xpnet.MultiLayerNetExtend(
            784, [40, 30], 10, use_batchnorm=True, use_dropout=True, dropout_ratio=0.3,
            activation="tanh", seed=1), (784,)), (784,)),
        "SimpleConvNet": (lambda: xpnet.SimpleConvNet(seed=1), (1, 28, 28)),
        "DeepConvNet": (lambda: xpnet.DeepConvNet(seed=1), (1, 28, 28)),
    }


def odd_net(seed=0):
    """Pooling padding, odd strides and kernels, every activation, BatchNorm on 4-D and
    2-D inputs, a bias-free convolution and affine, dropout, an explicit Flatten."""
    rng = np.random.default_rng(seed)

    def f(*s):
        return (rng.standard_normal(s) * 0.5).astype(np.float32)

    def bn(n):
        return L.BatchNormalization(f(n) + 1, f(n), running_mean=f(n),
                                    running_var=np.abs(f(n)) + 0.5, eps=1e-3)
    return xpnet.Sequential([
        L.Convolution(f(4, 3, 3, 3), f(4), stride=2, pad=1), bn(4), L.LeakyRelu(0.1),
        L.Pooling(3, 3, stride=2, pad=1),
        L.Sigmoid(), L.AvgPooling(3, 3, stride=1, pad=1), L.Tanh(),
        L.Convolution(f(5, 4, 2, 3), None, stride=(1, 2), pad=(0, 1)), L.Flatten(),
        L.Affine(f(20, 8), f(8)), bn(8), L.Relu(), L.Dropout(0.3), L.Affine(f(8, 3), None)])


ODD_SHAPE = (3, 11, 9)


@pytest.fixture(scope="module")
def built():
    return {k: (make(), shape) for k, (make, shape) in ready_nets().items()}


# ------------------------------------------------------------------ onnxruntime == predict

@need_ort
@pytest.mark.parametrize("batch", [1, 37])
@pytest.mark.parametrize("name", list(ready_nets()))
def test_ready_nets_match_predict(built, name, batch):
    net, shape = built[name]
    model = xonnx.to_onnx(net)
    x = np.random.default_rng(batch).random((batch,) + shape, dtype=np.float32)
    y = run_onnx(model, x)
    assert y.dtype == np.float32 and y.shape == (batch, 10)
    np.testing.assert_allclose(y, xpnet.asnumpy(net.predict(x)), **TOL)


@need_ort
@pytest.mark.parametrize("batch", [1, 37])
def test_padding_odd_strides_and_every_layer_match_predict(batch):
    net = odd_net()
    x = np.random.default_rng(batch).standard_normal((batch,) + ODD_SHAPE).astype(np.float32)
    expect = xpnet.asnumpy(net.predict(x))
    kinds = [n.op_type for n in xonnx.to_onnx(net, input_shape=ODD_SHAPE).graph.node]
    for op in ("Conv", "MaxPool", "AveragePool", "LeakyRelu", "Sigmoid", "Tanh", "Gemm",
               "BatchNormalization", "Flatten", "Relu"):
        assert op in kinds, op
    np.testing.assert_allclose(run_onnx(xonnx.to_onnx(net, input_shape=ODD_SHAPE), x),
                               expect, **TOL)
    probs = run_onnx(xonnx.to_onnx(net, input_shape=(None,) + ODD_SHAPE, softmax=True), x)
    np.testing.assert_allclose(probs, xpnet.asnumpy(xpnet.functions.softmax(expect)), **TOL)


@need_ort
def test_float64_mlp_and_lowest_opset():
    net = with_running_stats(xpnet.MultiLayerNetExtend(20, [10], 3, use_batchnorm=True,
                                                       dtype="float64", seed=2), (20,))
    x = np.random.default_rng(0).random((5, 20))
    y = run_onnx(xonnx.to_onnx(net, opset=xonnx.MIN_OPSET), x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, xpnet.asnumpy(net.predict(x)), rtol=1e-12, atol=1e-12)


@need_ort
def test_net_on_any_device_exports(device):
    net = with_running_stats(xpnet.MultiLayerNetExtend(12, [6], 4, use_batchnorm=True, seed=3),
                             (12,)).to(device)
    before = net.state_dict()
    x = np.random.default_rng(0).random((7, 12), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(xonnx.to_onnx(net), x), xpnet.asnumpy(net.predict(x)),
                               **TOL)
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)   # export changes nothing


# ------------------------------------------------------------------ the file and its metadata

@need_onnx
def test_file_passes_checker_and_carries_metadata(tmp_path):
    net = xpnet.SimpleConvNet(seed=0)
    path = tmp_path / "sub" / "model.onnx"
    norm = {"formula": "x = pixels / 255"}
    assert xonnx.export(net, path, input_normalization=norm,
                        metadata={"note": "hi", "classes": ["a", "b"]}) == str(path)
    assert os.listdir(path.parent) == ["model.onnx"]      # no temporary file left behind
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))
    assert m.producer_name == "xpnet" and m.producer_version == xpnet.__version__
    assert m.opset_import[0].version == xonnx.DEFAULT_OPSET
    props = {p.key: p.value for p in m.metadata_props}
    assert props["xpnet_version"] == xpnet.__version__
    arch = json.loads(props["xpnet_architecture"])
    assert arch == json.loads(json.dumps(net.config))
    assert xpnet.build_net(arch).predict(np.zeros((1, 1, 28, 28))).shape == (1, 10)
    inp = json.loads(props["xpnet_input"])
    assert inp == {"name": "input", "shape": ["batch", 1, 28, 28], "dtype": "float32",
                   "layout": "NCHW", "normalization": norm}
    assert json.loads(props["xpnet_output"])["name"] == "logits"
    assert props["note"] == "hi" and json.loads(props["classes"]) == ["a", "b"]
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 28, 28]
    out = [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert out == ["batch", 10]
    assert sorted(t.name for t in m.graph.initializer) == sorted(net.params.keys())


@need_onnx
def test_hand_built_net_metadata_lists_its_layers():
    m = xonnx.to_onnx(odd_net(), input_shape=ODD_SHAPE)
    arch = json.loads({p.key: p.value for p in m.metadata_props}["xpnet_architecture"])
    assert arch["type"] == "Sequential" and len(arch["layers"]) == 14
    assert "Dropout" not in [n.op_type for n in m.graph.node]   # identity at inference


# ------------------------------------------------------------------ refusals

class Odd(L.Layer):
    def forward(self, x, train_flg=False):
        return x


class CountingRelu(L.Relu):
    """A subclass that computes what its parent does: it exports as its parent."""
    calls = 0

    def forward(self, x, train_flg=False):
        CountingRelu.calls += 1
        return super().forward(x, train_flg)


@need_onnx
def test_layer_without_onnx_equivalent_is_refused_by_name(tmp_path):
    net = xpnet.Sequential([L.Affine(np.ones((4, 3), np.float32), np.zeros(3, np.float32)),
                            Odd()])
    with pytest.raises(TypeError, match=r"layer Odd of Sequential \(net.layers\[1\]\) has no "
                                        r"ONNX equivalent"):
        xonnx.export(net, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


@need_ort
def test_subclass_and_new_layer_export_through_hooks():
    from new_layer import Softplus
    rng = np.random.default_rng(0)
    net = xpnet.Sequential([L.Affine(rng.standard_normal((4, 5)).astype(np.float32),
                                     np.zeros(5, np.float32)), CountingRelu(),
                            L.Affine(rng.standard_normal((5, 3)).astype(np.float32),
                                     np.zeros(3, np.float32)), Softplus()])
    m = xonnx.to_onnx(net, input_shape=(4,))
    ops = [n.op_type for n in m.graph.node]
    assert ops == ["Gemm", "Relu", "Gemm", "Softplus"], ops
    x = rng.standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(m, x), xpnet.asnumpy(net.predict(x)), **TOL)


@need_onnx
def test_bad_shapes_and_opsets_are_refused():
    conv_first = xpnet.Sequential([L.Convolution(np.ones((2, 1, 3, 3), np.float32), None)])
    with pytest.raises(ValueError, match="pass input_shape"):
        xonnx.to_onnx(conv_first)
    with pytest.raises(ValueError, match=r"layer Convolution .* expects \(C=1, H, W\)"):
        xonnx.to_onnx(conv_first, input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="Convolution: window 3 is larger"):
        xonnx.to_onnx(conv_first, input_shape=(1, 2, 8))
    with pytest.raises(ValueError, match=r"layer Affine .* W expects 784 features per sample, "
                                         r"gets 100"):
        xonnx.to_onnx(xpnet.TwoLayerNet(784, 5, 3), input_shape=(1, 10, 10))
    with pytest.raises(ValueError, match="input_shape must be one sample's shape"):
        xonnx.to_onnx(xpnet.TwoLayerNet(784, 5, 3), input_shape=(0,))
    for bad in (xonnx.MIN_OPSET - 1, xonnx.supported_opsets()[-1] + 1, True, "17"):
        with pytest.raises(ValueError, match="opset must be an int from 13"):
            xonnx.to_onnx(xpnet.TwoLayerNet(4, 5, 3), opset=bad)


def test_without_onnx_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)    # `import onnx` now fails
    with pytest.raises(ImportError, match=r'pip install -e "\.\[onnx\]"'):
        xonnx.to_onnx(xpnet.TwoLayerNet(4, 5, 3))


def test_importing_xpnet_onnx_imports_neither_onnx_nor_torch():
    code = ("import sys, xpnet, xpnet.onnx, xpnet.torch_io; "
            "assert xpnet.onnx.__file__.endswith('xpnet/onnx.py'); "
            "bad = [m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    env = {k: v for k, v in os.environ.items() if k != "XPNET_DEVICE"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ xpnet export

def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run_dir(tmp_path):
    """A run folder like `xpnet train` writes (params.npz with dataset and architecture)."""
    net = with_running_stats(xpnet.MultiLayerNetExtend(784, [20], 10, use_batchnorm=True,
                                                       seed=4), (784,))
    net.save_params(tmp_path / "run" / "params", extra_meta={"dataset": "mnist-sample",
                                                             "final_test_acc": 0.5})
    return tmp_path / "run", net


@need_ort
def test_cli_export_run_folder(run_dir, tmp_path, capsys):
    run, net = run_dir
    code, out, err = _run(["export", run, "--format", "onnx", "-o", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert "ONNX opset %d" % xonnx.DEFAULT_OPSET in out and "[batch, 784]" in out
    x = np.random.default_rng(0).random((37, 784), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(str(tmp_path / "m.onnx"), x),
                               xpnet.asnumpy(net.predict(x)), **TOL)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["xpnet_input"])["normalization"]["formula"] == "x = pixels / 255"
    assert json.loads(props["xpnet_classes"])[:2] == ["0", "1"]
    # a parameter file (with or without .npz), --softmax, --opset, the default output path
    code, out, err = _run(["export", run / "params", "--softmax", "--opset", 13, "--quiet"],
                          capsys)
    assert code == 0 and out == "", err
    m = onnx.load(str(run / "model.onnx"))
    assert m.opset_import[0].version == 13 and m.graph.output[0].name == "probabilities"
    np.testing.assert_allclose(run_onnx(str(run / "model.onnx"), x).sum(axis=1), 1, rtol=1e-5)


@need_onnx
def test_cli_export_bad_input_is_one_clear_line(run_dir, tmp_path, capsys):
    run, _ = run_dir
    code, out, err = _run(["export", tmp_path / "nothing"], capsys)
    assert code == 1 and err.strip().splitlines() == [
        "xpnet export: error: no run folder or parameter file at %s" % (tmp_path / "nothing")]
    (tmp_path / "empty").mkdir()
    code, out, err = _run(["export", tmp_path / "empty"], capsys)
    assert code == 1 and "has no params.npz" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    code, out, err = _run(["export", tmp_path / "junk.npz"], capsys)
    assert code == 1 and "not a zip archive" in err and len(err.strip().splitlines()) == 1
    code, out, err = _run(["export", run, "--opset", 999], capsys)
    assert code == 2 and "--opset must be from 13 to" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(run), "--format", "tflite"])
    assert e.value.code == 2
    assert "unknown format 'tflite'; xpnet exports: onnx" in capsys.readouterr().err
    assert not (run / "model.onnx").exists()


def test_cli_export_without_onnx_says_pip_install(run_dir, capsys, monkeypatch):
    run, _ = run_dir
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, out, err = _run(["export", run], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert 'pip install -e ".[onnx]"' in err
