"""The whole stack on array libraries other than NumPy: float64 gradients equal NumPy's,
training reaches NumPy's accuracy, checkpoints move between libraries, and no layer, net,
optimizer or trainer module branches on the backend or imports an array library."""
import pathlib
import re

import numpy as np
import pytest

import xpnet

from conftest import backend_cases

# every registered library's test devices that work here, except NumPy's fast one
OTHERS = [device for _, device, b in backend_cases() if device != "cpu" and b.available()[0]]
PKG = pathlib.Path(xpnet.__file__).parent


def _nets(device):
    conv = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
    small = dict(device=device, dtype="float64", seed=5)
    return {
        "TwoLayerNet": xpnet.TwoLayerNet(12, 6, 4, **small),
        "MultiLayerNetExtend": xpnet.MultiLayerNetExtend(
            12, [7, 6], 4, activation="sigmoid", use_batchnorm=True, weight_decay_lambda=0.1,
            **small),
        "SimpleConvNet": xpnet.SimpleConvNet((2, 8, 7), conv, hidden_size=6, output_size=4,
                                             weight_init_std=0.3, **small),
        "DeepConvNet": xpnet.DeepConvNet((1, 8, 8), *[dict(conv, filter_num=2)] * 6,
                                         hidden_size=5, output_size=4, dropout_ratio=0.0,
                                         **small),
    }


def _data(name, rng):
    shape = {"SimpleConvNet": (2, 8, 7), "DeepConvNet": (1, 8, 8)}.get(name, (12,))
    return rng.standard_normal((5,) + shape), np.array([0, 3, 1, 2, 3])


@pytest.mark.parametrize("device", OTHERS)
def test_float64_gradients_equal_numpy(device):
    rng = np.random.default_rng(0)
    want = _nets("cpu")
    got = _nets(device)
    for name, ref in want.items():
        x, t = _data(name, rng)
        g_ref = ref.gradient(x, t)
        net = got[name]
        assert net.device == xpnet.get_device(device)
        g = net.gradient(x, t)
        assert abs(float(net.last_loss) - float(ref.last_loss)) <= 1e-12 * abs(float(ref.last_loss))
        for k, v in g_ref.items():
            a = xpnet.asnumpy(g[k])
            # relative, with a floor for gradients that are zero in exact arithmetic (a
            # bias followed by BatchNorm)
            err = np.abs(a - v).max() / max(np.abs(v).max(), 1e-4)
            assert err <= 1e-10, (name, k, err)
        # and one optimizer step lands on the same parameters (Momentum, not Adam: Adam
        # turns the rounding noise of an exactly-zero gradient into a full step)
        for opt_ref, opt in ((xpnet.Momentum(lr=0.1), xpnet.Momentum(lr=0.1)),):
            opt_ref.update(ref.params, g_ref)
            opt.update(net.params, g)
            for k, v in ref.params.items():
                np.testing.assert_allclose(xpnet.asnumpy(net.params[k]), v, rtol=1e-12,
                                           atol=1e-14, err_msg="%s %s" % (name, k))


def test_layers_and_nets_never_branch_on_the_backend():
    """Only xpnet/backend/ may import an array library or ask which one it has."""
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy|torch|array_api_strict|"
                         r"array_api_compat)\b|__name__\s*==\s*.(numpy|cupy)|is_gpu_array|"
                         r"_is_numpy|kind_of\(|\.library\s*==", re.M)
    core = ["layers", "nets", "optimizers", "functions", "conv", "gradient_check", "explain",
            "trainer"]                       # each a module or a package
    offenders = []
    for name in core:
        module = PKG / (name + ".py")
        paths = [module] if module.exists() else sorted((PKG / name).glob("*.py"))
        assert paths, name
        for path in paths:
            for m in pattern.finditer(path.read_text()):
                offenders.append("%s: %s" % (path.relative_to(PKG), m.group(0).strip()))
    assert offenders == []


def test_the_seam_names_no_library_outside_the_library_classes():
    """devices.py, arrays.py, rng.py, base.py and the package's __init__ ask the registered
    classes: no string in their code is a library's or accelerator's name ('cpu', the host,
    is every library's)."""
    import io
    import tokenize
    names = {"numpy", "cupy", "torch", "jax", "array_api_strict", "array-api-strict", "gpu",
             "cuda", "mps", "tpu"}
    offenders = []
    for name in ("devices.py", "arrays.py", "rng.py", "base.py", "__init__.py"):
        path = PKG / "backend" / name
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.STRING and tok.string.strip("\"'") in names:
                offenders.append("%s:%d: %s" % (name, tok.start[0], tok.string))
    assert offenders == []


