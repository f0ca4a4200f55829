"""Device selection (XPNET_DEVICE, set_device, using_device), array movement, RNG seeding."""
import numpy as np
import pytest

import xpnet
from xpnet import backend as B

GPU_OK, GPU_WHY = B.gpu_available()
needs_gpu = pytest.mark.skipif(not GPU_OK, reason="needs CuPy and a GPU: %s" % GPU_WHY)


@pytest.fixture
def fresh_default(monkeypatch):
    """Forget the resolved default device so XPNET_DEVICE is read again; restored after."""
    monkeypatch.setattr(B, "_default", None)
    monkeypatch.setattr(B._local, "stack", [], raising=False)
    return monkeypatch


@pytest.fixture
def no_gpu(monkeypatch):
    """Pretend CuPy/CUDA is missing, whatever this machine has."""
    monkeypatch.setattr(B, "gpu_available", lambda: (False, "CuPy is not installed (test)"))
    return monkeypatch


# ---------------------------------------------------------------- XPNET_DEVICE

@pytest.mark.parametrize("value", ["cpu", "CPU", " cpu ", ""])
def test_env_cpu(fresh_default, value):
    fresh_default.setenv("XPNET_DEVICE", value)
    assert xpnet.current_device() == xpnet.CPU
    assert xpnet.current_device().xp is np


def test_env_unset_is_cpu(fresh_default):
    fresh_default.delenv("XPNET_DEVICE", raising=False)
    assert xpnet.current_device() == xpnet.CPU


def test_env_auto_without_gpu_is_cpu(fresh_default, no_gpu):
    fresh_default.setenv("XPNET_DEVICE", "auto")
    assert xpnet.current_device() == xpnet.CPU


@needs_gpu
def test_env_auto_with_gpu_is_gpu(fresh_default):
    fresh_default.setenv("XPNET_DEVICE", "auto")
    assert xpnet.current_device().kind == "gpu"


@needs_gpu
def test_env_gpu(fresh_default):
    fresh_default.setenv("XPNET_DEVICE", "gpu")
    dev = xpnet.current_device()
    assert dev.kind == "gpu" and dev.id == 0
    assert dev.xp.__name__ == "cupy"


def test_env_gpu_without_gpu_is_an_error_not_a_fallback(fresh_default, no_gpu):
    fresh_default.setenv("XPNET_DEVICE", "gpu")
    with pytest.raises(xpnet.DeviceError, match=r"XPNET_DEVICE='gpu'.*GPU can't be used.*"
                                                 r"CuPy is not installed \(test\)"):
        xpnet.current_device()


@pytest.mark.parametrize("value", ["tpu", "cuda0", "gpu:x", "1"])
def test_env_unknown_value_lists_valid_values(fresh_default, value):
    fresh_default.setenv("XPNET_DEVICE", value)
    with pytest.raises(xpnet.DeviceError) as ei:
        xpnet.current_device()
    msg = str(ei.value)
    assert "XPNET_DEVICE=%r" % value in msg
    if value != "gpu:x":
        for valid in ("cpu", "gpu", "auto"):
            assert valid in msg
    else:
        assert "integer" in msg


# ---------------------------------------------------------------- set_device / using_device

def test_set_device_overrides_env(fresh_default, no_gpu):
    fresh_default.setenv("XPNET_DEVICE", "gpu")   # would fail if it were read
    assert xpnet.set_device("cpu") == xpnet.CPU
    assert xpnet.current_device() == xpnet.CPU


def test_set_device_bad_name(fresh_default):
    with pytest.raises(xpnet.DeviceError, match="unknown device 'npu'.*cpu, gpu, auto"):
        xpnet.set_device("npu")
    with pytest.raises(xpnet.DeviceError, match="must be a str"):
        xpnet.set_device(3)


def test_using_device_nests_and_restores(fresh_default):
    xpnet.set_device("cpu")
    with xpnet.using_device("cpu") as d:
        assert d == xpnet.CPU
        assert xpnet.current_device() == xpnet.CPU
    assert xpnet.current_device() == xpnet.CPU
    assert B._local.stack == []


def test_using_device_restores_after_error(fresh_default):
    with pytest.raises(KeyError):
        with xpnet.using_device("cpu"):
            raise KeyError("boom")
    assert B._local.stack == []


def test_gpu_request_without_gpu_raises_device_error(no_gpu):
    for spec in ("gpu", "gpu:0", "cuda"):
        with pytest.raises(xpnet.DeviceError, match=r"GPU can't be used: CuPy is not installed"):
            xpnet.get_device(spec)
    with pytest.raises(xpnet.DeviceError, match="GPU can't be used"):
        xpnet.set_device("gpu")
    with pytest.raises(xpnet.DeviceError, match="GPU can't be used"):
        with xpnet.using_device("gpu"):
            pass
    with pytest.raises(xpnet.DeviceError, match="GPU can't be used"):
        xpnet.to_device(np.zeros(3), "gpu")
    with pytest.raises(xpnet.DeviceError, match="GPU can't be used"):
        xpnet.TwoLayerNet(4, 3, 2, device="gpu")


@pytest.mark.skipif(GPU_OK, reason="this machine has a GPU")
def test_real_missing_gpu_reason_says_how_to_install():
    ok, why = xpnet.gpu_available()
    assert not ok
    assert "pip install" in why
    with pytest.raises(xpnet.DeviceError, match="xpnet\\[gpu\\]"):
        xpnet.get_device("gpu")


