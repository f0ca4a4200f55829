"""Data-parallel training over MPI (xpnet/distributed.py, Trainer(comm=...), `mpiexec -n 2
xpnet train`).

The multi-process tests start ``mpiexec -n 2`` in a subprocess, with a timeout, on this
very file: its ``__main__`` part holds the workers (``python tests/test_distributed.py
equivalence OUT``). They skip, saying why, when mpi4py or mpiexec is missing
(``pip install -e ".[mpi]"``). Every rank runs with one BLAS and one xpnet thread.
``mpiexec -n 2 python tests/test_distributed.py measure`` prints the figures of
docs/distributed.md.
"""
import collections
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import xpnet
from xpnet import distributed

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"     # the mpich wheel's, in the venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _mpi_missing():
    if importlib.util.find_spec("mpi4py") is None:      # looked up, not imported
        return 'mpi4py is not installed (pip install -e ".[mpi]")'
    if _mpiexec() is None:
        return 'no mpiexec found (pip install -e ".[mpi]" brings MPICH\'s)'
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def _env(**extra):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               XPNET_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
               XPNET_DIST_TIMEOUT="20", XPNET_DEVICE="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def _run(cmd, timeout, env=None, cwd=None):
    """Run `cmd` in its own process group; on timeout the whole group is killed (so no
    rank outlives the test). Returns (returncode, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env or _env(), cwd=cwd or ROOT, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("%s ran past %d s\nstdout:\n%s\nstderr:\n%s"
                    % (" ".join(cmd), timeout, out[-3000:], err[-3000:]))
    return p.returncode, out, err, time.monotonic() - t0


def _mpirun(n, args, timeout=60, env=None):
    return _run([_mpiexec(), "-n", str(n), sys.executable] + list(args), timeout, env)


# ---------------------------------------------------------------------- no MPI needed

def _fake(rank=0, size=1, local_rank=0, local_size=1):
    """A communicator of one rank, in this process: collectives are the identity."""
    return SimpleNamespace(rank=rank, size=size, local_rank=local_rank, local_size=local_size,
                           allgather=lambda buf, what="": buf[None, ...].copy(),
                           allreduce=lambda buf, what="": buf)


def test_launched_size_reads_the_launchers_variables():
    assert distributed.launched_size({}) is None
    assert distributed.launched_size({"PMI_SIZE": "4"}) == 4            # MPICH, Slurm PMI-2
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert distributed.launched_size({"PMIX_RANK": "0"}) == 0           # launched, size unknown
    assert distributed.launched_size({"SLURM_NTASKS": "8"}) is None     # no launcher, no MPI


def test_shards_cover_the_batch_and_differ_by_at_most_one():
    for n in (1, 7, 8, 100, 101):
        for size in (1, 2, 3, 8):
            parts = [distributed.shard(n, _fake(r, size)) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(h - l for l, h in parts) - min(h - l for l, h in parts) <= 1
    lo, hi, share = distributed.batch_slice(100, 150, _fake(1, 2))
    assert (lo, hi, share) == (125, 150, 0.5)


def test_batch_size_and_world_size_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"--batch-size=75 is the global batch, split over the "
                                         r"2 ranks, so it must be a multiple of 2; use 74 or 76"):
        distributed.check_batch(75, 1000, False, _fake(0, 2), "--batch-size")
    with pytest.raises(ValueError, match="the last batch of each epoch has 1 sample"):
        distributed.check_batch(4, 9, False, _fake(0, 2))
    distributed.check_batch(4, 9, True, _fake(0, 2))     # dropped: fine
    distributed.check_batch(100, 4000, False, _fake(0, 4))


def test_fewer_gpus_than_local_ranks_is_a_clear_error():
    gpu = xpnet.Device("gpu", 0)
    with pytest.raises(distributed.DistributedError,
                       match=r"4 ranks run on this host but it has 2 GPUs.*mpiexec -ppn 2"):
        distributed.device_for_rank(gpu, _fake(0, 4, 0, 4), gpu_count=2)
    assert distributed.device_for_rank(gpu, _fake(3, 4, 1, 2), gpu_count=2) == \
        xpnet.Device("gpu", 1)
    assert distributed.device_for_rank(xpnet.CPU, _fake(0, 4, 0, 4)) == xpnet.CPU


def test_mpi4py_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)     # `import mpi4py` fails
    monkeypatch.setattr(distributed.launch, "_world", None)
    with pytest.raises(distributed.DistributedError, match=r'pip install -e "\.\[mpi\]"'):
        distributed.init()


def test_cli_under_a_launcher_without_mpi4py_says_so(tmp_path):
    shim = tmp_path / "shim" / "mpi4py"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named mpi4py (test)')\n")
    env = _env(PMI_SIZE="2", PMI_RANK="0")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "shim"), env["PYTHONPATH"]])
    code, out, err, _ = _run([sys.executable, "-m", "xpnet", "train", "--dataset",
                              "mnist-sample", "--out", str(tmp_path / "run")], 60, env)
    assert code == 1, err
    assert "started by an MPI launcher as one of 2" in err
    assert 'pip install -e ".[mpi]"' in err
    assert not (tmp_path / "run").exists()


def test_rank_seeds_differ_per_rank_and_repeat():
    seeds = [distributed.rank_seed(7, r) for r in range(4)]
    assert len(set(seeds)) == 4 and seeds == [distributed.rank_seed(7, r) for r in range(4)]


def test_chan_combination_is_the_global_mean_and_variance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 5)) * 3 + 10
    rows = []
    for part in np.array_split(x, 3):
        mu = part.mean(axis=0)
        rows.append(np.concatenate([[len(part)], mu, ((part - mu) ** 2).sum(axis=0)]))
    from xpnet.sync_batchnorm import _combine
    n, mean, sq = _combine(np.array(rows), 5)
    assert n == 11
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sq / n, x.var(axis=0), rtol=1e-12)


def test_sync_batchnorm_on_one_rank_is_batchnorm():
    """The synchronized layer's forward, backward and running statistics equal
    BatchNormalization's when it is alone (the 2-rank case is in the equivalence test)."""
    rng = np.random.default_rng(1)
    for shape in ((6, 4), (3, 4, 5, 5)):
        x = rng.standard_normal(shape)
        dout = rng.standard_normal(shape)
        g, b = rng.standard_normal(4), rng.standard_normal(4)
        bn = xpnet.BatchNormalization(g.copy(), b.copy())
        sb = distributed.SyncBatchNormalization(g.copy(), b.copy(), _fake())
        np.testing.assert_allclose(sb.forward(x, True), bn.forward(x, True), rtol=1e-12,
                                   atol=1e-13)
        np.testing.assert_allclose(sb.backward(dout), bn.backward(dout), rtol=1e-10, atol=1e-12)
        for k in ("gamma", "beta"):
            np.testing.assert_allclose(sb.grads[k], bn.grads[k], rtol=1e-12)
        for k in ("running_mean", "running_var"):
            np.testing.assert_allclose(sb.buffers[k], bn.buffers[k], rtol=1e-12)
        np.testing.assert_allclose(sb.forward(x, False), bn.forward(x, False), rtol=1e-12)


