"""Every script in examples/ runs with --quick, prints its figures and writes PNG + JSON.

Each script runs in a subprocess (cwd = repo root, PYTHONPATH = repo) once per backend
of the `device` fixture; the checks read the JSON back and compare it with what was
printed and with properties the experiment must show.
"""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import xpnet
import xpnet.datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_runs = {}   # (script, device, extra args) -> (CompletedProcess, out dir); shared by tests
_GPU_OK, _GPU_WHY = xpnet.gpu_available()


@pytest.fixture(params=[pytest.param("cpu", id="numpy"),
                        pytest.param("gpu", id="cupy", marks=[pytest.mark.gpu] + (
                            [] if _GPU_OK else [pytest.mark.skip(reason=_GPU_WHY)]))])
def device(request):
    """The book's experiments are scripts that use NumPy idioms on the arrays they get back
    (len(), .astype, 1-D indexing), so they run on the NumPy and CuPy devices; the library
    itself runs on every device (see tests/conftest.py)."""
    with xpnet.using_device(request.param):
        yield request.param


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    # The quick runs use tiny matrices: BLAS threads only add spin-waiting, which on a
    # busy 2-core machine made a 1 s run take 10 s.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_script(name, args, timeout=240):
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name + ".py")] + list(args),
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def run_quick(name, device, tmp_path_factory, extra=()):
    """Run `name` --quick once per (device, extra) in this session; check the basics."""
    key = (name, device, tuple(extra))
    if key not in _runs:
        out = tmp_path_factory.mktemp(name)
        proc = run_script(name, ["--quick", "--device", device, "--out", str(out)] + list(extra))
        _runs[key] = (proc, out)
    proc, out = _runs[key]
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (name, proc.stdout, proc.stderr)
    assert "device: %s" % device in proc.stdout
    m = re.search(r"^dataset: (\S+) \((\d+) train / (\d+) test images\)$", proc.stdout, re.M)
    assert m, proc.stdout
    with open(out / (name + ".json")) as f:
        doc = json.load(f)
    assert doc["example"] == name
    assert doc["dataset"] == m.group(1)
    assert doc["device"].startswith(device)
    assert doc["options"]["quick"] is True
    with open(out / (name + ".png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC
    return proc.stdout, doc["figures"], out, doc


def printed(stdout, pattern):
    """The float(s) captured by `pattern` in the printed output."""
    m = re.search(pattern, stdout, re.M)
    assert m, "pattern %r not in output:\n%s" % (pattern, stdout)
    return [float(g) for g in m.groups()]


def test_optimizer_compare(device, tmp_path_factory):
    out, fig, _, _ = run_quick("optimizer_compare", device, tmp_path_factory)
    opts = fig["optimizers"]
    assert list(opts) == ["SGD", "Momentum", "AdaGrad", "Adam"]
    for k, r in opts.items():
        assert len(r["loss"]) == fig["iters"] == 30
        assert r["final_loss"] == pytest.approx(np.mean(r["loss"][-3:]))
        assert 0 <= r["test_accuracy"] <= 1
        fl, acc = printed(out, r"^\s+%s\s+final loss (\S+)\s+test accuracy (\S+)$" % k)
        assert fl == pytest.approx(r["final_loss"], abs=6e-5)
        assert acc == pytest.approx(r["test_accuracy"], abs=6e-5)
        # all four start from the same weights and the same first batch
        assert r["loss"][0] == pytest.approx(opts["SGD"]["loss"][0], rel=1e-5)
    assert fig["best"] == min(opts, key=lambda k: opts[k]["final_loss"])
    assert "lowest final loss: %s" % fig["best"] in out


def test_weight_init_compare(device, tmp_path_factory):
    out, fig, path, _ = run_quick("weight_init_compare", device, tmp_path_factory)
    with open(path / "weight_init_compare_hist.png", "rb") as f:
        assert f.read(8) == PNG_MAGIC
    runs = fig["runs"]
    assert sorted(runs) == sorted("%s/%s" % (a, i) for a in ("sigmoid", "relu")
                                  for i in ("std=0.01", "Xavier", "He"))
    for k, r in runs.items():
        assert len(r["activation_std"]) == 5 and len(r["loss"]) == 20
        assert math.isfinite(r["final_loss"]) and 0 <= r["test_accuracy"] <= 1
    # the book's observations: std 0.01 makes ReLU activations vanish layer by layer,
    # He keeps them spread; sigmoid with std 0.01 collapses everything near 0.5
    small, he = runs["relu/std=0.01"]["activation_std"], runs["relu/He"]["activation_std"]
    assert small[4] < small[0] / 100
    assert he[4] > he[0] / 3
    assert runs["sigmoid/std=0.01"]["activation_std"][4] < 0.05
    assert all(abs(m - 0.5) < 0.05 for m in runs["sigmoid/std=0.01"]["activation_mean"])
    acc = printed(out, r"^\s+relu\s+He\s+final loss \S+\s+test accuracy (\S+)$")[0]
    assert acc == pytest.approx(runs["relu/He"]["test_accuracy"], abs=6e-5)


def test_batch_norm_compare(device, tmp_path_factory):
    out, fig, _, _ = run_quick("batch_norm_compare", device, tmp_path_factory)
    scales = fig["scales"]
    assert [s["weight_scale"] for s in scales] == pytest.approx([1.0, 1e-2, 1e-4])
    for s in scales:
        for kind in ("plain", "batchnorm"):
            accs = s[kind]["train_acc"]
            assert len(accs) == fig["epochs"] + 1 == 3
            assert all(0 <= a <= 1 for a in accs)
    wins = sum(s["batchnorm"]["train_acc"][-1] > s["plain"]["train_acc"][-1] for s in scales)
    assert fig["bn_wins"] == wins
    assert "BatchNorm ahead at %d of 3 scales" % wins in out


def test_overfit_regularization(device, tmp_path_factory):
    out, fig, _, _ = run_quick("overfit_regularization", device, tmp_path_factory)
    runs = fig["runs"]
    assert list(runs) == ["none", "weight decay 0.1", "dropout 0.2"]
    assert fig["train_size"] == 300
    for name, r in runs.items():
        assert len(r["train_acc"]) == len(r["test_acc"]) == 3
        assert r["gap"] == pytest.approx(r["final_train_acc"] - r["final_test_acc"])
        tr, te, gap = printed(out, r"^\s+%s\s+train acc (\S+)\s+test acc (\S+)\s+gap (\S+)$"
                              % re.escape(name))
        assert (tr, te) == pytest.approx((r["final_train_acc"], r["final_test_acc"]), abs=6e-5)


def test_hyperparameter_search(device, tmp_path_factory):
    out, fig, _, _ = run_quick("hyperparameter_search", device, tmp_path_factory)
    ranked = fig["ranked"]
    assert len(ranked) == fig["trials"] == 4
    assert fig["train_size"] == 400 and fig["val_size"] == 100
    vals = [r["val_acc"] for r in ranked]
    assert vals == sorted(vals, reverse=True)
    for r in ranked:
        assert 1e-6 <= r["lr"] <= 1e-2 and 1e-8 <= r["weight_decay"] <= 1e-4
        assert len(r["val_curve"]) == 2
    best = printed(out, r"^Best-1\s+val acc (\S+) \| lr (\S+), weight decay (\S+)$")
    assert best == pytest.approx([ranked[0]["val_acc"], ranked[0]["lr"],
                                  ranked[0]["weight_decay"]], rel=1e-3, abs=6e-4)
    # the test split is never used for choosing
    assert "test acc" not in out and not any("test" in k for k in ranked[0])


def test_train_simple_convnet_saves_a_loadable_net(device, tmp_path_factory):
    out, fig, path, doc = run_quick("train_simple_convnet", device, tmp_path_factory)
    acc = printed(out, r"^test accuracy (\S+) \((\d+) test images\)$")
    assert acc == pytest.approx([fig["test_accuracy"], 500], abs=6e-5)
    assert fig["w1_std_before"] == pytest.approx(0.01, rel=0.2)   # std 0.01 init
    # the saved parameters reproduce the reported accuracy on the same images
    net = xpnet.load_net(str(path / "simple_convnet_params.npz"), device=device)
    assert net.config["type"] == "SimpleConvNet"
    _, (xt, tt) = xpnet.datasets.load(doc["dataset"], flatten=False, download=False) \
        if doc["dataset"] != "mnist-sample" else xpnet.datasets.load_mnist_sample(flatten=False)
    assert net.accuracy(xt[:500], tt[:500]) == pytest.approx(fig["test_accuracy"], abs=1e-9)


def test_train_deep_convnet(device, tmp_path_factory):
    out, fig, path, _ = run_quick("train_deep_convnet", device, tmp_path_factory)
    assert fig["test_size"] == 200
    assert fig["test_accuracy"] == pytest.approx(1 - fig["misclassified"] / 200)
    # the Trainer's final evaluation and the script's own predictions agree
    assert fig["trainer_test_accuracy"] == pytest.approx(fig["test_accuracy"], abs=1e-9)
    assert len(fig["train_acc"]) == len(fig["test_acc"]) == len(fig["loss"]) == 1
    acc, n, wrong = printed(out, r"^test accuracy (\S+) \((\d+) test images, "
                                 r"(\d+) misclassified\)$")
    assert acc == pytest.approx(fig["test_accuracy"], abs=6e-5)
    assert (n, wrong) == (200, fig["misclassified"])
    assert sum(c["count"] for c in fig["confusions"]) <= fig["misclassified"]
    assert os.path.exists(path / "deep_convnet_params.npz")


def test_quick_yields_to_explicit_options(tmp_path):
    proc = run_script("optimizer_compare", ["--quick", "--iters", "7", "--device", "cpu",
                                            "--dataset", "mnist-sample", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert "dataset: mnist-sample (4000 train / 1000 test images)" in proc.stdout
    with open(tmp_path / "optimizer_compare.json") as f:
        doc = json.load(f)
    fig = doc["figures"]
    assert doc["dataset"] == "mnist-sample"
    assert fig["iters"] == 7 and fig["test_size"] == 500     # --iters given, --test-size quick
    assert all(len(r["loss"]) == 7 for r in fig["optimizers"].values())


def test_train_simple_convnet_resumes_from_a_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    first = run_script("train_simple_convnet", ["--quick", "--device", "cpu", "--out",
                                                str(tmp_path / "a"), "--checkpoint-dir", str(ck)])
    assert first.returncode == 0, first.stderr
    assert os.path.exists(ck / "checkpoint.npz")
    second = run_script("train_simple_convnet", ["--quick", "--device", "cpu", "--epochs", "2",
                                                 "--out", str(tmp_path / "b"),
                                                 "--resume", str(ck)])
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout
    with open(tmp_path / "a" / "train_simple_convnet.json") as f:
        a = json.load(f)["figures"]
    with open(tmp_path / "b" / "train_simple_convnet.json") as f:
        b = json.load(f)["figures"]
    assert len(a["train_acc"]) == 1 and len(b["train_acc"]) == 2
    assert b["train_acc"][0] == a["train_acc"][0]     # epoch 1 comes from the checkpoint


def _check_half(out, fig):
    assert all(d == "float16" for _, d in fig["layer_dtypes"])
    assert "float16 layer outputs: all float16" in out
    a32 = printed(out, r"^float32 test accuracy (\S+)$")[0]
    a16 = printed(out, r"^float16 test accuracy (\S+)$")[0]
    assert (a32, a16) == pytest.approx((fig["float32_accuracy"], fig["float16_accuracy"]),
                                       abs=6e-5)
    assert fig["nonfinite_rows"] == 0
    # float16 rounding may flip a near tie, not the net's answers
    assert fig["agreement"] >= 0.98
    assert abs(a32 - a16) <= 0.02
    assert fig["relative_max_diff"] < 0.05


def test_half_float_inference_trains_its_own_net(device, tmp_path_factory):
    out, fig, _, _ = run_quick("half_float_inference", device, tmp_path_factory)
    assert fig["net"] == "SimpleConvNet" and "trained here" in fig["source"]
    _check_half(out, fig)


def test_half_float_inference_loads_params(device, tmp_path_factory):
    _, fig_train, path, _ = run_quick("train_simple_convnet", device, tmp_path_factory)
    params = str(path / "simple_convnet_params.npz")
    out, fig, _, _ = run_quick("half_float_inference", device, tmp_path_factory,
                               extra=("--params", params))
    assert "loaded from" in fig["source"]
    # same net, same 200 first test images: float32 accuracy is reproducible
    assert fig["test_size"] == 200
    _check_half(out, fig)


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "cifar"], "--dataset"),
    (["--device", "tpu"], "--device"),
    (["--iters", "0"], "--iters"),
    (["--batch-size", "x"], "--batch-size"),
])
def test_bad_options_are_named(args, needle, tmp_path):
    proc = run_script("optimizer_compare", args + ["--out", str(tmp_path)], timeout=60)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert os.listdir(tmp_path) == []


