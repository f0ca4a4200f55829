"""`xpnet bench`: rows, statistics, interleaving, JSON/table output, the PyTorch twin
of each net, and the path where PyTorch is missing."""
import json
import mmap
import sys

import numpy as np
import pytest

import xpnet
from xpnet import bench
from xpnet import layers as L
from xpnet.bench import runner, timing


def _torch():
    return pytest.importorskip("torch")


# --------------------------------------------------------------------------- statistics

def test_summary_median_min_iqr_and_throughput():
    s = timing.summary([0.005, 0.001, 0.004, 0.002, 0.003], batch=10)
    assert s["n"] == 5
    assert s["ms"] == pytest.approx(3.0)
    assert s["ms_min"] == pytest.approx(1.0)
    assert s["ms_q1"] == pytest.approx(2.0) and s["ms_q3"] == pytest.approx(4.0)
    assert s["ms_iqr"] == pytest.approx(2.0)
    assert s["images_per_s"] == pytest.approx(10 / 0.003)


def test_quantile_interpolates():
    assert timing.quantile([1.0, 2.0], 0.25) == pytest.approx(1.25)
    assert timing.quantile([7.0], 0.75) == 7.0


class _FakeCase(timing.Case):
    def __init__(self, name, log):
        super().__init__(name, step=lambda: log.append(name), sync=lambda: None)


def test_measure_interleaves_in_alternating_blocks():
    log = []
    a, b = _FakeCase("a", log), _FakeCase("b", log)
    n = timing.measure([a, b], warmup=1, repeats=8, host_mem=timing.HostMemory())
    assert n == 8
    assert len(a.times) == 8 and len(b.times) == 8
    timed = log[2:]                          # after one warm-up step each
    assert timed == list("aabb" "bbaa" "aabb" "bbaa")


def test_measure_auto_repeats_within_bounds():
    log = []
    cases = [_FakeCase("a", log)]
    n = timing.measure(cases, warmup=1, repeats=None, host_mem=timing.HostMemory())
    assert n == timing.AUTO_MAX                # a no-op step: as many as allowed
    assert len(cases[0].times) == n


# --------------------------------------------------------------------------- run_bench

def test_run_bench_quick_rows_are_well_formed(device):
    msgs = []
    rows = bench.run_bench(models=["MultiLayerNet", "simple"], batch_sizes=[4, 8], device=device,
                           repeats=3, warmup=1, infer_batch=6, log=msgs.append)
    assert msgs == []
    assert [(r["model"], r["task"], r["batch"]) for r in rows] == [
        ("MultiLayerNet", "train", 4), ("MultiLayerNet", "train", 8), ("MultiLayerNet", "infer", 6),
        ("SimpleConvNet", "train", 4), ("SimpleConvNet", "train", 8), ("SimpleConvNet", "infer", 6)]
    for r in rows:
        x = r["xpnet"]
        assert r["device"] == xpnet.get_device(device).name
        assert r["repeats"] == 3 and x["n"] == 3
        assert 0 < x["ms_min"] <= x["ms"] and x["ms_iqr"] >= 0
        assert x["images_per_s"] == pytest.approx(r["batch"] / (x["ms"] / 1e3))
        assert x["peak_bytes"] is None or x["peak_bytes"] > 0
        assert r["torch"] is None and r["ratio"] is None
        net = bench.MODELS[r["model"]]("cpu", 0)
        assert r["params"] == bench.count_params(net)
    json.dumps(rows)                          # rows are JSON-able as they are


def test_run_bench_rejects_bad_arguments():
    with pytest.raises(ValueError, match="models.*'nope'.*SimpleConvNet"):
        bench.run_bench(models=["nope"], quick=True)
    with pytest.raises(ValueError, match="batch_sizes entry must be a positive int, got -1"):
        bench.run_bench(models=["mlp"], batch_sizes=[-1], quick=True)
    with pytest.raises(ValueError, match="batch_sizes entry must be a positive int, got '0'"):
        bench.run_bench(models=["mlp"], batch_sizes="4,0", quick=True)
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        bench.run_bench(models=["mlp"], batch_sizes=[2], repeats=0)