def test_sync_batchnorm_keeps_the_nets_names_and_views():
    net = xpnet.MultiLayerNetExtend(8, [6, 6], 3, use_batchnorm=True, dtype="float64", seed=0)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    assert distributed.sync_batchnorm(net, _fake()) == 2
    assert distributed.sync_batchnorm(net, _fake()) == 0
    assert sum(isinstance(l, distributed.SyncBatchNormalization) for l in net.layers) == 2
    assert sorted(net.state_dict()) == sorted(before)
    net.params["gamma1"][...] = 2.0
    assert float(net.layers[1].params["gamma"][0]) == 2.0


def _read_only(arrays):
    for a in arrays:
        a.flags.writeable = False    # an in-place write raises, as on an immutable library


def test_sync_batchnorm_rebinds_its_running_statistics():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4))
    sb = distributed.SyncBatchNormalization(np.ones(4), np.zeros(4), _fake())
    bn = xpnet.BatchNormalization(np.ones(4), np.zeros(4))
    _read_only(list(sb.buffers.values()))
    old = dict(sb.buffers)
    sb.forward(x, True)
    bn.forward(x, True)
    for k in ("running_mean", "running_var"):
        assert sb.buffers[k] is not old[k]
        np.testing.assert_array_equal(sb.buffers[k], bn.buffers[k])   # BatchNorm's own rule


