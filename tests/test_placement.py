"""Placement over several devices of one library, and a device without float64.

array_api_strict offers ``device1``/``device2`` (arrays of two devices can't be mixed)
and ``no_float64`` (like Apple's MPS), so what multi-GPU and distributed runs rely on
is tested here without GPUs: everything a net makes stays on the device it was sent
to, host inputs are moved there, mixing devices is a clear error, checkpoints move
between devices, and rank r of a distributed run gets device index r.
"""
import numpy as np
import pytest

import xpnet
from xpnet import backend as B
from xpnet.backend.libraries import CupyBackend, TorchBackend
from xpnet.trainer import Trainer

pytest.importorskip("array_api_strict")

D1 = "array-api-strict:device1"
D2 = "array-api-strict:device2"
NO64 = "array-api-strict:no_float64"


def _on(a, device):
    return xpnet.device_of(a) == xpnet.get_device(device)


def _net(device, dtype="float32", dropout=0.3):
    return xpnet.MultiLayerNetExtend(6, [8, 8], 3, use_batchnorm=True, use_dropout=True,
                                     dropout_ration=dropout, seed=0, device=device, dtype=dtype)


def _data(n=40, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype(dtype)
    t = (x @ rng.standard_normal((6, 3))).argmax(axis=1)
    return x, t


# ---------------------------------------------------------------- device names

def test_strict_devices_parse_and_print_back():
    for name, idx in (("array-api-strict", 0), (D1, 1), (D2, 2)):
        dev = xpnet.get_device(name)
        assert dev.id == idx and str(dev) == name and xpnet.get_device(str(dev)) == dev
        assert "float64" in dev.dtypes
    no64 = xpnet.get_device(NO64)
    assert str(no64) == NO64 and "float32" in no64.dtypes and "float64" not in no64.dtypes
    assert xpnet.get_device(D1) != xpnet.get_device(D2)
    assert str(xpnet.get_device("array-api-strict-reference:device2")) == \
        "array-api-strict-reference:device2"
    for bad in ("array-api-strict:device3", "array-api-strict:devicex", "array-api-strict:gpu"):
        with pytest.raises(xpnet.DeviceError, match="array-api-strict|integer"):
            xpnet.get_device(bad)


def test_device_dtypes_is_what_xpnet_info_prints():
    assert B.device_dtypes(NO64) == xpnet.get_device(NO64).dtypes
    assert "float64" not in B.device_dtypes(NO64) and "float64" in B.device_dtypes("cpu")


# ---------------------------------------------------------------- one device, everything on it

def test_a_net_on_device1_keeps_everything_there():
    net = _net(D1)
    x, t = _data()
    assert net.device == xpnet.get_device(D1)
    for k, v in list(net.params.items()) + list(net.buffers.items()):
        assert _on(v, D1), k
    y = net.predict(x, train_flg=True)                      # host input: moved to device1
    assert _on(y, D1)
    drops = [layer for layer in net.layers if type(layer).__name__ == "Dropout"]
    assert drops and all(_on(layer._c_mask, D1) for layer in drops)
    grads = net.gradient(x, t)
    assert all(_on(g, D1) for g in grads.values())
    assert _on(net.last_loss, D1)
    opt = xpnet.Adam(lr=0.01)
    opt.update(net.params, grads)
    for k, st in opt.state.items():
        for s, a in st.items():
            assert _on(a, D1), (k, s)
    for k, v in list(net.params.items()) + list(net.buffers.items()):
        assert _on(v, D1), k                                # BatchNorm's running stats too


def test_a_trainer_run_stays_on_device1():
    x, t = _data(60)
    net = _net(D1, dropout=0.0)
    tr = Trainer(net, x[:40], t[:40], x[40:], t[40:], epochs=2, mini_batch_size=10,
                 optimizer="Momentum", seed=0, verbose=False)
    tr.train()
    assert net.device == xpnet.get_device(D1)
    assert all(_on(v, D1) for v in net.params.values())
    assert all(np.isfinite(tr.train_loss_list))
    # the same run on the CPU gives the same losses: the device changes nothing else
    cpu = Trainer(_net("cpu", dropout=0.0), x[:40], t[:40], x[40:], t[40:], epochs=2,
                  mini_batch_size=10, optimizer="Momentum", seed=0, verbose=False)
    cpu.train()
    np.testing.assert_allclose(tr.train_loss_list, cpu.train_loss_list, rtol=1e-5)


def test_mixing_devices_is_a_clear_error():
    net = _net(D1)
    x, t = _data()
    on2 = xpnet.to_device(x, D2)
    layer = net.layers[0]                                   # Affine, weights on device1
    with pytest.raises(ValueError, match="device2.*device1|device1.*device2"):
        layer.forward(on2)
    grads = net.gradient(x, t)
    with pytest.raises(ValueError, match="gradient 'W1' is on array-api-strict:device2 but "
                                         "its parameter is on array-api-strict:device1"):
        xpnet.SGD().update(net.params, {"W1": xpnet.to_device(grads["W1"], D2)})


def test_to_device_moves_between_devices_of_one_library():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    d1 = xpnet.to_device(a, D1)
    assert _on(d1, D1) and xpnet.to_device(d1, D1) is d1
    d2 = xpnet.to_device(d1, D2)
    assert _on(d2, D2)
    np.testing.assert_array_equal(xpnet.asnumpy(d2), a)


def _fit(device, epochs, folder, resume=None):
    x, t = _data(80, np.float64)
    tr = Trainer(_net(device, "float64", dropout=0.0), x[:60], t[:60], x[60:], t[60:],
                 epochs=epochs, mini_batch_size=20, optimizer="Adam",
                 optimizer_param={"lr": 0.01}, seed=3, checkpoint_dir=folder, resume=resume,
                 verbose=False)
    tr.train()
    return tr


def test_a_checkpoint_written_on_device1_resumes_on_device2(tmp_path):
    full = _fit(D1, 4, tmp_path / "full")
    _fit(D1, 2, tmp_path / "half")
    rest = _fit(D2, 4, tmp_path / "half", resume=tmp_path / "half")
    assert rest.network.device == xpnet.get_device(D2)
    assert all(_on(v, D2) for v in rest.network.params.values())
    np.testing.assert_allclose(rest.train_loss_list, full.train_loss_list, rtol=1e-12)
    for k, v in full.network.params.items():
        np.testing.assert_allclose(xpnet.asnumpy(rest.network.params[k]), xpnet.asnumpy(v),
                                   rtol=1e-12, err_msg=k)


# ---------------------------------------------------------------- distributed ranks

def test_rank_r_gets_device_index_r():
    strict = xpnet.get_device("array-api-strict")
    assert strict.for_rank(0) == xpnet.get_device(D1)
    assert strict.for_rank(1) == xpnet.get_device(D2)
    with pytest.raises(xpnet.DeviceError, match="rank 2 needs array-api-strict:device3"):
        strict.for_rank(2)
    assert xpnet.CPU.for_rank(5) == xpnet.CPU              # host ranks share the CPU


def test_gpu_and_torch_cuda_ranks_share_one_code_path(monkeypatch):
    """gpu:N and torch:cuda:N are the base class's indexed devices: with two (pretended)
    GPUs, rank 1 gets index 1 and rank 2 is refused, naming the count."""
    for cls in (CupyBackend, TorchBackend):
        monkeypatch.setattr(B.backend_named(cls.name), "device_count", lambda type: 2)
    gpu = xpnet.Device("gpu", 0)
    assert gpu.for_rank(1) == xpnet.Device("gpu", 1) and str(gpu.for_rank(1)) == "gpu:1"
    tc = xpnet.Device("torch", 0, type="cuda")
    assert str(tc.for_rank(1)) == "torch:cuda:1"
    for dev in (gpu, tc):
        with pytest.raises(xpnet.DeviceError, match="rank 2 needs .*sees 2 cuda device"):
            dev.for_rank(2)


# ---------------------------------------------------------------- no float64

def test_a_float32_net_trains_on_a_device_without_float64():
    x, t = _data(60)
    net = _net(NO64, dropout=0.0)
    tr = Trainer(net, x[:40], t[:40], x[40:], t[40:], epochs=3, mini_batch_size=10,
                 optimizer="Adam", optimizer_param={"lr": 0.01}, seed=0, verbose=False)
    tr.train()
    assert all(_on(v, NO64) for v in net.params.values())
    assert tr.train_loss_list[-1] < tr.train_loss_list[0]


NO64_ERROR = (r"no_float64 device has no float64.*use float32 on it \(build the net with "
              r"dtype='float32'.*gradient checks on a device with float64, such as cpu")


def test_a_float64_net_on_a_device_without_float64_is_one_clear_error():
    with pytest.raises(xpnet.DeviceError, match=NO64_ERROR):
        _net(NO64, "float64")
    with pytest.raises(xpnet.DeviceError, match=NO64_ERROR):
        _net("cpu", "float64").to(NO64)


def test_a_float64_numerical_gradient_there_is_the_same_error():
    from xpnet.gradient_check import numerical_gradient
    with pytest.raises(xpnet.DeviceError, match=NO64_ERROR):
        numerical_gradient(lambda v: (v ** 2).sum(), xpnet.to_device(np.ones(3), NO64))