def test_models_accept_commas_and_aliases():
    assert [runner.model_name(m) for m in runner.split(["deep,mlp", "SimpleConvNet"])] == [
        "DeepConvNet", "MultiLayerNet", "SimpleConvNet"]
    assert runner.model_name("simple_conv") == "SimpleConvNet"     # registry names too
    assert list(bench.MODELS) == ["SimpleConvNet", "DeepConvNet", "MultiLayerNet"]


def test_host_memory_peak_sees_a_new_allocation():
    hm = timing.HostMemory()
    if not hm.method.startswith("VmHWM"):
        pytest.skip("no resettable peak RSS here (%s)" % hm.method)
    before = hm.start()
    # fresh anonymous pages, every one written: new resident memory whatever the
    # allocator has cached (a malloc'd block may reuse pages that are resident already)
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    block.write(b"\x01" * len(block))
    assert hm.peak_bytes() >= before + 60 * 1024 * 1024
    block.close()


def test_traced_peak_counts_numpy_temporaries():
    got = timing.traced_peak(lambda: float(np.ones(2_000_000).sum()))   # 16 MB, then freed
    assert got >= 16_000_000


def test_fresh_footprint_holds_params_and_adam_state():
    net = bench.MODELS["MultiLayerNet"]("cpu", 0)
    p_bytes = 4 * bench.count_params(net)
    x = np.zeros((2, 1, 28, 28), np.float32)
    t = np.zeros(2, np.int64)
    train = runner.fresh_footprint(lambda: bench.MODELS["MultiLayerNet"]("cpu", 0), "train", x, t)
    infer = runner.fresh_footprint(lambda: bench.MODELS["MultiLayerNet"]("cpu", 0), "infer", x, t)
    assert train >= 3 * p_bytes              # weights, Adam's m and v (and the gradients)
    assert p_bytes <= infer < train


# --------------------------------------------------------------------------- command line

_TINY = ["--quick", "--device", "cpu", "--models", "mlp", "--batch-sizes", "4",
         "--infer-batch", "4"]


