"""JAX: devices, immutable arrays through the whole stack, float64 under jax_enable_x64,
checkpoints across numpy/jax/torch, and the 2-epoch training run (slow: eager JAX).

JAX is not a case of the `backend` fixture: compiling each kernel for every shape of
every test would cost minutes. These tests cover what the fixture would."""
import importlib.util

import numpy as np
import pytest

import xpnet
from xpnet import backend as B
from xpnet.backend import devices as D

jax = pytest.importorskip("jax")
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def x64():
    """JAX's 64-bit mode on for one test (JAX reads the flag when it makes an array)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


@pytest.fixture
def x32():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", old)


def test_device_names():
    dev = xpnet.get_device("jax")
    assert dev == xpnet.get_device("jax:cpu") == xpnet.get_device("jax:cpu:0")
    assert str(dev) == "jax:cpu" and dev.kind == "jax" and not dev.mutable
    assert str(xpnet.get_device("jax-reference:cpu")) == "jax-reference:cpu"
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(xpnet.DeviceError, match="'jax:gpu:1'.*jax sees 0 gpu device"):
            xpnet.get_device("jax:gpu:1")
    with pytest.raises(xpnet.DeviceError, match="unknown jax device 'jax:npu'"):
        xpnet.get_device("jax:npu")
    assert "jax:tpu[:N]" in B.device_help()


def test_jax_arrays_are_jax_arrays_everywhere(x32):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    j = xpnet.to_device(a, "jax")
    assert B.kind_of(j) == "jax" and xpnet.device_of(j) == xpnet.get_device("jax")
    assert xpnet.namespace(j) is jax.numpy and type(B.provider(j)).__name__ == "JaxKernels"
    back = xpnet.to_device(j, "cpu")                 # not the JAX array unchanged
    assert type(back) is np.ndarray and back.tobytes() == a.tobytes()
    assert type(xpnet.asnumpy(j)) is np.ndarray
    net = xpnet.TwoLayerNet(3, 4, 2, seed=0, device="jax")
    y = net.predict(j)
    assert B.kind_of(y) == "jax"                     # predict keeps JAX arrays
    u = B.uniform((3,), j)
    assert B.kind_of(u) == "jax" and str(u.dtype) == "float32"


def test_float64_with_x64_off_is_a_clear_error(x32):
    assert "float64" not in xpnet.get_device("jax").dtypes
    with pytest.raises(xpnet.DeviceError, match=r"JAX's 64-bit mode is off.*JAX_ENABLE_X64=1.*"
                                                r"jax_enable_x64.*dtype='float32'"):
        xpnet.TwoLayerNet(3, 4, 2, dtype="float64", device="jax")


def _nets(device):
    conv = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
    small = dict(device=device, dtype="float64", seed=5)
    return {
        "MultiLayerNetExtend": xpnet.MultiLayerNetExtend(
            12, [7, 6], 4, activation="sigmoid", use_batchnorm=True, weight_decay_lambda=0.1,
            **small),
        "SimpleConvNet": xpnet.SimpleConvNet((2, 8, 7), conv, hidden_size=6, output_size=4,
                                             weight_init_std=0.3, **small),
    }


@pytest.mark.parametrize("device", ["jax", "jax-reference"])
def test_float64_gradients_and_a_step_equal_numpy(x64, device):
    rng = np.random.default_rng(0)
    want, got = _nets("cpu"), _nets(device)
    for name, ref in want.items():
        shape = {"SimpleConvNet": (2, 8, 7)}.get(name, (12,))
        x, t = rng.standard_normal((5,) + shape), np.array([0, 3, 1, 2, 3])
        g_ref, net = ref.gradient(x, t), got[name]
        g = net.gradient(x, t)
        for k, v in g_ref.items():
            assert B.kind_of(g[k]) == "jax"
            err = np.abs(xpnet.asnumpy(g[k]) - v).max() / max(np.abs(v).max(), 1e-4)
            assert err <= 1e-10, (name, k, err)
        opt_ref, opt = xpnet.Adam(lr=0.01), xpnet.Adam(lr=0.01)
        opt_ref.update(ref.params, g_ref)
        opt.update(net.params, g)
        for k, v in ref.params.items():
            assert B.kind_of(net.params[k]) == "jax"
            np.testing.assert_allclose(xpnet.asnumpy(net.params[k]), v, rtol=1e-9, atol=1e-12,
                                       err_msg="%s %s" % (name, k))
        for k, v in ref.buffers.items():                   # BatchNorm's running statistics
            np.testing.assert_allclose(xpnet.asnumpy(net.buffers[k]), v, rtol=1e-10, err_msg=k)


def _fit(device, epochs, folder, resume=None):
    from xpnet.trainer import Trainer
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 3))
    x = rng.standard_normal((300, 20))
    t = (x @ w).argmax(axis=1)
    net = xpnet.MultiLayerNetExtend(20, [16], 3, use_batchnorm=True, seed=0, device=device,
                                    dtype="float64")
    tr = Trainer(net, x[:240], t[:240], x[240:], t[240:], epochs=epochs, mini_batch_size=60,
                 optimizer="Adam", optimizer_param={"lr": 0.01}, seed=3, checkpoint_dir=folder,
                 resume=resume, verbose=False)
    tr.train()
    return tr


@pytest.mark.parametrize("first,then", [
    ("cpu", "jax"), pytest.param("jax", "cpu", marks=pytest.mark.slow),
    pytest.param("jax", "torch:cpu", marks=pytest.mark.skipif(not HAS_TORCH, reason="no torch")),
    pytest.param("torch:cpu", "jax", marks=[pytest.mark.slow, pytest.mark.skipif(
        not HAS_TORCH, reason="no torch")])])
def test_checkpoints_resume_across_numpy_jax_and_torch(x64, first, then, tmp_path):
    full = _fit("cpu", 4, tmp_path / "full")
    _fit(first, 2, tmp_path / "half")
    rest = _fit(then, 4, tmp_path / "half", resume=tmp_path / "half")
    assert rest.network.device == xpnet.get_device(then)
    np.testing.assert_allclose(rest.train_loss_list, full.train_loss_list, rtol=1e-9)
    for k, v in full.network.params.items():
        np.testing.assert_allclose(xpnet.asnumpy(rest.network.params[k]), v, rtol=1e-8,
                                   atol=1e-10, err_msg=k)


@pytest.mark.slow
def test_xpnet_device_jax_trains_simple_convnet_to_numpys_accuracy(monkeypatch, x32):
    """The done-when run: ``XPNET_DEVICE=jax``, SimpleConvNet, 2 epochs on the embedded
    sample, within 1 point of NumPy (about 2 minutes eagerly on a loaded 2-core CPU)."""
    from xpnet.datasets import load_mnist_sample
    from xpnet.trainer import Trainer
    (x, t), (xt, tt) = load_mnist_sample(flatten=False)
    acc = {}
    for env in ("cpu", "jax"):
        monkeypatch.setenv("XPNET_DEVICE", env)
        monkeypatch.setattr(D, "_default", None)
        net = xpnet.SimpleConvNet(seed=0)
        assert net.device == xpnet.get_device(env)
        Trainer(net, x, t, xt, tt, epochs=2, mini_batch_size=100, optimizer="Adam",
                optimizer_param={"lr": 0.003}, seed=0, verbose=False).train()
        assert B.kind_of(net.params["W1"]) == ("jax" if env == "jax" else "numpy")
        acc[env] = net.accuracy(xt, tt)
    assert acc["cpu"] > 0.85
    assert abs(acc["jax"] - acc["cpu"]) <= 0.01, acc