def test_missing_params_file_is_named(tmp_path):
    proc = run_script("half_float_inference", ["--params", str(tmp_path / "nope.npz"),
                                               "--out", str(tmp_path)], timeout=60)
    assert proc.returncode == 2
    assert "--params" in proc.stderr and "nope.npz" in proc.stderr
    assert not os.path.exists(tmp_path / "half_float_inference.json")


def test_explain_digits(device, tmp_path_factory):
    out, fig, path, _ = run_quick("explain_digits", device, tmp_path_factory)
    assert len(fig["files"]) == 7
    for name in fig["files"]:
        with open(path / name, "rb") as f:
            assert f.read(8) == PNG_MAGIC
    assert fig["cam_layer"] == "Convolution1" and fig["layers"][1] == "Relu2"
    for k, v in fig["pointing"].items():
        row = printed(out, r"^\s+%s\s+(\S+)\s+(\S+|-)$" % k) if k in fig["deletion"] \
            else printed(out, r"^\s+%s\s+(\S+)\s+-$" % k)
        assert row[0] == pytest.approx(v, abs=6e-4)
        if k in fig["deletion"]:
            assert row[1] == pytest.approx(fig["deletion"][k], abs=6e-4)
    # a random map rarely points at the digit; removing what the maps point at hurts more
    assert fig["pointing"]["random"] < 0.6
    for m in ("gradcam", "saliency", "occlusion"):
        assert fig["deletion"][m] > fig["deletion"]["random"], m


def test_every_example_is_tested():
    names = {f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and not f.startswith("_")}
    tested = {n[len("test_"):] for n in globals() if n.startswith("test_")}
    for n in names:
        assert any(t.startswith(n) for t in tested), "examples/%s.py has no test" % n
