"""Device selection (XPNET_DEVICE, set_device, using_device), array movement, RNG seeding,
kernel providers."""
import importlib.util

import numpy as np
import pytest

import xpnet
from xpnet import backend as B
from xpnet.backend import devices as D

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")

GPU_OK, GPU_WHY = B.gpu_available()
needs_gpu = pytest.mark.skipif(not GPU_OK, reason="needs CuPy and a GPU: %s" % GPU_WHY)


@pytest.fixture
def fresh_default(monkeypatch):
    """Forget the resolved default device so XPNET_DEVICE is read again; restored after."""
    monkeypatch.setattr(D, "_default", None)
    monkeypatch.setattr(D._local, "stack", [], raising=False)
    return monkeypatch


@pytest.fixture
def no_gpu(monkeypatch):
    """Pretend CuPy/CUDA is missing, whatever this machine has."""
    monkeypatch.setattr(D.backend_named("cupy"), "available",
                        lambda: (False, "CuPy is not installed (test)"))
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
        for valid in ("cpu", "gpu", "auto", "torch:cuda", "array-api-strict", "numpy-reference"):
            assert valid in msg
    else:
        assert "integer" in msg


# ---------------------------------------------------------------- set_device / using_device

def test_set_device_overrides_env(fresh_default, no_gpu):
    fresh_default.setenv("XPNET_DEVICE", "gpu")   # would fail if it were read
    assert xpnet.set_device("cpu") == xpnet.CPU
    assert xpnet.current_device() == xpnet.CPU


def test_set_device_bad_name(fresh_default):
    with pytest.raises(xpnet.DeviceError,
                       match="unknown device 'npu'.*auto, cpu, numpy-reference, gpu, gpu:N"):
        xpnet.set_device("npu")
    with pytest.raises(xpnet.DeviceError, match="must be a str"):
        xpnet.set_device(3)


def test_using_device_nests_and_restores(fresh_default):
    xpnet.set_device("cpu")
    with xpnet.using_device("cpu") as d:
        assert d == xpnet.CPU
        assert xpnet.current_device() == xpnet.CPU
    assert xpnet.current_device() == xpnet.CPU
    assert D._local.stack == []


def test_using_device_restores_after_error(fresh_default):
    with pytest.raises(KeyError):
        with xpnet.using_device("cpu"):
            raise KeyError("boom")
    assert D._local.stack == []


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
    if importlib.util.find_spec("cupy") is None:
        assert "pip install" in why
        with pytest.raises(xpnet.DeviceError, match=r"pip install -e \"\.\[gpu\]\""):
            xpnet.get_device("gpu")
    else:        # CuPy without a usable driver (the gpu-check extra on a CPU machine)
        assert "CUDA driver failed" in why or "no CUDA device" in why
        with pytest.raises(xpnet.DeviceError, match="GPU can't be used"):
            xpnet.get_device("gpu")


def test_device_objects():
    assert xpnet.Device("cpu") == xpnet.CPU
    assert hash(xpnet.Device("cpu")) == hash(xpnet.CPU)
    assert str(xpnet.CPU) == "cpu" and xpnet.CPU.xp is np
    assert xpnet.get_device(xpnet.CPU) is xpnet.CPU
    with pytest.raises(xpnet.DeviceError,
                       match=r"cpu, gpu, torch, array-api-strict, jax(, [\w-]+)*, got 'tpu'"):
        xpnet.Device("tpu")
    ref = xpnet.get_device("numpy-reference")
    assert ref.reference and ref.library == "numpy" and ref != xpnet.CPU
    assert str(ref) == "numpy-reference" and xpnet.get_device("cpu-reference") == ref
    strict = xpnet.get_device("array-api-strict")
    assert strict.library == "array_api_strict" and str(strict) == "array-api-strict"
    assert strict.namespace.__name__ == "array_api_strict"


def test_net_without_device_goes_to_current_device(backend):
    # the backend fixture makes its device current
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    assert net.device == xpnet.get_device(backend.device)
    assert xpnet.get_array_module(net.params["W1"]) is backend.xp