def test_bench_and_distributed_ask_the_device_class():
    """The benchmark and the distributed code ask the device's class (is_gpu, nccl,
    memory_pool, torch_place, ...) instead of branching on its library or kind."""
    pattern = re.compile(r"\b(dev|device)\.(kind|library|type)\s*[!=]=|"
                         r"getattr\(\w+, .(kind|library|type).|load_library\(\s*.cupy")
    offenders = []
    for rel in ("bench/report.py", "bench/runner.py", "distributed/sharding.py",
                "distributed/optimizer.py"):
        for m in pattern.finditer((PKG / rel).read_text()):
            offenders.append("%s: %s" % (rel, m.group(0)))
    assert offenders == []


# ---------------------------------------------------------------- training, checkpoints

def _sample():
    from xpnet.datasets import load_mnist_sample
    return load_mnist_sample(flatten=False)


def _train_simple_convnet(device, epochs=2):
    from xpnet.trainer import Trainer
    (x, t), (xt, tt) = _sample()
    net = xpnet.SimpleConvNet(seed=0, device=device)
    tr = Trainer(net, x, t, xt, tt, epochs=epochs, mini_batch_size=100, optimizer="Adam",
                 optimizer_param={"lr": 0.003}, seed=0, verbose=False)
    tr.train()
    return tr, net.accuracy(xt, tt)


@pytest.fixture(scope="module")
def numpy_accuracy():
    _, want = _train_simple_convnet("cpu")
    assert want > 0.85
    return want


@pytest.mark.slow
@pytest.mark.parametrize("device", [d for d in OTHERS if d != "numpy-reference"])
def test_simple_convnet_trains_to_numpys_accuracy_on_every_library(device, numpy_accuracy):
    """Two epochs on the embedded MNIST sample (4,000 training images, 1,000 test)."""
    tr, acc = _train_simple_convnet(device)
    assert abs(acc - numpy_accuracy) <= 0.01, (device, acc, numpy_accuracy)
    assert tr.network.device == xpnet.get_device(device)
    assert all(np.isfinite(tr.train_loss_list))


def _bn_net(device):
    return xpnet.MultiLayerNetExtend(20, [16, 16], 3, use_batchnorm=True, seed=0,
                                     device=device, dtype="float64")


def _blobs():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 3))
    x = rng.standard_normal((700, 20))
    t = (x @ w).argmax(axis=1)
    return x[:500], t[:500], x[500:], t[500:]


def _fit(device, epochs, tmp, resume=None):
    from xpnet.trainer import Trainer
    tr = Trainer(_bn_net(device), *_blobs(), epochs=epochs, mini_batch_size=64,
                 optimizer="Adam", optimizer_param={"lr": 0.01}, seed=3, checkpoint_dir=tmp,
                 resume=resume, verbose=False)
    tr.train()
    return tr


@pytest.mark.parametrize("device", ["cpu"] + OTHERS)
def test_resume_on_the_same_library_is_exact(device, tmp_path):
    full = _fit(device, 4, tmp_path / "full")
    _fit(device, 2, tmp_path / "half")
    rest = _fit(device, 4, tmp_path / "half", resume=tmp_path / "half")
    assert rest.train_loss_list == full.train_loss_list
    for k, v in full.network.params.items():
        assert xpnet.asnumpy(rest.network.params[k]).tobytes() == xpnet.asnumpy(v).tobytes(), k


@pytest.mark.parametrize("first,then", [("cpu", d) for d in OTHERS] + [(d, "cpu") for d in OTHERS])
def test_checkpoint_written_on_one_library_resumes_on_another(first, then, tmp_path):
    full = _fit("cpu", 4, tmp_path / "full")
    _fit(first, 2, tmp_path / "half")
    rest = _fit(then, 4, tmp_path / "half", resume=tmp_path / "half")
    assert rest.network.device == xpnet.get_device(then)
    np.testing.assert_allclose(rest.train_loss_list, full.train_loss_list, rtol=1e-9)
    for k, v in full.network.params.items():
        np.testing.assert_allclose(xpnet.asnumpy(rest.network.params[k]), v, rtol=1e-8,
                                   atol=1e-10, err_msg=k)
    for k, v in full.network.buffers.items():
        np.testing.assert_allclose(xpnet.asnumpy(rest.network.buffers[k]), v, rtol=1e-8,
                                   err_msg=k)


@pytest.mark.parametrize("device", OTHERS)
def test_save_params_on_one_library_load_on_another(device, tmp_path):
    conv = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
    net = xpnet.SimpleConvNet((1, 8, 8), conv, hidden_size=5, output_size=3, seed=2,
                              device=device)
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    y = xpnet.asnumpy(net.predict(x))
    path = net.save_params(tmp_path / "p")
    for dev in ("cpu", device):
        again = xpnet.load_net(path, device=dev)
        assert again.device == xpnet.get_device(dev)
        np.testing.assert_allclose(xpnet.asnumpy(again.predict(x)), y, rtol=1e-5, atol=1e-6)