def test_json_output_parses_and_file_matches(capsys, tmp_path):
    out = tmp_path / "sub" / "bench.json"
    assert bench.main(_TINY + ["--json", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(printed)
    assert json.loads(out.read_text()) == doc
    env = doc["environment"]
    assert env["numpy"] == np.__version__ and env["device"] == "cpu"
    assert env["xpnet"] == xpnet.__version__ and env["cpu_count"] >= 1
    assert [(r["model"], r["task"], r["batch"]) for r in doc["rows"]] == [
        ("MultiLayerNet", "train", 4), ("MultiLayerNet", "infer", 4)]
    assert doc["settings"]["quick"] is True and doc["settings"]["vs"] is None
    assert env["xpnet_threads"]["threads"] == xpnet.get_num_threads()


def test_threads_option_sets_xpnet_threads(capsys, monkeypatch):
    from xpnet.backend import cpu_threads as parallel
    monkeypatch.setitem(parallel._state, "threads", parallel.get_num_threads())
    assert bench.main(_TINY + ["--threads", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["threads"] == 1 and doc["environment"]["xpnet_threads"]["threads"] == 1
    with pytest.raises(SystemExit):
        bench.main(_TINY + ["--threads", "0"])
    assert "argument --threads: expected a positive int, got '0'" in capsys.readouterr().err


def test_table_output(capsys):
    assert bench.main(_TINY) == 0
    out = capsys.readouterr().out
    header = next(l for l in out.splitlines() if l.startswith("model"))
    for col in ("xpnet ms", "torch ms", "ratio x/t", "xpnet img/s", "mem MB x", "RSS MB"):
        assert col in header
    body = [l for l in out.splitlines() if l.startswith("MultiLayerNet")]
    assert len(body) == 2 and all(len(l) <= len(header) + 2 for l in body)


def test_cli_errors_name_the_argument(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--batch-sizes", "0"])
    assert e.value.code == 2
    assert "argument --batch-sizes: expected a positive int, got '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--models", "ResNet"])
    assert "unknown model 'ResNet'" in capsys.readouterr().err
    assert bench.main(["--device", "tpu", "--quick"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_subcommand_hooks_work_on_a_subparser(capsys):
    import argparse
    p = argparse.ArgumentParser(prog="xpnet")
    sub = p.add_subparsers(dest="cmd")
    bench.add_arguments(sub.add_parser("bench"))
    args = p.parse_args(["bench"] + _TINY + ["--json"])
    assert bench.run_from_args(args) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 2


# --------------------------------------------------------------------------- without PyTorch

def test_no_torch_fails_early_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)     # `import torch` now raises ImportError
    monkeypatch.setattr(bench.command, "run_bench",
                        lambda *a, **k: pytest.fail("the bench ran without PyTorch"))
    assert bench.main(_TINY + ["--vs", "torch"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.count("error: --vs torch needs PyTorch") == 1
    assert "ModuleNotFoundError" in cap.err and '.[bench]' in cap.err
    assert "Traceback" not in cap.err


def test_no_torch_run_bench_logs_once_and_gives_the_xpnet_rows(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    msgs = []
    rows = bench.run_bench(models="mlp", batch_sizes=[2], infer_batch=0, vs_torch=True,
                           quick=True, device="cpu", log=msgs.append)
    assert len(msgs) == 1 and len(rows) == 1 and rows[0]["torch"] is None
    with pytest.raises(ImportError, match="needs PyTorch"):
        bench.torch_model(bench.MODELS["MultiLayerNet"]("cpu", 0))


# --------------------------------------------------------------------------- the PyTorch twins

@pytest.mark.parametrize("name", list(bench.MODELS))
def test_torch_twin_has_same_params_and_outputs(name, device):
    torch = _torch()
    net = bench.MODELS[name](device, 0)
    model = bench.torch_model(net, "cpu", torch).eval()
    assert bench.count_params(model) == bench.count_params(net)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    y_x = xpnet.asnumpy(net.predict(xpnet.to_device(x, net.device)))
    with torch.no_grad():
        y_t = model(torch.from_numpy(x)).numpy()
    assert y_t.shape == y_x.shape == (3, 10)
    np.testing.assert_allclose(y_t, y_x, rtol=1e-4, atol=1e-5)


def test_torch_deepconvnet_layout_matches_the_book():
    torch = _torch()
    model = bench.torch_model(bench.MODELS["DeepConvNet"]("cpu", 0), "cpu", torch)
    kinds = [type(m).__name__ for m in model]
    conv_relu = ["Conv2d", "ReLU"]
    assert kinds == (conv_relu * 2 + ["MaxPool2d"]) * 3 + [
        "Flatten", "Linear", "ReLU", "Dropout", "Linear", "Dropout"]
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert [c.padding for c in convs] == [(1, 1)] * 3 + [(2, 2)] + [(1, 1)] * 2
    lin = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(64 * 4 * 4, 50), (50, 10)]
    assert all(m.p == 0.5 for m in model if isinstance(m, torch.nn.Dropout))


@pytest.mark.parametrize("name", ["MultiLayerNet", "SimpleConvNet"])
def test_torch_twin_gradients_match(name):
    torch = _torch()
    net = bench.MODELS[name]("cpu", 0)
    model = bench.torch_model(net, "cpu", torch)
    rng = np.random.default_rng(1)
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, size=5)
    grads = net.gradient(x, t)
    torch.nn.CrossEntropyLoss()(model(torch.from_numpy(x)), torch.from_numpy(t)).backward()
    first = next(m for m in model if hasattr(m, "weight"))
    g_t = first.weight.grad.numpy()
    g_x = grads["W1"] if g_t.ndim == 4 else grads["W1"].T
    np.testing.assert_allclose(g_t, g_x, rtol=1e-3, atol=1e-6)


def test_torch_model_rejects_unknown_layers():
    torch = _torch()

    class Odd(L.Layer):
        def forward(self, x, train_flg=False):
            return x

    net = xpnet.Sequential([L.Affine(np.ones((4, 3), np.float32), np.zeros(3, np.float32)),
                            Odd()])
    with pytest.raises(ValueError, match="layer Odd of Sequential has no PyTorch equivalent"):
        bench.torch_model(net, "cpu", torch)


def test_vs_torch_rows_have_ratio():
    _torch()
    rows = bench.run_bench(models=["mlp"], batch_sizes=[4], infer_batch=4, vs_torch=True,
                           device="cpu", repeats=3, warmup=1)
    assert len(rows) == 2
    for r in rows:
        assert r["torch"]["n"] == 3 and r["torch"]["ms"] > 0
        assert r["ratio"] == pytest.approx(r["xpnet"]["ms"] / r["torch"]["ms"])
        assert r["torch"]["host_peak_rss_bytes"] is None or r["torch"]["host_peak_rss_bytes"] > 0


# --------------------------------------------------------------------------- other devices

def test_reference_device_rows_and_table(capsys):
    """--device numpy-reference times the plain reference kernels (what the docs
    compare the fast path with); NumPy memory is still traced."""
    assert bench.main(["--quick", "--device", "numpy-reference", "--models", "mlp,simple",
                       "--batch-sizes", "4", "--infer-batch", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["environment"]["device"] == "numpy-reference"
    assert doc["environment"]["reference_kernels"] is True
    assert [r["model"] for r in doc["rows"]] == ["MultiLayerNet", "SimpleConvNet"]
    for r in doc["rows"]:
        assert r["device"] == "numpy-reference" and r["xpnet"]["ms"] > 0
        assert r["xpnet"]["peak_bytes"] > 0
    assert bench.main(["--quick", "--device", "numpy-reference", "--models", "mlp",
                       "--batch-sizes", "4", "--infer-batch", "0"]) == 0
    assert "device numpy-reference: " in capsys.readouterr().out


def test_memory_columns_are_skipped_where_not_measured():
    pytest.importorskip("array_api_strict")
    rows = bench.run_bench(models="mlp", batch_sizes=[2], infer_batch=0, quick=True,
                           device="array-api-strict")
    assert rows[0]["xpnet"]["peak_bytes"] is None and rows[0]["xpnet"]["ms"] > 0
    assert bench.format_table(rows).splitlines()[2].split()[12] == "-"   # mem MB x


def test_bench_stays_out_of_the_core_and_runs_as_a_module():
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys, xpnet, xpnet.cli, xpnet.registry; "
            "print(sorted(m for m in sys.modules if m.startswith('xpnet.bench') or m == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=root, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    r = subprocess.run([sys.executable, "-m", "xpnet.bench", "--quick", "--models", "mlp",
                        "--batch-sizes", "2", "--infer-batch", "0", "--json"],
                       capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"][0]["model"] == "MultiLayerNet"


@pytest.mark.parametrize("device,mode", [("cpu", "eager"), ("jax:cpu", "jax.jit")])
def test_compile_rows_follow_each_train_row(capsys, device, mode):
    if device.startswith("jax"):
        pytest.importorskip("jax")
    assert bench.main(["--models", "mlp", "--batch-sizes", "4", "--infer-batch", "0",
                       "--quick", "--compile", "--device", device, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["rows"]
    assert [(r["task"], r["batch"]) for r in rows] == [("train", 4), ("train-compiled", 4)]
    assert rows[1]["mode"] == mode and rows[1]["vs_eager"] > 0
    assert rows[1]["vs_eager"] == pytest.approx(rows[0]["xpnet"]["ms"] / rows[1]["xpnet"]["ms"])
    assert doc["settings"]["compile"] is True