# ---------------------------------------------------------------- arrays

def test_get_array_module_and_asnumpy(backend):
    xp = backend.xp
    a = np.arange(6.0).reshape(2, 3)
    d = backend.asarray(a)
    npx = xpnet.get_device("cpu").namespace
    assert xpnet.get_array_module(d) is xp
    assert xpnet.get_array_module(a) is npx
    assert xpnet.get_array_module(1.0, [1, 2]) is npx
    assert B.kind_of(d) == backend.dev.library and B.is_array(d)
    assert not B.is_array([1.0]) and not B.is_array(np.float32(1))
    h = xpnet.asnumpy(d)
    assert type(h) is np.ndarray
    np.testing.assert_array_equal(h, a)
    assert xpnet.asnumpy(a) is a                         # already on the host
    np.testing.assert_array_equal(xpnet.asnumpy([1, 2]), [1, 2])


def test_to_device_arrays_and_containers(backend):
    xp = backend.xp
    a = np.arange(4, dtype=np.float32)
    d = xpnet.to_device(a, backend.device)
    assert xpnet.get_array_module(d) is xp and B.dtype_name(d.dtype) == "float32"
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
    assert net.device == xpnet.get_device(backend.device)
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
    import sys
    a = backend.asarray([1.0, 2.0])
    loaded = set(sys.modules)
    assert xpnet.synchronize() is None
    assert xpnet.synchronize(backend.dev) is None
    assert xpnet.synchronize(a) is None
    assert set(sys.modules) == loaded        # it never imports a library to wait on it
    assert backend.np(a).tolist() == [1.0, 2.0]


# ---------------------------------------------------------------- random numbers

def test_seed_makes_host_and_device_streams_repeatable(backend):
    like = backend.asarray(np.zeros(1, np.float32))
    xpnet.seed(7)
    a1 = xpnet.backend.host_rng().standard_normal(5)
    d1 = xpnet.asnumpy(xpnet.backend.uniform((5,), like))
    xpnet.seed(7)
    a2 = xpnet.backend.host_rng().standard_normal(5)
    d2 = xpnet.asnumpy(xpnet.backend.uniform((5,), like))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(d1, d2)
    assert d1.dtype == np.float32 and ((d1 >= 0) & (d1 < 1)).all()
    xpnet.seed(8)
    assert not np.array_equal(xpnet.backend.host_rng().standard_normal(5), a1)


def test_seeded_nets_are_identical_on_every_device(backend):
    a = xpnet.TwoLayerNet(5, 4, 3, seed=3, device="cpu")
    b = xpnet.TwoLayerNet(5, 4, 3, seed=3, device=backend.device)
    for k in a.params:
        np.testing.assert_array_equal(xpnet.asnumpy(b.params[k]), a.params[k])


def test_provider_follows_the_device(backend):
    """The registered class's fast kernels, or the reference ones on a -reference device
    and on libraries without fast kernels (the expected table is the registry)."""
    x = backend.asarray(np.zeros((1, 1, 2, 2)))
    dev = backend.dev
    k = B.provider(x)
    assert k is B.provider(x)                           # one instance per library
    fast = dev.backend.kernels
    if dev.reference or fast is None:
        assert type(k) is B.ReferenceKernels and k.NAME == "reference"
    else:
        assert type(k) is fast and isinstance(k, B.ReferenceKernels) and k.NAME != "reference"
    if backend.name == "numpy":
        assert k.NAME == "numpy"


def test_a_reference_net_uses_reference_kernels_outside_using_device():
    net = xpnet.SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3, "pad": 0,
                                          "stride": 1}, hidden_size=4, output_size=3, seed=0,
                              device="numpy-reference")
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    assert net.device == xpnet.get_device("numpy-reference")
    net.predict(x)
    # the reference provider keeps an argmax index for max pooling; the fast one does not
    pool = net.layers[2]
    assert pool._c_kernels.NAME == "reference"
    fast = xpnet.SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3, "pad": 0,
                                           "stride": 1}, hidden_size=4, output_size=3, seed=0)
    np.testing.assert_allclose(xpnet.asnumpy(net.predict(x)), fast.predict(x), rtol=1e-5)
    assert fast.layers[2]._c_kernels.NAME == "numpy"