def test_device_objects():
    assert xpnet.Device("cpu") == xpnet.CPU
    assert hash(xpnet.Device("cpu")) == hash(xpnet.CPU)
    assert str(xpnet.CPU) == "cpu" and xpnet.CPU.xp is np
    assert xpnet.get_device(xpnet.CPU) is xpnet.CPU
    with pytest.raises(xpnet.DeviceError, match="'cpu' or 'gpu', got 'tpu'"):
        xpnet.Device("tpu")


def test_net_without_device_goes_to_current_device(backend):
    # the backend fixture makes its device current
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    assert net.device.kind == backend.device
    assert xpnet.get_array_module(net.params["W1"]) is backend.xp


# ---------------------------------------------------------------- arrays

def test_get_array_module_and_asnumpy(backend):
    xp = backend.xp
    a = np.arange(6.0).reshape(2, 3)
    d = xp.asarray(a)
    assert xpnet.get_array_module(d) is xp
    assert xpnet.get_array_module(a) is np
    assert xpnet.get_array_module(a, d) is xp
    assert xpnet.get_array_module(1.0, [1, 2]) is np
    h = xpnet.asnumpy(d)
    assert type(h) is np.ndarray
    np.testing.assert_array_equal(h, a)
    assert xpnet.asnumpy(a) is a                         # already on the host
    np.testing.assert_array_equal(xpnet.asnumpy([1, 2]), [1, 2])


def test_to_device_arrays_and_containers(backend):
    xp = backend.xp
    a = np.arange(4, dtype=np.float32)
    d = xpnet.to_device(a, backend.device)
    assert xpnet.get_array_module(d) is xp and d.dtype == np.float32
    assert xpnet.to_device(d, backend.device) is d       # already there: no copy
    tree = {"w": a, "pair": (a, a * 2), "list": [a]}
    moved = xpnet.to_device(tree, backend.device)
    assert set(moved) == {"w", "pair", "list"}
    assert type(moved["pair"]) is tuple and type(moved["list"]) is list
    for v in (moved["w"], moved["pair"][1], moved["list"][0]):
        assert xpnet.get_array_module(v) is xp
    np.testing.assert_array_equal(xpnet.asnumpy(moved["pair"][1]), a * 2)
    back = xpnet.to_device(moved, "cpu")
    assert type(back["w"]) is np.ndarray
    np.testing.assert_array_equal(back["w"], a)


def test_to_device_on_a_net(backend):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0, device="cpu")
    before = {k: v.copy() for k, v in net.params.items()}
    out = xpnet.to_device(net, backend.device)
    assert out is net
    assert net.device.kind == backend.device
    for k, v in net.params.items():
        assert xpnet.get_array_module(v) is backend.xp
        np.testing.assert_array_equal(xpnet.asnumpy(v), before[k])


@needs_gpu
def test_device_round_trip_is_bit_identical():
    rng = np.random.default_rng(0)
    for dt in (np.float16, np.float32, np.float64, np.int32, np.uint8):
        if np.dtype(dt).kind == "f":
            a = (rng.standard_normal((3, 5, 7)) * 100).astype(dt)
        else:
            a = rng.integers(0, 200, (3, 5, 7)).astype(dt)
        g = xpnet.to_device(a, "gpu")
        assert g.dtype == a.dtype
        b = xpnet.to_device(g, "cpu")
        assert b.dtype == a.dtype and b.tobytes() == a.tobytes()


@needs_gpu
def test_net_round_trip_cpu_gpu_cpu_bit_identical():
    net = xpnet.SimpleConvNet((1, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 1,
                                          "stride": 1}, hidden_size=5, output_size=4, seed=1,
                              device="cpu")
    before = {k: v.copy() for k, v in net.state_dict().items()}
    net.to("gpu")
    assert net.device.kind == "gpu"
    net.to("cpu")
    for k, v in net.state_dict().items():
        assert v.tobytes() == before[k].tobytes(), k


def test_synchronize_is_harmless(backend):
    xpnet.synchronize()
    xpnet.synchronize(backend.xp)


# ---------------------------------------------------------------- random numbers

def test_seed_makes_host_and_device_streams_repeatable(backend):
    xp = backend.xp
    xpnet.seed(7)
    a1 = xpnet.backend.host_rng().standard_normal(5)
    d1 = xpnet.asnumpy(xpnet.backend.device_rng(xp).random(5))
    xpnet.seed(7)
    a2 = xpnet.backend.host_rng().standard_normal(5)
    d2 = xpnet.asnumpy(xpnet.backend.device_rng(xp).random(5))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(d1, d2)
    xpnet.seed(8)
    assert not np.array_equal(xpnet.backend.host_rng().standard_normal(5), a1)


def test_seeded_nets_are_identical_on_every_device(backend):
    a = xpnet.TwoLayerNet(5, 4, 3, seed=3, device="cpu")
    b = xpnet.TwoLayerNet(5, 4, 3, seed=3, device=backend.device)
    for k in a.params:
        np.testing.assert_array_equal(xpnet.asnumpy(b.params[k]), a.params[k])


def test_fuse_runs_plain_function_on_numpy(backend):
    f = B.fuse(lambda a, b: a * b + a)
    x = backend.asarray([1.0, 2.0, 3.0])
    y = backend.asarray([2.0, 2.0, 2.0])
    backend.assert_close(f(x, y), [3.0, 6.0, 9.0])
