"""PyTorch weights in and out (xpnet.torch_io): same outputs, exact round trips,
clear errors. Skips with the reason when PyTorch is not installed."""
import os
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet import layers as L
from xpnet.torch_io import from_torch, to_torch

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[torch]')")
nn = torch.nn


def trained_bn(net, shape):
    """Move BatchNorm's running statistics away from (0, 1) so they must travel."""
    rng = np.random.default_rng(3)
    for _ in range(3):
        net.predict(rng.random((16,) + shape, dtype=np.float32) * 3 + 1, train_flg=True)
    return net


def odd_net(seed=0, dtype=np.float32):
    """Padding, odd strides, every activation, BatchNorm 4-D and 2-D, no-bias layers."""
    rng = np.random.default_rng(seed)

    def f(*s):
        return (rng.standard_normal(s) * 0.5).astype(dtype)

    def bn(n):
        return L.BatchNormalization(f(n) + 1, f(n), running_mean=f(n),
                                    running_var=np.abs(f(n)) + 0.5, eps=1e-3)
    return xpnet.Sequential([
        L.Convolution(f(4, 3, 3, 3), f(4), stride=2, pad=1), bn(4), L.LeakyRelu(0.1),
        L.Pooling(3, 3, stride=2, pad=1), L.Sigmoid(), L.AvgPooling(3, 3, stride=1, pad=1),
        L.Tanh(), L.Convolution(f(5, 4, 2, 3), None, stride=(1, 2), pad=(0, 1)), L.Flatten(),
        L.Affine(f(20, 8), f(8)), bn(8), L.Relu(), L.Dropout(0.3), L.Affine(f(8, 3), None)])


# name -> (make(seed), one sample's shape)
NETS = {
    "TwoLayerNet": (lambda s: xpnet.TwoLayerNet(784, 30, 10, seed=s), (784,)),
    "MultiLayerNet": (lambda s: xpnet.MultiLayerNet(784, [40, 30], 10, activation="sigmoid",
                                                    seed=s), (784,)),
    "MultiLayerNetExtend": (lambda s: trained_bn(xpnet.MultiLayerNetExtend(
        784, [40, 30], 10, use_batchnorm=True, use_dropout=True, seed=s), (784,)), (784,)),
    "SimpleConvNet": (lambda s: xpnet.SimpleConvNet(seed=s), (1, 28, 28)),
    "DeepConvNet": (lambda s: xpnet.DeepConvNet(seed=s), (1, 28, 28)),
    "odd": (lambda s: odd_net(s), (3, 11, 9)),
}