def test_missing_library_names_the_extra(monkeypatch):
    torch_class = D.backend_named("torch")
    monkeypatch.setattr(torch_class, "_module", None)
    monkeypatch.setattr(torch_class, "_error", ImportError("No module named 'torch'"))
    with pytest.raises(xpnet.DeviceError, match=r"torch is not installed.*pip install -e "
                                                r"\"\.\[torch\]\""):
        xpnet.get_device("torch:cpu")


@needs_torch
def test_torch_device_names():
    dev = xpnet.get_device("torch")
    assert dev == xpnet.get_device("torch:cpu") and str(dev) == "torch:cpu"
    assert dev.library == "torch" and dev.kind == "torch"
    assert xpnet.get_device("torch-reference:cpu").reference
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(xpnet.DeviceError, match="torch sees 0 cuda device"):
            xpnet.get_device("torch:cuda")
    if not (torch.backends.mps.is_available()):
        with pytest.raises(xpnet.DeviceError, match="MPS backend is not available"):
            xpnet.get_device("torch:mps")
    with pytest.raises(xpnet.DeviceError, match="unknown torch device"):
        xpnet.get_device("torch:tpu")


@needs_torch
def test_arrays_cross_libraries_bit_exactly():
    a = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    t = xpnet.to_device(a, "torch:cpu")
    assert B.kind_of(t) == "torch" and B.device_of(t) == xpnet.get_device("torch:cpu")
    s = xpnet.to_device(t, "array-api-strict")
    assert B.kind_of(s) == "array_api_strict"
    back = xpnet.to_device(s, "cpu")
    assert type(back) is np.ndarray and back.tobytes() == a.tobytes()


# ---------------------------------------------------------------- arrays of unregistered libraries

@pytest.fixture
def registry_restored():
    """Put the registry back exactly as it was (classes and order) after the test."""
    saved = dict(D._registry)
    yield
    D._registry.clear()
    D._registry.update(saved)
    D._changed()


def test_an_unregistered_library_runs_through_the_generic_class(registry_restored):
    """array_api_strict with its class removed: array-api-compat knows its namespace and
    it has DLPack, so it runs on the reference kernels, on its own arrays, and gives
    NumPy's numbers; nothing is turned into NumPy."""
    xps = pytest.importorskip("array_api_strict")
    B.unregister("array_api_strict")
    a = xps.asarray(np.arange(6.0).reshape(2, 3))
    b = B.backend_of(a)
    assert isinstance(b, B.GenericBackend) and b.name == "array_api_strict"
    assert "array_api_strict" not in [r.name for r in B.registered()]
    dev = xpnet.device_of(a)
    assert str(dev) == "array_api_strict (generic)"
    assert type(B.provider(a)) is B.ReferenceKernels
    np.testing.assert_array_equal(xpnet.asnumpy(a), np.arange(6.0).reshape(2, 3))
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    ref = xpnet.TwoLayerNet(5, 4, 3, seed=1, dtype="float64")
    net = xpnet.TwoLayerNet(5, 4, 3, seed=1, dtype="float64").to(dev)
    for _ in range(3):
        for n, opt in ((ref, xpnet.SGD(lr=0.1)), (net, xpnet.SGD(lr=0.1))):
            opt.update(n.params, n.gradient(x, t))
    y = net.predict(xps.asarray(x))
    assert type(y) is type(a)                                  # still the library's array
    np.testing.assert_allclose(xpnet.asnumpy(y), ref.predict(x), rtol=1e-12)