def test_broadcast_and_buffer_averaging_rebind_the_nets_arrays():
    root = xpnet.MultiLayerNetExtend(8, [6], 3, use_batchnorm=True, dtype="float64", seed=0)
    net = xpnet.MultiLayerNetExtend(8, [6], 3, use_batchnorm=True, dtype="float64", seed=1)
    for name, a in root.buffers.items():
        root.load_state_dict({name: a + 1.0}, strict=False)
    want = root.state_dict()

    def bcast(buf, r=0, what=""):
        buf[...] = distributed.optimizer._pack(
            [a for _, a in distributed.optimizer._state_arrays(root)], buf.dtype)
        return buf
    comm = SimpleNamespace(rank=1, size=2, bcast=bcast,
                           allgather_object=lambda obj, what="": [obj, obj],
                           allreduce=lambda buf, what="": np.multiply(buf, 2, out=buf))
    _read_only([*net.params.values(), *net.buffers.values()])
    distributed.broadcast_params(net, comm)
    got = net.state_dict()
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    _read_only(net.buffers.values())
    assert distributed.average_buffers(net, comm) == 2      # both ranks hold the same: kept
    for k, a in net.buffers.items():
        np.testing.assert_array_equal(a, want[k])


def test_distributed_optimizer_on_one_rank_is_the_optimizer():
    comm = SimpleNamespace(rank=0, size=1, allreduce=lambda buf, what="": buf,
                           allgather_object=lambda obj, what="": [obj])
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((10, 8)), rng.integers(0, 3, 10)
    a = xpnet.MultiLayerNet(8, [5], 3, dtype="float64", seed=0)
    b = xpnet.MultiLayerNet(8, [5], 3, dtype="float64", seed=0)
    opt = distributed.DistributedOptimizer(xpnet.Adam(lr=0.01), comm)
    ref = xpnet.Adam(lr=0.01)
    for _ in range(3):
        sums = opt.update(a.params, a.gradient(x, t), extras=(1.5, 2.0))
        ref.update(b.params, b.gradient(x, t))
    assert sums == [1.5, 2.0]
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert opt.stats["bytes"] == 8 * (8 * 5 + 5 + 5 * 3 + 3 + 2) and opt.t == 3
    assert opt.state_dict()["type"] == "Adam"


# ---------------------------------------------------------------------- under mpiexec

@needs_mpi
def test_two_ranks_with_half_batches_equal_one_process_with_the_whole(tmp_path):
    """float64, dropout off, 5 steps of a global batch of 8 (4 per rank), through the
    Trainer; rank 1 starts from other weights (broadcast_params must fix that)."""
    out = tmp_path / "equivalence.json"
    code, stdout, err, secs = _mpirun(2, [str(HERE), "equivalence", str(out)], timeout=120)
    assert code == 0, err[-4000:]
    results = json.loads(out.read_text())
    nccl = results.pop("nccl")
    assert not nccl["communicator"] and nccl["why"].startswith("rank 0: ") and nccl["cached"]
    assert len(nccl["warnings"]) == 1 and "not NCCL, because rank 0: " in nccl["warnings"][0]
    assert sorted(results) == ["bn_sync", "deep_conv", "mlp", "simple_conv"]
    for name, r in results.items():
        assert r["trained"], name
        assert r["max_param_diff"] < 1e-10, (name, r)
        assert r["max_loss_diff"] < 1e-10, (name, r)
        assert r["test_acc"][0] == r["test_acc"][1], (name, r)
        assert r["steps"] == 5
        # one all-reduce per step; synchronized BatchNorm adds one per BN layer (backward)
        assert r["allreduces_per_step"] == 1 + r["sync_bn_layers"], (name, r)
        assert r["rank1_started_elsewhere"], name


def _cli(n, out, *extra, timeout=90, plots=False):
    args = ["-m", "xpnet", "train", "--dataset", "mnist-sample", "--no-download",
            "--limit", "400", "--batch-size", "50", "--dtype", "float64", "--lr", "0.002",
            "--out", str(out)] + [str(e) for e in extra]
    env = _env()
    if not plots:   # matplotlib's import and drawing take longer than the training here
        shim = out.parent / "no-matplotlib" / "matplotlib"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "__init__.py").write_text("raise ImportError('disabled for speed')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(shim.parent), env["PYTHONPATH"]])
    if n == 1:
        return _run([sys.executable] + args, timeout, env)
    return _mpirun(n, args, timeout, env)


def _params(folder):
    with np.load(folder / "params.npz") as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}