def torch_out(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", list(NETS))
def test_round_trip_gives_identical_logits(name):
    make, shape = NETS[name]
    net, fresh = make(0), make(1)
    x = np.random.default_rng(0).random((9,) + shape, dtype=np.float32)
    y = xpnet.asnumpy(net.predict(x))
    model = to_torch(net)
    np.testing.assert_allclose(torch_out(model, x), y, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(xpnet.asnumpy(fresh.predict(x)), y)   # the load must matter
    assert from_torch(model, fresh) is fresh
    assert np.array_equal(xpnet.asnumpy(fresh.predict(x)), y)         # bit for bit
    for k, v in net.state_dict().items():
        assert np.array_equal(fresh.state_dict()[k], v), k


def test_float64_is_kept_both_ways():
    net = trained_bn(xpnet.MultiLayerNetExtend(12, [6], 4, use_batchnorm=True, dtype="float64",
                                               seed=0), (12,))
    model = to_torch(net)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert {b.dtype for b in model.buffers() if b.is_floating_point()} == {torch.float64}
    with torch.no_grad():                        # PyTorch trains: xpnet takes the result
        for p in model.parameters():
            p.add_(0.25)
    fresh = xpnet.MultiLayerNetExtend(12, [6], 4, use_batchnorm=True, dtype="float64", seed=1)
    from_torch(model, fresh)
    x = np.random.default_rng(0).random((5, 12))
    np.testing.assert_allclose(xpnet.asnumpy(fresh.predict(x)), torch_out(model, x),
                               rtol=1e-12, atol=1e-12)
    assert fresh.params["W1"].dtype == np.float64


def test_layout_and_settings():
    model = to_torch(odd_net())
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Conv2d", "BatchNorm2d", "LeakyReLU", "MaxPool2d", "Sigmoid", "AvgPool2d",
                     "Tanh", "Conv2d", "Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout",
                     "Linear"]
    assert model[2].negative_slope == pytest.approx(0.1) and model[1].eps == pytest.approx(1e-3)
    assert model[5].count_include_pad and model[3].padding == (1, 1)
    assert model[7].bias is None and model[7].stride == (1, 2) and model[13].bias is None
    bn_first = xpnet.Sequential([L.BatchNormalization(np.ones(3, np.float32),
                                                      np.zeros(3, np.float32)),
                                 L.Affine(np.ones((3, 2), np.float32), None)])
    assert type(to_torch(bn_first)[0]).__name__ == "BatchNorm1d"


def test_net_on_another_device(device):
    net = trained_bn(xpnet.MultiLayerNetExtend(12, [6], 4, use_batchnorm=True, seed=0), (12,))
    model = to_torch(net.to(device))
    fresh = xpnet.MultiLayerNetExtend(12, [6], 4, use_batchnorm=True, seed=1).to(device)
    from_torch(model, fresh)
    x = np.random.default_rng(0).random((5, 12), dtype=np.float32)
    assert np.array_equal(xpnet.asnumpy(fresh.predict(x)), xpnet.asnumpy(net.predict(x)))
    assert xpnet.device_of(fresh.params["W1"]) == xpnet.device_of(net.params["W1"])


# ------------------------------------------------------------------ errors

def _unchanged(net):
    return {k: v.copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("case", ["shape", "count", "kind", "stride", "bias"])
def test_mismatches_are_named_and_load_nothing(case):
    net = xpnet.SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 4},
                              hidden_size=6, output_size=3, seed=0)
    model = to_torch(net)
    if case == "shape":
        model[-1] = nn.Linear(6, 5)
        match = (r"layer 5 \(Affine\) of SimpleConvNet and module '6' \(Linear\): W \(xpnet's "
                 r"W3\) has shape \(5, 6\) in torch, \(6, 5\) transposed, xpnet expects \(6, 3\)")
    elif case == "count":
        del model[-1]
        match = r"SimpleConvNet has 3 weight layers \(Convolution, Affine, Affine\) but the " \
                r"module has 2 \(Conv2d, Linear\)"
    elif case == "kind":
        model[0] = nn.Linear(3, 3)
        match = r"layer 0 \(Convolution\) of SimpleConvNet and module '0' \(Linear\): " \
                r"expected a Conv2d"
    elif case == "stride":
        model[0].stride = (2, 2)
        match = r"layer 0 \(Convolution\).*stride/padding \(2, 2\)/\(0, 0\) differ"
    else:
        model[-1] = nn.Linear(6, 3, bias=False)
        match = r"layer 5 \(Affine\).*one has a bias and the other has none"
    before = _unchanged(net)
    with pytest.raises(ValueError, match=match):
        from_torch(model, net)
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_layer_without_equivalent_is_refused_by_name():
    class Odd(L.Layer):
        def forward(self, x, train_flg=False):
            return x

    class OddWeights(L.Layer):
        def __init__(self):
            super().__init__()
            self.params = {"V": np.ones(3, np.float32)}

        def forward(self, x, train_flg=False):
            return x * self.params["V"]

    net = xpnet.Sequential([L.Affine(np.ones((4, 3), np.float32), None), Odd()])
    with pytest.raises(ValueError, match=r"layer Odd of Sequential has no PyTorch equivalent "
                                         r"here \(net.layers\[1\]\)"):
        to_torch(net)
    odd = xpnet.Sequential([L.Affine(np.ones((4, 3), np.float32), None), OddWeights()])
    with pytest.raises(ValueError, match=r"from_torch: layer OddWeights of Sequential has no"):
        from_torch(nn.Sequential(nn.Linear(4, 3, bias=False)), odd)


def test_subclass_and_new_layer_convert_through_hooks():
    from new_layer import Softplus

    class MyAffine(L.Affine):           # computes what Affine does: converts like it
        pass

    rng = np.random.default_rng(0)
    net = xpnet.Sequential([MyAffine(rng.standard_normal((4, 5)).astype(np.float32),
                                     rng.standard_normal(5).astype(np.float32)), Softplus(),
                            L.Affine(rng.standard_normal((5, 3)).astype(np.float32), None)])
    model = to_torch(net)
    assert [type(m).__name__ for m in model] == ["Flatten", "Linear", "Softplus", "Linear"]
    x = rng.standard_normal((6, 4)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, xpnet.asnumpy(net.predict(x)), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        model[1].weight.mul_(2.0)
    from_torch(model, net)
    np.testing.assert_allclose(xpnet.asnumpy(net.params["W1"]),
                               model[1].weight.detach().numpy().T, rtol=0, atol=0)


def test_without_torch_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    net = xpnet.TwoLayerNet(4, 5, 3)
    for f in (lambda: to_torch(net), lambda: from_torch(object(), net)):
        with pytest.raises(ImportError, match="needs PyTorch.*pip install torch"):
            f()


def test_bench_twin_is_torch_io():
    from xpnet.bench import torch_twin
    import xpnet.torch_io as tio
    assert torch_twin.to_torch is tio.to_torch and torch_twin.torch_model is tio.to_torch
    assert torch_twin.count_params is tio.count_params


def test_importing_xpnet_does_not_import_torch():
    env = {k: v for k, v in os.environ.items() if k != "XPNET_DEVICE"}
    code = "import sys, xpnet, xpnet.torch_io, xpnet.bench; assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