class LazyArrayDouble:
    """A test double of a lazy library's array (dask's has no ``__dlpack__``): its
    namespace is known through ``__array_namespace__``, but it can't reach the host."""
    __module__ = "lazyarrays.core"

    def __init__(self, shape):
        self.shape, self.ndim, self.dtype = shape, len(shape), np.dtype("float32")

    def __array_namespace__(self, api_version=None):
        return pytest.importorskip("array_api_strict")


def test_an_array_xpnet_cannot_serve_is_refused_by_name():
    fake = LazyArrayDouble((2, 4))
    assert B.is_array(fake)
    msg = (r"xpnet has no backend for lazyarrays arrays \(LazyArrayDouble\): it has no DLPack.*"
           r"Supported: numpy, cupy, torch, array_api_strict, jax.*xpnet.backend.register")
    for use in (xpnet.asnumpy, xpnet.namespace, xpnet.device_of, B.provider,
                lambda a: xpnet.to_device(a, "cpu"),
                xpnet.TwoLayerNet(4, 3, 2, seed=0).predict):
        with pytest.raises(xpnet.DeviceError, match=msg):
            use(fake)


def test_registering_replaces_and_reorders(registry_restored):
    """A class registered later is asked first; registering drops the cached answers."""
    a = np.zeros(3)
    assert B.backend_of(a).name == "numpy"

    @B.register
    class Claims(type(B.backend_named("numpy"))):
        name = "claims"
        kind = "claims"
        help = "claims"
        heads = ()

    assert B.backend_of(a).name == "claims"
    assert str(xpnet.get_device("claims")) in ("cpu", "claims")
    assert "claims" in B.device_help()
    B.unregister("claims")
    assert B.backend_of(a).name == "numpy" and "claims" not in B.device_help()


def test_the_architecture_docs_toy_backend_trains(registry_restored):
    """docs/architecture.md's "Adding a backend" block, run as it is written: it registers
    NumPy under another name, trains a TwoLayerNet on it, and unregisters it."""
    import pathlib
    import re
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## Adding a backend"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "@register" in block and "unregister(\"toy\")" in block
    before = [b.name for b in B.registered()]
    scope = {"__name__": "architecture_doc"}
    exec(compile(block, "docs/architecture.md", "exec"), scope)
    assert [b.name for b in B.registered()] == before        # the block cleaned up
    assert scope["net"].device.library == "toy"            # it trained there (and asserted
    assert "toy" not in B.device_help()                     # its accuracy); now it's gone


def test_classes_answer_what_the_bench_and_distributed_ask():
    """Where PyTorch would run the same work, the accelerator's name, NCCL: questions to
    the device's class instead of branches on its library."""
    def ask(dev):
        return dev.backend.torch_place(dev), dev.backend.nccl
    assert ask(xpnet.Device("gpu", 1)) == ("cuda:1", True)
    assert ask(xpnet.Device("jax", 1, type="gpu")) == ("cuda:1", False)
    assert ask(xpnet.CPU) == ("cpu", False)
    assert ask(xpnet.get_device("array-api-strict:device2")) == ("cpu", False)
    assert xpnet.CPU.backend.hardware_name(xpnet.CPU) is None
    if HAS_TORCH:
        assert ask(xpnet.Device("torch", 1, type="cuda")) == ("cuda:1", False)
        assert ask(xpnet.get_device("torch:cpu")) == ("cpu", False)


def test_classes_answer_gpu_and_memory_questions():
    """Whether a device is a GPU (one per rank) and how the bench reads its memory."""
    def ask(dev):
        return dev.backend.is_gpu(dev), dev.backend.tracemalloc_counted
    assert ask(xpnet.Device("gpu", 1)) == (True, False)
    assert ask(xpnet.CPU) == (False, True)
    assert ask(xpnet.get_device("array-api-strict:device1")) == (False, False)
    assert xpnet.CPU.backend.memory_pool(xpnet.CPU) is None
    assert xpnet.CPU.backend.report_facts(xpnet.CPU) == {}
    if HAS_TORCH:
        assert ask(xpnet.Device("torch", 1, type="cuda")) == (True, False)
        assert ask(xpnet.get_device("torch:cpu")) == (False, False)