@pytest.fixture(scope="module")
def one_epoch_runs(tmp_path_factory):
    """`xpnet train --epochs 1` on 1 process and on 2 ranks (400 sample images, float64)."""
    if _mpi_missing():
        pytest.skip(_mpi_missing())
    base = tmp_path_factory.mktemp("runs")
    runs = {}
    for n in (1, 2):
        code, out, err, secs = _cli(n, base / ("one-%d" % n), "--epochs", 1, plots=(n == 2))
        assert code == 0, err[-4000:]
        runs[n] = SimpleNamespace(folder=base / ("one-%d" % n), stdout=out, stderr=err,
                                  seconds=secs)
    return base, runs


@needs_mpi
def test_cli_two_ranks_write_one_set_of_files_and_match_one_process(one_epoch_runs):
    base, runs = one_epoch_runs
    two, one = runs[2], runs[1]
    files = sorted(str(p.relative_to(two.folder)) for p in two.folder.rglob("*"))
    assert files == [".xpnet.lock", "checkpoints", "checkpoints/.xpnet.lock",
                     "checkpoints/checkpoint.json", "checkpoints/checkpoint.npz", "curves.png",
                     "filters.png", "filters_init.npz", "history.csv", "history.json",
                     "params.json", "params.npz"], files
    assert two.stdout.count("final test accuracy") == 1      # rank 0 alone reports
    assert "(rank 0 of 2)" in two.stdout
    h2 = json.loads((two.folder / "history.json").read_text())
    h1 = json.loads((one.folder / "history.json").read_text())
    assert h2["config"]["run_info"]["ranks"] == 2
    assert abs(h2["final_test_acc"] - h1["final_test_acc"]) <= 0.01
    p1, p2 = _params(one.folder), _params(two.folder)
    assert max(float(np.max(np.abs(p1[k] - p2[k]))) for k in p1) < 1e-10


@needs_mpi
@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_resume_with_another_number_of_ranks(one_epoch_runs, first, then, tmp_path):
    """A checkpoint written by `first` ranks, resumed on `then`, gives the parameters of an
    uninterrupted 2-epoch run (float64, no dropout)."""
    base, runs = one_epoch_runs
    ref = base / "straight"
    if not (ref / "params.npz").exists():
        code, _, err, _ = _cli(1, ref, "--epochs", 2)
        assert code == 0, err[-4000:]
    folder = tmp_path / "resumed"
    shutil.copytree(runs[first].folder, folder)
    code, out, err, _ = _cli(then, folder, "--epochs", 2, "--resume", folder / "checkpoints")
    assert code == 0, err[-4000:]
    assert out.count("resumed from") == 1
    h = json.loads((folder / "history.json").read_text())
    assert h["epochs_done"] == 2 and len(h["test_acc"]) == 2
    p, r = _params(folder), _params(ref)
    assert max(float(np.max(np.abs(p[k] - r[k]))) for k in r) < 1e-10


@needs_mpi
def test_cli_world_size_not_dividing_the_batch(tmp_path):
    code, out, err, secs = _cli(2, tmp_path / "run", "--batch-size", 75, "--epochs", 1)
    assert code != 0
    assert "--batch-size=75 is the global batch, split over the 2 ranks" in err
    assert not (tmp_path / "run" / "params.npz").exists()


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "kill", "hang"])
def test_a_failing_rank_ends_the_job(how):
    """Rank 1 raises, is killed with SIGKILL, or stops answering (sleeps) at step 3;
    rank 0 is then waiting in the gradient all-reduce. The job must end in 30 s."""
    env = _env(XPNET_DIST_TIMEOUT="3")
    code, out, err, secs = _mpirun(2, [str(HERE), "fail", how], timeout=60, env=env)
    assert code != 0
    assert secs < 30, secs
    assert "finished" not in out
    if how == "raise":
        assert "RuntimeError: rank 1 fails on purpose" in err
        assert "rank 1 of 2 raised RuntimeError; aborting the job" in err
    if how == "hang":
        assert "rank 0 of 2 waited more than 3 s in the gradient all-reduce" in err


@needs_mpi
def test_two_ranks_each_on_its_own_array_api_strict_device(tmp_path):
    pytest.importorskip("array_api_strict")
    out = tmp_path / "ranks.json"
    code, _, err, _ = _mpirun(2, [str(HERE), "rank_devices", str(out)], timeout=120)
    assert code == 0, err[-4000:]
    r0, r1 = json.loads(out.read_text())
    assert [r0["device"], r1["device"]] == ["array-api-strict:device1",
                                            "array-api-strict:device2"]
    assert r0["params_on_device"] and r1["params_on_device"]
    assert r0["params"] == r1["params"]          # one model, trained on two devices
    assert r0["loss"][1] < r0["loss"][0]


