"""The xpnet command line: train / eval / info / bench on tiny settings."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import xpnet
from xpnet import cli
from xpnet.nets import load_net
from xpnet.serialization import load_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_mnist(tmp_path, monkeypatch):
    """No full MNIST anywhere: empty cache, no data dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPNET_DATA_DIR", raising=False)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_tiny(out, capsys, *extra):
    return run(["train", "--dataset", "mnist-sample", "--limit", 200, "--epochs", 1,
                "--out", out, *extra], capsys)


# ---------------------------------------------------------------- train

def test_train_writes_params_history_checkpoint_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = train_tiny(out, capsys, "--batch-size", 50)
    assert code == 0, err
    assert "data: mnist-sample" in stdout and "epoch 1/1" in stdout
    for f in ("params.npz", "params.json", "history.json", "curves.png", "filters.png",
              "checkpoints/checkpoint.npz", "checkpoints/checkpoint.json"):
        assert (out / f).is_file(), f
    for png in ("curves.png", "filters.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    h = json.loads((out / "history.json").read_text())
    assert h["status"] == "completed" and len(h["train_loss"]) == 4 and len(h["test_acc"]) == 1
    assert h["config"]["run_info"]["cli"]["model"] == "simple_conv"
    net = load_net(out / "params.npz")
    assert type(net).__name__ == "SimpleConvNet"
    meta = json.loads((out / "params.json").read_text())
    assert meta["dataset"] == "mnist-sample"
    assert meta["final_test_acc"] == h["final_test_acc"]


def test_train_mlp_float64_quiet(tmp_path, capsys):
    out = tmp_path / "mlp"
    code, stdout, err = train_tiny(out, capsys, "--model", "mlp", "--dtype", "float64",
                                   "--optimizer", "SGD", "--lr", "0.1", "--quiet")
    assert code == 0, err
    assert stdout == ""
    net = load_net(out / "params.npz")
    assert type(net).__name__ == "MultiLayerNetExtend" and str(net.dtype) == "float64"
    assert not (out / "filters.png").exists() and (out / "curves.png").exists()
    assert json.loads((out / "history.json").read_text())["config"]["optimizer"]["type"] == "SGD"


def test_default_dataset_falls_back_to_the_sample(tmp_path, capsys, no_mnist):
    code, stdout, err = run(["train", "--no-download", "--model", "two_layer", "--limit", 100,
                             "--epochs", 1, "--out", tmp_path], capsys)
    assert code == 0, err
    assert "full MNIST not available" in stdout and "embedded MNIST sample" in stdout
    assert json.loads((tmp_path / "params.json").read_text())["dataset"] == "mnist-sample"


def test_missing_dataset_gives_the_datasets_message(tmp_path, capsys, no_mnist):
    code, stdout, err = run(["train", "--dataset", "mnist", "--no-download", "--out", tmp_path],
                            capsys)
    assert code == 1
    assert "MNIST is not available" in err and "Looked in" in err
    assert "Traceback" not in err


def test_resume_from_the_cli_reuses_stored_options(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = train_tiny(out, capsys, "--model", "two_layer", "--optimizer", "momentum")
    assert code == 0, err
    code, stdout, err = run(["train", "--resume", out / "checkpoints", "--epochs", 3], capsys)
    assert code == 0, err
    assert "resumed from" in stdout
    h = json.loads((out / "history.json").read_text())
    assert len(h["test_acc"]) == 3 and len(h["train_loss"]) == 6
    assert h["config"]["network"]["type"] == "TwoLayerNet"
    assert h["config"]["optimizer"]["type"] == "Momentum"


def test_ctrl_c_in_cli_saves_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from xpnet import trainer as T
    orig = T.Trainer._step

    def step(self):
        if self.current_iter == 1:      # before the 2nd of 2 steps
            raise KeyboardInterrupt
        orig(self)
    monkeypatch.setattr(T.Trainer, "_step", step)
    code, _, err = train_tiny(tmp_path, capsys, "--model", "two_layer")
    assert code == 130
    assert "xpnet train --resume %s" % (tmp_path / "checkpoints" / "checkpoint.npz") in err
    _, meta = load_arrays(tmp_path / "checkpoints" / "checkpoint.npz")
    assert meta["step"] == 1


def test_plots_skipped_without_matplotlib(tmp_path, capsys, monkeypatch):
    from xpnet import viz
    monkeypatch.setattr(viz, "have_matplotlib", lambda: (False, "matplotlib is not installed"))
    code, stdout, err = train_tiny(tmp_path, capsys, "--model", "two_layer")
    assert code == 0, err
    assert "plots skipped: matplotlib is not installed" in stdout
    assert (tmp_path / "params.npz").exists() and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("argv, valid", [
    (["train", "--model", "resnet"], "simple_conv', 'deep_conv', 'mlp', 'two_layer"),
    (["train", "--dataset", "cifar"], "mnist', 'fashion-mnist', 'mnist-sample"),
    (["train", "--optimizer", "lamb"], "'sgd', 'momentum', 'nesterov', 'adagrad'"),
    (["eval", "x.npz", "--device", "torch:tpu"], "unknown torch device 'torch:tpu'"),
    (["train", "--dtype", "float16"], "'float32', 'float64'"),
    (["train", "--epochs", "-1"], "argument --epochs: expected an int >= 0, got '-1'"),
    (["train", "--lr", "0"], "argument --lr: expected a positive number, got '0'"),
    (["train", "--batch-size", "x"], "argument --batch-size: expected a positive int, got 'x'"),
    (["train", "--seed", "-1"], "argument --seed: expected an int >= 0, got '-1'"),
    (["explain", "run", "--seed", "-1"], "argument --seed: expected an int >= 0, got '-1'"),
    (["frobnicate"], "invalid choice: 'frobnicate' (choose from 'train', 'eval', "),
    ([], "required: COMMAND"),
])
def test_bad_arguments_exit_2_listing_valid_values(argv, valid, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    assert ei.value.code == 2
    assert valid in capsys.readouterr().err


def test_unknown_device_lists_the_registry(capsys):
    """The valid devices come from the backend registry, whatever is registered."""
    with pytest.raises(SystemExit) as ei:
        cli.main(["train", "--device", "tpu"])
    assert ei.value.code == 2
    assert "unknown device 'tpu'; valid values are %s\n" % xpnet.backend.device_help() \
        in capsys.readouterr().err


def test_weight_decay_on_two_layer_is_refused(tmp_path, capsys):
    code, _, err = train_tiny(tmp_path, capsys, "--model", "two_layer", "--weight-decay", "0.1")
    assert code == 1 and "--weight-decay is not supported by --model two_layer" in err


def test_unavailable_gpu_is_a_clear_error(tmp_path, capsys):
    if xpnet.gpu_available()[0]:
        pytest.skip("a GPU is available")
    with pytest.raises(SystemExit) as ei:     # --device is resolved while parsing
        train_tiny(tmp_path, capsys, "--device", "gpu")
    err = capsys.readouterr().err
    assert ei.value.code == 2 and "argument --device" in err and "GPU can't be used" in err
    assert not list(tmp_path.iterdir())


def test_train_on_the_reference_device(tmp_path, capsys):
    code, stdout, err = train_tiny(tmp_path, capsys, "--model", "two_layer", "--device",
                                   "numpy-reference")
    assert code == 0, err
    assert "model: TwoLayerNet (float32, numpy-reference)" in stdout


# ---------------------------------------------------------------- eval

def test_eval_reports_accuracy_confusion_and_images(tmp_path, capsys):
    code, _, err = train_tiny(tmp_path / "m", capsys, "--model", "two_layer")
    assert code == 0, err
    params = tmp_path / "m" / "params.npz"
    code, stdout, err = run(["eval", params, "--limit", 300, "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())
    # Independent check of the reported accuracy.
    from xpnet.datasets import load_mnist_sample
    _, (xt, tt) = load_mnist_sample()
    expected = load_net(params).accuracy(xt[:300], tt[:300])
    assert res["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert "accuracy %.4f" % expected in stdout
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 300 and np.trace(cm) == round(expected * 300)
    assert "confusion matrix" in stdout and "per-class accuracy" in stdout
    for png in ("confusion.png", "misclassified.png"):
        assert (tmp_path / "ev" / png).read_bytes()[:4] == b"\x89PNG"


def test_eval_needs_a_dataset_when_the_file_has_none(tmp_path, capsys):
    net = xpnet.TwoLayerNet(784, 10, 10)
    p = net.save_params(tmp_path / "bare")
    code, _, err = run(["eval", p], capsys)
    assert code == 1 and "pass --dataset" in err
    code, _, err = run(["eval", tmp_path / "missing.npz", "--dataset", "mnist-sample"], capsys)
    assert code == 1 and "not found" in err and "Traceback" not in err


# ---------------------------------------------------------------- info

def test_info_lists_versions_devices_and_datasets(capsys):
    code, stdout, _ = run(["info"], capsys)
    assert code == 0
    assert "xpnet %s" % xpnet.__version__ in stdout and "NumPy %s" % np.__version__ in stdout
    assert "cpu" in stdout and "gpu" in stdout
    for name in ("mnist", "fashion-mnist", "mnist-sample"):
        assert "\n  %s " % name in stdout
    code, stdout, _ = run(["info", "--json"], capsys)
    info = json.loads(stdout)
    assert info["numpy"] == np.__version__ and info["datasets"]["mnist-sample"]["found"]
    ok, why = xpnet.gpu_available()
    gpu = [d for d in info["devices"] if d["name"].startswith("gpu")]
    assert gpu and gpu[0]["available"] == ok and (ok or gpu[0]["reason"] == why)
    assert info["cpu_threads"]["threads"] == xpnet.get_num_threads()
    cpu = [d for d in info["devices"] if d["name"] == "cpu"][0]
    assert cpu["dtypes"] == list(xpnet.get_device("cpu").dtypes) and "float64" in cpu["dtypes"]
    code, stdout, _ = run(["info"], capsys)
    assert "dtypes: %s" % ", ".join(cpu["dtypes"]) in stdout


def test_threads_option_and_bad_env(tmp_path, capsys, monkeypatch):
    from xpnet.backend import cpu_threads as parallel
    monkeypatch.setitem(parallel._state, "threads", parallel.get_num_threads())
    code, _, err = train_tiny(tmp_path / "t1", capsys, "--threads", 1, "--quiet")
    assert code == 0, err
    assert parallel.get_num_threads() == 1
    with pytest.raises(SystemExit) as e:
        run(["train", "--threads", "0"], capsys)
    assert e.value.code == 2 and "--threads" in capsys.readouterr().err
    monkeypatch.setitem(parallel._state, "threads", None)
    monkeypatch.setenv("XPNET_NUM_THREADS", "many")
    code, stdout, err = run(["info"], capsys)
    assert code == 2 and "XPNET_NUM_THREADS must be a positive integer, got 'many'" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- registry and validate

def test_registry_is_what_the_cli_offers():
    from xpnet import nets, optimizers, registry
    assert cli.MODELS == registry.CLI_MODELS == ("simple_conv", "deep_conv", "mlp", "two_layer")
    assert registry.OPTIMIZERS == tuple(optimizers.OPTIMIZERS)
    assert all(m.net in nets.NETS for m in registry.MODELS)
    assert registry.default_lr("adam") == 0.003 and registry.default_lr("SGD") == 0.01
    assert registry.default_lr("adam", "deep_conv") == 0.001
    assert registry.default_lr("sgd", "deep_conv") == 0.01
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        registry.default_lr("lamb")
    mlp, two = registry.cli_model("mlp"), registry.cli_model("two_layer")
    assert mlp.flat_input and two.flat_input and not registry.cli_model("deep_conv").flat_input
    assert mlp.weight_decay and not two.weight_decay
    net = mlp.build(dtype="float64", seed=0)
    assert type(net).__name__ == "MultiLayerNetExtend" and str(net.dtype) == "float64"
    assert registry.bench_model("mlp").net == "MultiLayerNet"     # bench aliases are its own
    assert registry.bench_model("Simple_Conv").net == "SimpleConvNet"
    with pytest.raises(ValueError, match="unknown model 'two_layer'"):
        registry.bench_model("two_layer")                         # not timed by the bench


def test_validate_positive_int_and_parsers():
    import argparse
    from xpnet import validate as V
    assert V.positive_int(np.int64(3), "n") == 3 and V.positive_int(0, "n", allow_zero=True) == 0
    for bad in (True, 4.5, "4", None):
        with pytest.raises(TypeError, match="n must be a positive int, got "):
            V.positive_int(bad, "n")
    with pytest.raises(ValueError, match=r"^n must be a positive int, got 0$"):
        V.positive_int(0, "n")
    with pytest.raises(ValueError, match=r"^n must be an int >= 0, got -1$"):
        V.positive_int(-1, "n", allow_zero=True)
    assert V.parse_int(" 12 ", "n") == 12 and V.parse_float("1e-3", "lr") == 0.001
    for text in ("x", "1.5", "0"):
        with pytest.raises(ValueError, match="^n must be a positive int, got '%s'$" % text):
            V.parse_int(text, "n")
    for text in ("nan", "inf", "-1"):
        with pytest.raises(ValueError, match="lr must be a positive number"):
            V.parse_float(text, "lr")
    with pytest.raises(argparse.ArgumentTypeError, match="^expected a number >= 0, got '-2'$"):
        V.arg_type(V.parse_float, allow_zero=True)("-2")


# ---------------------------------------------------------------- bench

def test_bench_delegates_to_xpnet_bench(monkeypatch, capsys):
    fake = types.ModuleType("xpnet.bench")
    got = {}

    def add_arguments(p):
        p.add_argument("--models", default="all")

    def run_from_args(args):
        got["models"] = args.models
        return 7
    fake.add_arguments, fake.run_from_args = add_arguments, run_from_args
    monkeypatch.setitem(sys.modules, "xpnet.bench", fake)
    assert cli.main(["bench", "--models", "SimpleConvNet"]) == 7
    assert got == {"models": "SimpleConvNet"}


def test_bench_missing_or_incomplete_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "xpnet.bench", None)
    code, _, err = run(["bench"], capsys)
    assert code == 2 and "xpnet.bench can't be imported" in err
    monkeypatch.setitem(sys.modules, "xpnet.bench", types.ModuleType("xpnet.bench"))
    code, _, err = run(["bench"], capsys)
    assert code == 2 and "lacks add_arguments and run_from_args" in err


# ---------------------------------------------------------------- python -m xpnet

def test_python_m_xpnet_runs():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "xpnet", "--version"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "xpnet %s" % xpnet.__version__
    r = subprocess.run([sys.executable, "-m", "xpnet", "train", "--model", "nope"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr


# ---------------------------------------------------------------- viz helpers

def test_viz_helpers_write_pngs_and_check_input(tmp_path):
    from xpnet import viz
    t = np.array([0, 1, 2, 2, 1, 0, 2])
    y = np.array([0, 2, 2, 2, 1, 1, 0])
    cm = viz.confusion_matrix(t, np.eye(3)[y], n_classes=3)      # one-hot predictions too
    expected = np.zeros((3, 3), int)
    for a, b in zip(t, y):
        expected[a, b] += 1
    np.testing.assert_array_equal(cm, expected)
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        viz.confusion_matrix(t, y, n_classes=2)
    rng = np.random.default_rng(0)
    viz.activation_histograms({"a": rng.random(100), "b": rng.random(100)}, tmp_path / "h.png")
    viz.image_grid(rng.random((5, 784)), titles=list("abcde"), path=tmp_path / "g.png")
    viz.plot_history(train_loss=[2.0, 1.0, None], train_acc=[0.5], test_acc=[0.4],
                     path=tmp_path / "c.png")
    assert viz.plot_misclassified(rng.random((3, 784)), t[:3], t[:3]) is None
    for f in ("h.png", "g.png", "c.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not square"):
        viz.image_grid(rng.random((2, 10)))
    with pytest.raises(ValueError, match=r"\(FN, C, FH, FW\), got \(3, 3\)"):
        viz.plot_filters(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="5 images but 2 titles"):
        viz.image_grid(rng.random((5, 4, 4)), titles=["a", "b"])


def test_import_xpnet_does_not_import_matplotlib():
    code = ("import sys, xpnet, xpnet.trainer, xpnet.viz, xpnet.cli; "
            "print('matplotlib' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


# ---------------------------------------------------------------- one line, no traceback (issue 10)

def one_line_error(code, err, *needles):
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert str(n) in err, err


def test_out_that_is_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "some_file"
    f.write_text("x")
    code, _, err = train_tiny(f, capsys, "--model", "two_layer")
    one_line_error(code, err, "xpnet train: error: --out %s exists and is not a directory" % f)
    code, _, err = train_tiny(f / "sub", capsys, "--model", "two_layer")
    one_line_error(code, err, "--out %s can't be created: Not a directory" % (f / "sub"))
    assert f.read_text() == "x"


def _as_nobody(fn):
    """`fn()` in a forked child that has dropped root to the user nobody, so the kernel
    refuses what the permission bits refuse (root writes into read-only folders); its
    result comes back through a pipe. Everything it needs must be imported already: a
    module under root's home can't be read once the child is nobody."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: never returns into pytest
        status = 1
        try:
            os.close(r)
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                result = {"result": fn()}
            except PermissionError as e:     # a container without CAP_SETUID
                result = {"skip": "can't become nobody: %s" % e}
            with os.fdopen(w, "w") as f:
                json.dump(result, f)
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and text, "the child run as nobody failed (status %d)" % status
    result = json.loads(text)
    if "skip" in result:
        pytest.skip(result["skip"])
    return result["result"]


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_out_in_a_read_only_folder(tmp_path, capsys):
    import io
    import tempfile
    code, _, err = train_tiny(tmp_path / "warm", capsys, "--model", "two_layer", "--quiet")
    assert code == 0, err      # imports everything a run needs (see _as_nobody)
    base = tempfile.mkdtemp(prefix="xpnet-ro-")     # in /tmp: reachable by nobody
    ro = os.path.join(base, "ro")
    os.mkdir(ro)
    os.chmod(base, 0o755)
    os.chmod(ro, 0o555)

    def both():
        out = []
        for target in (ro, os.path.join(ro, "new")):
            stdout, stderr = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
            try:
                code = cli.main(["train", "--dataset", "mnist-sample", "--limit", "200",
                                 "--epochs", "1", "--model", "two_layer", "--out", target])
                out.append((code, sys.stderr.getvalue()))
            finally:
                sys.stdout, sys.stderr = stdout, stderr
        return out
    try:
        results = _as_nobody(both) if os.geteuid() == 0 else both()
        (code, err), (code2, err2) = results
        one_line_error(code, err, "--out %s is not writable" % ro, "Permission denied")
        one_line_error(code2, err2, "--out %s can't be created: Permission denied"
                       % os.path.join(ro, "new"))
        assert os.listdir(ro) == []
    finally:
        os.chmod(ro, 0o755)
        import shutil
        shutil.rmtree(base)


def _hold_out_in_child(folder):
    root = ROOT
    code = ("import sys, time; from xpnet.trainer.folder import FolderLock; "
            "lock = FolderLock(sys.argv[1], '--out').acquire(); print('locked', flush=True); "
            "time.sleep(120)")
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", code, str(folder), "train", "--out", "x"],
                         stdout=subprocess.PIPE, env=env, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


@pytest.mark.skipif(sys.platform == "win32", reason="needs fcntl")
def test_two_trains_into_one_out_the_second_is_refused(tmp_path, capsys):
    import signal
    import socket
    out = tmp_path / "run"
    child = _hold_out_in_child(out)
    try:
        code, _, err = train_tiny(out, capsys, "--model", "two_layer")
        one_line_error(code, err, "--out %s is in use by process %d on %s, started "
                       % (out, child.pid, socket.gethostname()), "-c %s train --out x" % out)
        assert sorted(os.listdir(out)) == [".xpnet.lock"]      # nothing written
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    (out / ".params.npz.k1ll3d_9.tmp").write_bytes(b"left by kill -9")
    (out / ".history.json.abcdefgh.tmp").write_bytes(b"left by kill -9")
    code, _, err = train_tiny(out, capsys, "--model", "two_layer")
    assert code == 0, err
    assert not list(out.glob(".*.tmp"))             # stale temporaries cleaned up
    assert (out / "params.npz").exists()
    assert (out / ".xpnet.lock").read_bytes() == b""     # released at the end


def test_eval_of_a_directory_a_missing_link_and_a_symlink_loop(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("a_directory.npz")
    code, _, err = run(["eval", "a_directory.npz"], capsys)
    one_line_error(code, err, "a_directory.npz is a directory, not a parameter file")
    os.mkdir("run")
    xpnet.TwoLayerNet(784, 10, 10).save_params("run/params")
    code, _, err = run(["eval", "run"], capsys)
    one_line_error(code, err, "run is a directory", "did you mean run/params.npz?")
    os.symlink("loop.npz", "loop.npz")
    code, _, err = run(["eval", "loop.npz"], capsys)
    one_line_error(code, err, "loop.npz can't be read: Too many levels of symbolic links")
    assert "loop.npz.npz" not in err
    os.symlink("gone.npz", "dangling.npz")
    code, _, err = run(["eval", "dangling.npz"], capsys)
    one_line_error(code, err, "dangling.npz is a symbolic link to gone.npz, which does not exist")
    code, _, err = run(["train", "--resume", "loop.npz"], capsys)
    one_line_error(code, err, "resume: can't read the checkpoint loop.npz: Too many levels")


def _npz_with_meta(path, raw):
    np.savez(path, W1=np.zeros((2, 2), np.float32),
             __xpnet_meta__=np.frombuffer(raw, dtype=np.uint8))
    return path


@pytest.mark.parametrize("raw", [b"\xff\xfe not utf-8", b"[1, 2, 3]", b'"a string"', b"{oops",
                                 b"null"])
def test_eval_and_resume_of_files_with_bad_metadata(tmp_path, capsys, raw):
    p = _npz_with_meta(str(tmp_path / "bad.npz"), raw)
    code, _, err = run(["eval", p], capsys)
    one_line_error(code, err, p)
    code, _, err = run(["train", "--resume", p], capsys)
    one_line_error(code, err, p)


def test_broken_pipe_exits_quietly_like_unix_tools():
    r, w = os.pipe()
    os.close(r)                       # the reader (`head`) is gone before we write
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run([sys.executable, "-m", "xpnet", "info"], stdout=w,
                           stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 141 and p.stderr == "", p.stderr


def test_resume_with_no_epochs_left_says_so(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = train_tiny(out, capsys, "--model", "two_layer", "--epochs", 2)
    assert code == 0, err
    stamp = (out / "params.npz").stat().st_mtime_ns
    ck = out / "checkpoints" / "checkpoint.npz"
    code, _, err = run(["train", "--resume", out / "checkpoints", "--epochs", 1], capsys)
    one_line_error(code, err, "--epochs 1 is the total number of epochs, counted from the start, "
                   "and %s has already trained 2 epochs; pass --epochs 3 or more" % ck)
    code, _, err = run(["train", "--resume", out / "checkpoints"], capsys)
    one_line_error(code, err, "%s has already trained 2 epochs, the total asked for: nothing to "
                   "do" % ck,
                   "pass --epochs N with N > 2")
    assert (out / "params.npz").stat().st_mtime_ns == stamp       # nothing rewritten
    code, _, err = run(["train", "--resume", out / "checkpoints", "--epochs", 3, "--quiet"],
                       capsys)
    assert code == 0, err


@pytest.mark.parametrize("exc, line", [
    (OSError(28, "No space left on device", "/data/run/params.npz"),
     "xpnet info: error: /data/run/params.npz: No space left on device (XPNET_DEBUG=1 shows "
     "the traceback)"),
    (PermissionError(13, "Permission denied", "/a", None, "/b"), "/a -> /b: Permission denied"),
    (MemoryError("Unable to allocate 7.28 TiB"), "out of memory: Unable to allocate 7.28 TiB"),
])
def test_unexpected_os_errors_are_one_line_unless_debugging(capsys, monkeypatch, exc, line):
    def boom(data_dir=None):
        raise exc
    monkeypatch.setattr(cli.info, "_info", boom)
    monkeypatch.delenv("XPNET_DEBUG", raising=False)
    code, _, err = run(["info"], capsys)
    one_line_error(code, err, line)
    monkeypatch.setenv("XPNET_DEBUG", "1")
    with pytest.raises(type(exc)):
        cli.main(["info"])
    monkeypatch.setattr(cli.info, "_info", lambda data_dir=None: 1 / 0)
    monkeypatch.delenv("XPNET_DEBUG")
    with pytest.raises(ZeroDivisionError):        # a real bug keeps its traceback
        cli.main(["info"])


def test_huge_thread_count_is_capped_with_one_warning(capsys, monkeypatch):
    from xpnet.backend import cpu_threads as parallel
    cap = 4 * parallel._usable_cores()
    monkeypatch.setitem(parallel._state, "threads", None)
    monkeypatch.setattr(parallel, "_env_capped", [])
    monkeypatch.setenv("XPNET_NUM_THREADS", "1000")
    code, stdout, err = run(["info", "--json"], capsys)
    assert code == 0
    assert err == ("xpnet info: warning: XPNET_NUM_THREADS=1000 is more than 4 threads per CPU "
                   "core this process may use (%d cores); using %d\n"
                   % (parallel._usable_cores(), cap))
    threads = json.loads(stdout)["cpu_threads"]["threads"]
    assert threads == (1 if parallel.info()["disabled_because"] else cap)
    monkeypatch.setitem(parallel._state, "threads", None)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # once per process: no second warning
        assert parallel._default_threads() == cap
    monkeypatch.setattr(parallel, "_env_capped", [])
    with pytest.warns(UserWarning, match="XPNET_NUM_THREADS=1000 is more than"):
        assert parallel._default_threads() == cap
    monkeypatch.setenv("XPNET_NUM_THREADS", str(cap))
    assert parallel._default_threads() == cap         # up to the cap: as asked, silently


def test_a_broken_pipe_that_is_not_stdout_is_an_error_line(capsys, monkeypatch):
    def boom(data_dir=None):
        raise BrokenPipeError(32, "Broken pipe")        # e.g. a child process went away
    monkeypatch.setattr(cli.info, "_info", boom)
    monkeypatch.delenv("XPNET_DEBUG", raising=False)
    code, _, err = run(["info"], capsys)
    one_line_error(code, err, "xpnet info: error: [Errno 32] Broken pipe")


# ---------------------------------------------------------------- no traceback (issue 20)

def _xpnet(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(kw.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "xpnet",
                          *(a if isinstance(a, bytes) else str(a) for a in args)],
                          capture_output=True, env=env, timeout=120, **kw)


def test_eval_and_explain_of_a_file_naming_an_unknown_dataset(tmp_path, capsys):
    p = xpnet.TwoLayerNet(784, 10, 10).save_params(tmp_path / "p", {"dataset": "cifar99"})
    for cmd in ("eval", "explain"):
        code, _, err = run([cmd, p], capsys)
        one_line_error(code, err, "was trained on the data set 'cifar99', which xpnet doesn't "
                       "know; pass --dataset (one of mnist, fashion-mnist, mnist-sample)")
    code, _, err = run(["eval", p, "--dataset", "mnist-sample", "--limit", 10, "--out",
                        tmp_path, "--quiet"], capsys)
    assert code == 0, err


def test_convert_of_a_pickle_beyond_the_size_cap(tmp_path, capsys, monkeypatch):
    import pickle
    from xpnet.nets import build
    arrays = {"W1": np.zeros((30, 20), np.float32), "b1": np.zeros(20, np.float32),
              "W2": np.zeros((20, 10), np.float32), "b2": np.zeros(10, np.float32)}
    src = tmp_path / "book.pkl"
    src.write_bytes(pickle.dumps(arrays))
    monkeypatch.setattr(build, "MAX_PARAMETERS", 500)     # the cap, scaled down
    code, _, err = run(["convert", src, tmp_path / "new.npz"], capsys)
    one_line_error(code, err, "xpnet convert: error: %s: " % src, "MAX_PARAMETERS = 500")
    assert not (tmp_path / "new.npz").exists()


def test_epochs_0_trains_nothing_and_skips_the_curves(tmp_path, capsys):
    code, stdout, err = train_tiny(tmp_path, capsys, "--model", "two_layer", "--epochs", 0)
    assert code == 0, err
    assert "curves skipped: no epoch was trained" in stdout
    assert (tmp_path / "params.npz").exists() and not (tmp_path / "curves.png").exists()
    assert json.loads((tmp_path / "history.json").read_text())["train_loss"] == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors")
@pytest.mark.parametrize("args", [["info"], ["train", "--dataset", "mnist-sample", "--limit",
                                             100, "--epochs", 1, "--model", "two_layer"]])
def test_a_closed_stdout_is_no_error(tmp_path, args):
    if args[0] == "train":
        args = args + ["--out", tmp_path / "run"]
    r = _xpnet(args, preexec_fn=lambda: os.close(1), cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    if args[0] == "train":
        assert (tmp_path / "run" / "params.npz").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_an_out_name_the_locale_cant_encode_is_printed_as_its_bytes(tmp_path):
    out = os.path.join(os.fsencode(tmp_path), b"run-\xff")
    r = _xpnet([b"train", b"--dataset", b"mnist-sample", b"--limit", b"100", b"--epochs",
                b"1", b"--model", b"two_layer", b"--out", out],
               env={"PYTHONIOENCODING": "ascii:strict", "LC_ALL": "C", "PYTHONUTF8": "0",
                    "PYTHONCOERCECLOCALE": "0"})
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode()
    assert out + b"/params.npz" in r.stdout
    assert os.path.exists(os.path.join(out, b"params.npz"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_the_command_starts_exits_130_without_a_traceback():
    # The console script's first line imports xpnet.cli; SIGINT arrives while
    # xpnet/__init__ is importing its backends, as a user's Ctrl-C at start-up would.
    code = ("import builtins, os, signal, sys\n"
            "sys.argv = ['/usr/local/bin/xpnet', 'info']\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name.endswith('backend'):\n"
            "        builtins.__import__ = real\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "from xpnet.cli import main\n"
            "print('not reached')\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 130 and r.stderr == "\nxpnet: interrupted\n", r.stderr
    assert r.stdout == ""
    # A script that imports xpnet keeps Python's own Ctrl-C
    r = subprocess.run([sys.executable, "-c", code.replace("/usr/local/bin/xpnet", "x.py")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "KeyboardInterrupt" in r.stderr


def test_explain_stride_beyond_the_window_is_refused(tmp_path, capsys):
    p = xpnet.SimpleConvNet().save_params(tmp_path / "p", {"dataset": "mnist-sample"})
    code, _, err = run(["explain", p, "--method", "occlusion", "--stride", 999999999],
                       capsys)
    one_line_error(code, err, "--stride 999999999 is larger than --window 7")
    assert not (tmp_path / "explain").exists()


def test_resume_with_lr_applies_it_and_records_it(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = train_tiny(out, capsys, "--model", "two_layer", "--quiet")
    assert code == 0, err
    code, stdout, err = run(["train", "--resume", out / "checkpoints", "--epochs", 2, "--lr",
                             "0.0005"], capsys)
    assert code == 0, err
    assert "learning rate: 0.003 from the checkpoint, now 0.0005 (--lr)" in stdout
    h = json.loads((out / "history.json").read_text())
    assert h["config"]["optimizer"]["hyper"]["lr"] == 0.0005
    assert h["config"]["run_info"]["lr_changes"] == [
        {"epoch": 1, "step": 2, "from": 0.003, "to": 0.0005}]
    _, meta = load_arrays(out / "checkpoints" / "checkpoint.npz")
    assert meta["optimizer"]["hyper"]["lr"] == 0.0005        # what a further resume uses
    code, stdout, err = run(["train", "--resume", out / "checkpoints", "--epochs", 3], capsys)
    assert code == 0, err and "learning rate:" not in stdout
    h = json.loads((out / "history.json").read_text())
    assert h["config"]["optimizer"]["hyper"]["lr"] == 0.0005
    assert len(h["config"]["run_info"]["lr_changes"]) == 1     # kept across resumes
    # a scheduled run sets the rate every step: --lr is refused, saying so
    out = tmp_path / "s"
    code, _, err = train_tiny(out, capsys, "--model", "two_layer", "--schedule", "cosine",
                              "--quiet")
    assert code == 0, err
    code, _, err = run(["train", "--resume", out / "checkpoints", "--epochs", 2, "--lr",
                        "0.0005"], capsys)
    one_line_error(code, err, "--lr 0.0005: this run follows a learning-rate schedule")


# ---------------------------------------------------------------- issue 23: the Trainer's options

def test_schedule_augment_validation_and_tensorboard_reach_the_trainer(tmp_path, capsys):
    pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
    out, tb = tmp_path / "run", tmp_path / "tb"
    code, stdout, err = train_tiny(out, capsys, "--epochs", 2, "--schedule", "cosine",
                                   "--warmup", 1, "--augment", "shift:1", "--val-split", 0.2,
                                   "--patience", 2, "--tensorboard", tb)
    assert code == 0, err
    cfg = json.loads((out / "history.json").read_text())["config"]
    assert cfg["lr_schedule"]["name"] == "cosine" and cfg["lr_schedule"]["warmup"] == 1.0
    assert cfg["augment"] == "shift:1" and cfg["val_split"] == 0.2
    assert cfg["early_stopping"] == 2 and cfg["train_size"] == 160 and cfg["val_size"] == 40
    h = json.loads((out / "history.json").read_text())
    assert len(h["val_acc"]) == 2 and h["best_epoch"] in (1, 2)
    assert [f.name for f in tb.iterdir()][0].startswith("events.out.tfevents")
    assert str(out / "history.csv") in stdout
    # a resume takes them from the checkpoint
    code, _, err = run(["train", "--resume", out / "checkpoints", "--epochs", 3, "--quiet"],
                       capsys)
    assert code == 0, err
    cfg = json.loads((out / "history.json").read_text())["config"]
    assert cfg["lr_schedule"]["name"] == "cosine" and cfg["augment"] == "shift:1"
    assert cfg["val_split"] == 0.2 and cfg["epochs"] == 3


def test_compile_flag_asks_for_a_compiled_step(tmp_path, capsys, monkeypatch):
    from xpnet.compile import compile_step
    calls = []

    def recording(net, optimizer, *a, **k):
        calls.append(type(net).__name__)
        return compile_step(net, optimizer, *a, **k)
    monkeypatch.setattr(xpnet, "compile_step", recording, raising=False)
    code, _, err = train_tiny(tmp_path, capsys, "--model", "two_layer", "--compile", "--quiet")
    assert code == 0, err
    assert calls and calls[0] == "TwoLayerNet"


@pytest.mark.parametrize("extra, message", [
    (["--patience", 2], "early_stopping=2 needs a validation split"),
    (["--model", "mlp", "--augment", "shift:2"], "needs images shaped (N, C, H, W)"),
    (["--augment", "wobble:3"], "unknown operation 'wobble'"),
])
def test_trainer_options_that_dont_fit_are_one_line(tmp_path, capsys, extra, message):
    code, _, err = train_tiny(tmp_path, capsys, *extra)
    one_line_error(code, err, message)


@pytest.mark.parametrize("argv, valid", [
    (["train", "--val-split", "1.5"], "argument --val-split: expected a fraction between 0 and 1"),
    (["train", "--schedule", "zigzag"], "'constant', 'step', "),
    (["train", "--warmup", "-1"], "argument --warmup: expected a number >= 0"),
])
def test_trainer_option_values_exit_2(argv, valid, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    assert ei.value.code == 2 and valid in capsys.readouterr().err