# ---------------------------------------------------------------------- the workers

class _Counting:
    """Wraps an mpi4py communicator and counts the calls of each method."""

    def __init__(self, mpi):
        self._mpi, self.calls = mpi, collections.Counter()

    def __getattr__(self, name):
        f = getattr(self._mpi, name)
        if not callable(f):
            return f

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return f(*args, **kwargs)
        return counted


def _equivalence_nets():
    rng = np.random.default_rng(5)
    flat = rng.standard_normal((40, 36))
    small = rng.standard_normal((40, 1, 8, 8))
    image = rng.standard_normal((40, 1, 16, 16))
    t = rng.integers(0, 4, 40)
    f64 = {"dtype": "float64"}
    return {
        "mlp": (lambda s: xpnet.MultiLayerNet(36, [12, 12], 4, seed=s, **f64), flat, t,
                "Momentum", {"lr": 0.05}),
        "simple_conv": (lambda s: xpnet.SimpleConvNet(
            (1, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1}, 10, 4,
            weight_init_std=0.1, seed=s, **f64), small, t, "Adam", {"lr": 0.01}),
        "deep_conv": (lambda s: xpnet.DeepConvNet((1, 16, 16), hidden_size=10, output_size=4,
                                                  dropout_ratio=0.0, seed=s, **f64),
                      image, t, "SGD", {"lr": 0.05}),
        "bn_sync": (lambda s: xpnet.MultiLayerNetExtend(36, [12, 12], 4, use_batchnorm=True,
                                                        seed=s, **f64),
                    flat, t, "Adam", {"lr": 0.01}),
    }


def _worker_equivalence(out_path):
    from xpnet.trainer import Trainer
    comm = distributed.init()
    counting = _Counting(comm.mpi)
    comm.mpi = counting
    results = {}
    for name, (build, x, t, opt, hyper) in _equivalence_nets().items():
        net = build(0 if comm.rank == 0 else 1)
        w1 = xpnet.asnumpy(net.params["W1"]).copy()
        n_sync = distributed.sync_batchnorm(net, comm) if name == "bn_sync" else 0
        per_step = []

        def count(tr):
            per_step.append(counting.calls["Allreduce"])
        tr = Trainer(net, x, t, x, t, epochs=1, mini_batch_size=8, optimizer=opt,
                     optimizer_param=dict(hyper), seed=3, verbose=False, comm=comm,
                     on_step=count)
        first = counting.calls["Allreduce"]
        tr.train()
        steps = np.diff([first] + per_step)
        started = comm.allgather_object(w1)
        if comm.rank != 0:
            continue
        ref = build(0)
        rt = Trainer(ref, x, t, x, t, epochs=1, mini_batch_size=8, optimizer=opt,
                     optimizer_param=dict(hyper), seed=3, verbose=False)
        rt.train()
        a, b = ref.state_dict(), net.state_dict()
        results[name] = {
            "max_param_diff": max(float(np.max(np.abs(a[k] - b[k]))) for k in a),
            "max_loss_diff": float(np.max(np.abs(np.subtract(tr.train_loss_list,
                                                             rt.train_loss_list)))),
            "test_acc": [tr.test_acc_list[-1], rt.test_acc_list[-1]],
            "steps": len(tr.train_loss_list),
            "allreduces_per_step": sorted(set(int(v) for v in steps)) == [1 + n_sync] and
            1 + n_sync,
            "sync_bn_layers": n_sync,
            "rank1_started_elsewhere": bool(np.max(np.abs(started[0] - started[1])) > 0),
            "trained": bool(np.max(np.abs(b["W1"] - started[0])) > 1e-4),
        }
    # No GPU here: the ranks must agree to use MPI, and rank 0 alone say why, once.
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, again = comm.nccl(0), comm.nccl(0)
    said = [str(w.message) for w in caught if issubclass(w.category,
                                                          distributed.DistributedWarning)]
    if comm.rank == 0:
        results["nccl"] = {"communicator": first[0] is not None, "why": first[1],
                           "cached": again == first, "warnings": said}
        Path(out_path).write_text(json.dumps(results, indent=1))


def _worker_fail(how):
    from xpnet.trainer import Trainer
    comm = distributed.init()
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((400, 20)), rng.integers(0, 3, 400)

    def on_step(tr):
        if comm.rank == 1 and tr.current_iter == 3:
            if how == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(120)     # "hang": alive, but never joins the next all-reduce
    net = xpnet.MultiLayerNet(20, [10], 3, seed=0)
    Trainer(net, x, t, x, t, epochs=50, mini_batch_size=20, seed=0, verbose=False,
            comm=comm, on_step=on_step).train()
    print("finished")


def _worker_measure():
    """Images per second of a training step and the gradient all-reduce's time and size,
    per net (float32, global batch 100, one BLAS/xpnet thread per rank). JSON on stdout."""
    comm = distributed.init()
    nets = {
        "MultiLayerNet 784-100x5-10": lambda: xpnet.MultiLayerNet(784, [100] * 5, 10, seed=0),
        "MultiLayerNetExtend BN 784-100x3-10": lambda: xpnet.MultiLayerNetExtend(
            784, [100] * 3, 10, use_batchnorm=True, seed=0),
        "SimpleConvNet": lambda: xpnet.SimpleConvNet(seed=0),
        "DeepConvNet": lambda: xpnet.DeepConvNet(seed=0),
    }
    rng = np.random.default_rng(0)
    x = rng.random((1000, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, 1000)
    batch, report = 100, {}
    for name, build in nets.items():
        net = build()
        xx = x.reshape(1000, -1) if "MultiLayer" in name else x
        if "BN" in name:
            distributed.sync_batchnorm(net, comm)
        opt = distributed.DistributedOptimizer(xpnet.SGD(lr=0.01), comm)
        steps = 10 if "Deep" in name else 30
        best = float("inf")
        for window in range(6):     # the first warms up; the best of the others counts
            comm.barrier()
            t0 = time.perf_counter()
            for i in range(steps):
                lo = (i * batch) % 1000
                a, b, share = distributed.batch_slice(lo, lo + batch, comm)
                opt.update(net.params, net.gradient(xx[a:b], t[a:b]), share=share)
            comm.barrier()
            if window:
                best = min(best, time.perf_counter() - t0)
        secs = best
        # the all-reduce alone, ranks lined up by a barrier first
        buf = np.zeros(opt.stats["bytes"] // 4, dtype=np.float32)
        times = []
        for _ in range(50):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce(buf)
            times.append(time.perf_counter() - t0)
        report[name] = {"ranks": comm.size, "images_per_s": steps * batch / secs,
                        "step_ms": 1000 * secs / steps, "bytes": opt.stats["bytes"],
                        "allreduce_ms_median": 1000 * float(np.median(times)),
                        "allreduce_ms_min": 1000 * float(np.min(times))}
    if comm.rank == 0:
        print(json.dumps(report, indent=1))


def _worker_rank_devices(out_path):
    """Each rank on its own array-api-strict device (device_for_rank), trained together."""
    from xpnet.trainer import Trainer
    comm = distributed.init()
    dev = distributed.device_for_rank(xpnet.get_device("array-api-strict"), comm)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    t = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    net = xpnet.MultiLayerNet(8, [6], 3, dtype="float32", device=dev, seed=comm.rank)
    tr = Trainer(net, x[:32], t[:32], x[32:], t[32:], epochs=3, mini_batch_size=8,
                 optimizer="Adam", optimizer_param={"lr": 0.05}, seed=0, verbose=False,
                 comm=comm)
    tr.train()
    mine = {"device": str(dev), "params_on_device": all(
                xpnet.device_of(v) == dev for v in net.params.values()),
            "params": {k: xpnet.asnumpy(v).tolist() for k, v in net.params.items()},
            "loss": [tr.train_loss_list[0], tr.train_loss_list[-1]]}
    everyone = comm.allgather_object(mine)
    if comm.rank == 0:
        Path(out_path).write_text(json.dumps(everyone))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "rank_devices":
        _worker_rank_devices(sys.argv[2])
        sys.exit(0)
    if mode == "equivalence":
        _worker_equivalence(sys.argv[2])
    elif mode == "fail":
        _worker_fail(sys.argv[2])
    elif mode == "measure":
        _worker_measure()
    else:
        raise SystemExit("unknown mode %r" % mode)
