"""Trainer options of issue 23: learning-rate schedules, augmentation, the validation
split with best-epoch keeping and early stopping, CSV and TensorBoard logs, the step
object (compiled steps through a test double), and exact resumes of all of them,
also after ``kill -9``."""
import copy
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet.serialization import load_arrays
from xpnet.trainer import Trainer, schedules
from xpnet.trainer import augment as A

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_images(n=300, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, 1, 8, 8)).astype(np.float32)
    t = (x.reshape(n + n_test, -1) @ rng.standard_normal((64, 3))).argmax(axis=1)
    return x[:n], t[:n], x[n:], t[n:]


def conv_net(seed=0, device=None):
    return xpnet.SimpleConvNet(input_dim=(1, 8, 8), conv_param={
        "filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}, hidden_size=16,
        output_size=3, weight_init_std=0.1, seed=seed, device=device)


def params_of(net):
    return {k: xpnet.asnumpy(v).copy() for k, v in net.params.items()}


def same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


OPTIONS = dict(epochs=6, mini_batch_size=50, optimizer="Adam", optimizer_param={"lr": 0.01},
               seed=1, verbose=False, lr_schedule="cosine", augment="shift:1,erase:0.3,rotate:10",
               val_split=0.2, early_stopping=3)


# ---------------------------------------------------------------- schedules

def test_schedule_values():
    def lrs(name, steps, **kw):
        s = schedules.from_spec(name, **kw).bind(1.0, 10, 100)
        return [s.lr(i) for i in steps]
    assert lrs("step", [0, 19, 20, 39, 40], step_size=2, gamma=0.5) == [1, 1, .5, .5, .25]
    assert lrs("multistep", [9, 10, 49, 50], milestones=[1, 5]) == pytest.approx(
        [1, .1, .1, .01])
    assert lrs("exponential", [0, 10, 25], gamma=0.5) == [1, .5, .25]
    c = lrs("cosine", [0, 9, 10, 55, 99], warmup=1)
    assert c[:3] == pytest.approx([0.1, 1.0, 1.0]) and c[3] == pytest.approx(0.5)
    assert 0 < c[4] < 1e-3
    o = lrs("onecycle", [0, 30, 99])
    assert o == pytest.approx([1 / 25, 1.0, 1 / 25e4], rel=1e-2)
    assert lrs("step", [0, 4, 9, 10], step_size=1, gamma=0.5, warmup=1) == pytest.approx(
        [0.1, 0.5, 1.0, 0.5])


def test_plateau_and_its_state():
    s = schedules.from_spec("plateau", factor=0.5, patience=1).bind(1.0, 10, 100)
    for acc in (0.5, 0.6, 0.6, 0.6, 0.6, 0.6):
        s.epoch_end(acc, True)
    assert s.lr(0) == 0.25          # two plateaus of patience + 1 epochs
    t = schedules.from_spec("plateau", factor=0.5, patience=1).bind(0.3, 1, 1)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.lr(0) == 0.25 and t.bad_epochs == s.bad_epochs and t.best == s.best
    with pytest.raises(ValueError, match=r"was written by the schedule plateau\(.*factor=0.5"):
        schedules.from_spec("plateau").bind(1, 1, 1).load_state_dict(s.state_dict())


def test_schedule_errors_name_the_argument():
    with pytest.raises(ValueError, match="unknown name 'cos'; choose one of constant, step"):
        schedules.from_spec("cos")
    with pytest.raises(TypeError, match="lr schedule cosine: unknown argument gamma; it takes "
                                        "min_lr, warmup"):
        schedules.from_spec("cosine", gamma=0.1)
    with pytest.raises(ValueError, match="lr schedule step: gamma must be a number > 0"):
        schedules.from_spec("step", gamma=0)
    with pytest.raises(TypeError, match="lr_schedule must be a name"):
        Trainer(conv_net(), *make_images(), lr_schedule=3, verbose=False)


def test_trainer_sets_the_scheduled_lr_before_every_step_and_records_it():
    seen = []
    net = conv_net()
    tr = Trainer(net, *make_images(), epochs=2, mini_batch_size=100, optimizer="SGD",
                 optimizer_param={"lr": 0.1}, verbose=False,
                 lr_schedule=schedules.from_spec("step", step_size=1, gamma=0.5, warmup=0.5))
    orig = net.gradient
    net.gradient = lambda x, t: (seen.append(tr.optimizer.lr), orig(x, t))[1]
    h = tr.train()
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.05, 0.05, 0.05])
    assert h["lr"] == seen and h["config"]["lr_schedule"]["name"] == "step"


# ---------------------------------------------------------------- augmentation

class FixedDraws(A.Augment):
    """Test double: chosen per-image parameters instead of random ones."""

    def __init__(self, params, **kw):
        super().__init__(**kw)
        self.params = np.asarray(params, dtype=np.float32)

    def draw(self, rng, n, h, w):
        return self.params


def _row(dy=0, dx=0, deg=0, flip=0, box=(0, 0, 0, 0)):
    a = np.deg2rad(deg)
    return [dy, dx, np.cos(a), np.sin(a), flip, *box]


def test_augment_ops_on_every_backend(backend):
    x = np.arange(2 * 2 * 5 * 5, dtype=np.float32).reshape(2, 2, 5, 5) + 1
    xd = backend.asarray(x)

    def run(params, **kw):
        out = FixedDraws(params, **kw)(xd, None)
        assert xpnet.device_of(out) == xpnet.device_of(xd)
        return xpnet.asnumpy(out)
    shifted = np.zeros_like(x)
    shifted[0, :, 1:, :] = x[0, :, :-1, :]          # down by 1
    shifted[1, :, :, :-2] = x[1, :, :, 2:]          # left by 2
    np.testing.assert_array_equal(run([_row(1, 0), _row(0, -2)], shift=2), shifted)
    np.testing.assert_array_equal(run([_row(flip=1), _row()], flip=True),
                                  np.stack([x[0, :, :, ::-1], x[1]]))
    np.testing.assert_array_equal(run([_row(deg=90), _row(deg=-90)], rotate=90),
                                  np.stack([np.rot90(x[0], 1, (1, 2)),
                                            np.rot90(x[1], -1, (1, 2))]))
    erased = x.copy()
    erased[1, :, 1:3, 2:5] = 0
    np.testing.assert_array_equal(run([_row(), _row(box=(1, 3, 2, 5))], erase=1.0), erased)


def test_augment_draws_are_seeded_and_split_across_ranks():
    x = make_images()[0][:20]
    aug = A.from_spec("shift:2,flip,erase:0.5,rotate:10")
    a = aug(x, np.random.default_rng(7))
    b = aug(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, aug(x, np.random.default_rng(8)))
    # a rank taking rows 10:20 of the global batch gets those rows' draws
    part = aug(x[10:], np.random.default_rng(7), total=20, offset=10)
    np.testing.assert_array_equal(part, a[10:])


def test_augment_spec_errors():
    assert A.from_spec("crop:4,flip").spec == "shift:4,flip" and A.from_spec("") is None
    for spec, msg in [("shift", "shift needs a value, as in shift:2"),
                      ("blur:2", "unknown operation 'blur'"), ("flip,flip", "flip is given twice"),
                      ("shift:1.5", "shift:1.5 is not a whole number of pixels"),
                      ("erase:2", "erase must be a probability in \\[0, 1\\], got 2.0")]:
        with pytest.raises(ValueError, match=msg):
            A.from_spec(spec)
    x, t, xt, tt = make_images()
    with pytest.raises(ValueError, match=r"augment='shift:2' needs images shaped \(N, C, H, W\); "
                                         r"x_train has shape \(300, 64\)"):
        Trainer(xpnet.TwoLayerNet(64, 8, 3), x.reshape(300, -1), t, xt.reshape(100, -1), tt,
                augment="shift:2", verbose=False)


# ---------------------------------------------------------------- validation split, best epoch

def test_val_split_is_held_out_the_same_way_every_time():
    x, t, xt, tt = make_images()
    a = Trainer(conv_net(), x, t, xt, tt, val_split=0.2, seed=0, verbose=False)
    b = Trainer(conv_net(), x, t, xt, tt, val_split=0.2, seed=5, verbose=False)
    assert a.train_size == 240 and a.val_size == 60
    np.testing.assert_array_equal(a.x_val, b.x_val)
    rows = {r.tobytes() for r in x}
    held = {r.tobytes() for r in a.x_val}
    kept = {r.tobytes() for r in a.x_train}
    assert held | kept == rows and not held & kept
    with pytest.raises(ValueError, match="val_split must be a fraction in \\[0, 1\\), got 1"):
        Trainer(conv_net(), x, t, xt, tt, val_split=1, verbose=False)
    with pytest.raises(ValueError, match="early_stopping=2 needs a validation split"):
        Trainer(conv_net(), x, t, xt, tt, early_stopping=2, verbose=False)


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    at_epoch = {}
    net = conv_net()
    # a learning rate this small never changes the validation accuracy: epoch 1 stays best
    tr = Trainer(net, *make_images(), epochs=10, mini_batch_size=100, optimizer="SGD",
                 optimizer_param={"lr": 1e-9}, val_split=0.2, early_stopping=2, seed=0,
                 verbose=False, checkpoint_dir=tmp_path,
                 on_epoch=lambda tr: at_epoch.setdefault(tr.current_epoch, params_of(net)))
    h = tr.train()
    assert h["stopped_early_at"] == 3 and h["best_epoch"] == 1 and len(h["test_acc"]) == 3
    assert h["status"] == "completed" and h["final_test_acc"] == h["test_acc"][0]
    same_params(params_of(net), at_epoch[1])
    assert not all(np.array_equal(at_epoch[3][k], at_epoch[1][k]) for k in at_epoch[1])
    best, meta = load_arrays(tmp_path / "best.npz")
    assert meta["epoch"] == 1 and meta["val_acc"] == h["best_val_acc"]
    same_params({k: best[k] for k in at_epoch[1]}, at_epoch[1])
    # resuming a run that stopped early trains no further and keeps the best epoch
    net2 = conv_net(seed=3)
    h2 = Trainer(net2, *make_images(), epochs=10, mini_batch_size=100, optimizer="SGD",
                 optimizer_param={"lr": 1e-9}, val_split=0.2, early_stopping=2, seed=0,
                 verbose=False, resume=tmp_path).train()
    assert h2["stopped_early_at"] == 3 and len(h2["test_acc"]) == 3
    same_params(params_of(net2), at_epoch[1])


# ---------------------------------------------------------------- logs

def test_csv_log_follows_the_history(tmp_path):
    h = Trainer(conv_net(), *make_images(), epochs=2, mini_batch_size=100, verbose=False,
                val_split=0.1, checkpoint_dir=tmp_path).train()
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == ("epoch,step,lr,train_loss,train_acc,val_acc,test_acc,epoch_seconds,"
                        "step_seconds,eval_seconds")
    rows = [dict(zip(lines[0].split(","), ln.split(","))) for ln in lines[1:]]
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["step"] == "6"
    assert float(rows[1]["test_acc"]) == h["test_acc"][1]
    assert float(rows[0]["val_acc"]) == h["val_acc"][0]
    assert float(rows[0]["train_loss"]) == pytest.approx(np.mean(h["train_loss"][:3]))
    assert float(rows[0]["lr"]) == 0.01


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboardX")
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logdir = tmp_path / "tb"
    h = Trainer(conv_net(), *make_images(), epochs=2, mini_batch_size=100, verbose=False,
                lr_schedule="cosine", val_split=0.1, tensorboard=logdir,
                tensorboard_histograms=True).train()
    acc = ea.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 7))
    assert [e.value for e in loss] == pytest.approx(h["train_loss"], rel=1e-6)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx(h["lr"], rel=1e-6)
    test_acc = acc.Scalars("epoch/test_acc")
    assert [e.step for e in test_acc] == [3, 6]
    assert [e.value for e in test_acc] == pytest.approx(h["test_acc"], rel=1e-6)
    assert {"epoch/val_acc", "epoch/step_seconds"} <= set(tags["scalars"])
    assert {"weights/W1", "grads/W1", "weights/b3"} <= set(tags["histograms"])


# ---------------------------------------------------------------- the step object

class DeferredCompiledStep:
    """Test double for `xpnet.compile_step`: it trains its own copy of the net and
    optimizer and writes them back only on `sync()`, as a compiled step does, and it
    reads the learning rate from the trainer's optimizer at every call."""
    built = 0

    def __init__(self, net, optimizer):
        DeferredCompiledStep.built += 1
        self.net, self.optimizer = net, optimizer
        self.copy, self.opt = copy.deepcopy(net), copy.deepcopy(optimizer)

    def __call__(self, x, t):
        self.opt.lr = self.optimizer.lr
        grads = self.copy.gradient(x, t)
        self.opt.update(self.copy.params, grads)
        return float(self.copy.last_loss)

    def sync(self):
        self.net.load_state_dict(self.copy.state_dict())
        self.optimizer.load_state_dict(self.opt.state_dict())


def test_compiled_step_is_synced_before_evaluation_and_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(xpnet, "compile_step", DeferredCompiledStep, raising=False)
    kw = dict(OPTIONS, epochs=3, early_stopping=None)
    plain = conv_net()
    h1 = Trainer(plain, *make_images(), **kw).train()
    compiled = conv_net()
    DeferredCompiledStep.built = 0
    h2 = Trainer(compiled, *make_images(), compile=True, checkpoint_dir=tmp_path, **kw).train()
    assert h2["train_loss"] == h1["train_loss"] and h2["val_acc"] == h1["val_acc"]
    same_params(params_of(compiled), params_of(plain))
    assert DeferredCompiledStep.built == 1
    with pytest.raises(ValueError, match="compile=True can't be combined with comm="):
        Trainer(conv_net(), *make_images(), compile=True, comm=object(), verbose=False)


# ---------------------------------------------------------------- exact resumes

def test_ctrl_c_mid_epoch_and_resume_equal_one_run(tmp_path):
    whole = conv_net()
    h1 = Trainer(whole, *make_images(), **OPTIONS).train()

    def cut(tr):
        if tr.current_iter == 13:           # in the third epoch
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        Trainer(conv_net(), *make_images(), checkpoint_dir=tmp_path, on_step=cut,
                **OPTIONS).train()
    _, meta = load_arrays(tmp_path / "checkpoint.npz")
    assert meta["mid_epoch"] and meta["run_state"]["schedule"]["config"]["name"] == "cosine"
    resumed = conv_net(seed=9)
    h2 = Trainer(resumed, *make_images(), resume=tmp_path, **OPTIONS).train()
    for k in ("train_loss", "lr", "train_acc", "val_acc", "test_acc", "best_epoch",
              "stopped_early_at", "final_test_acc"):
        assert h2[k] == h1[k], k
    same_params(params_of(resumed), params_of(whole))
    with pytest.raises(ValueError, match="was written by the schedule cosine.*this Trainer's is "
                                         "step"):
        Trainer(conv_net(), *make_images(), resume=tmp_path,
                **dict(OPTIONS, lr_schedule="step"))
    with pytest.raises(ValueError, match="was written with augmentation; this Trainer has none"):
        Trainer(conv_net(), *make_images(), resume=tmp_path, **dict(OPTIONS, augment=None))


_CHILD = r"""
import os, signal, sys
sys.path.insert(0, os.environ["TEST_DIR"])
from test_training_options import OPTIONS, conv_net, make_images
from xpnet.trainer import Trainer
out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"

def on_step(tr):
    if tr.current_iter == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

net = conv_net()
Trainer(net, *make_images(), checkpoint_dir=out, on_step=on_step,
        resume=out if resume else None, **OPTIONS).train()
net.save_params(os.path.join(out, "params"))
"""


def test_kill_9_mid_run_and_resume_equal_one_run(tmp_path):
    env = dict(os.environ, TEST_DIR=os.path.join(ROOT, "tests"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def child(out, kill_at, mode="fresh"):
        return subprocess.run([sys.executable, "-c", _CHILD, str(out), str(kill_at), mode],
                              env=env, capture_output=True, text=True, timeout=300)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    r = child(whole, -1)
    assert r.returncode == 0, r.stderr
    r = child(cut, 13)                      # killed in the third epoch
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (cut / "params.npz").exists()
    _, meta = load_arrays(cut / "checkpoint.npz")
    assert meta["epoch"] == 2 and not meta["mid_epoch"]
    r = child(cut, -1, "resume")
    assert r.returncode == 0, r.stderr
    a, _ = load_arrays(whole / "params.npz")
    b, _ = load_arrays(cut / "params.npz")
    same_params(a, b)
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (whole, cut))
    for k in ("train_loss", "lr", "val_acc", "test_acc", "best_epoch", "stopped_early_at",
              "final_test_acc"):
        assert ha[k] == hb[k], k
    assert (cut / "history.csv").read_text().count("\n") == len(hb["test_acc"]) + 1


def test_curves_show_the_schedule_and_the_validation_split():
    pytest.importorskip("matplotlib")
    from xpnet import viz
    h = Trainer(conv_net(), *make_images(), **dict(OPTIONS, epochs=2)).train()
    fig = viz.plot_history(h)
    loss_ax, acc_ax, lr_ax = fig.axes
    assert list(lr_ax.lines[0].get_ydata()) == h["lr"]
    assert lr_ax.get_ylabel() == "learning rate"
    labels = [ln.get_label() for ln in acc_ax.lines]
    assert "validation" in labels and "best epoch" in labels


def test_tensorboard_without_tensorboardx_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"tensorboard= needs the tensorboardX package: "
                                          r"pip install 'xpnet\[tensorboard\]'"):
        Trainer(conv_net(), *make_images(), tensorboard=tmp_path, verbose=False)


def test_tensorboard_by_hand_steps_and_resume_purges(tmp_path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logdir = tmp_path / "tb"
    kw = dict(epochs=2, mini_batch_size=100, verbose=False, tensorboard=logdir, seed=0)
    tr = Trainer(conv_net(), *make_images(), checkpoint_dir=tmp_path, **kw)
    for _ in range(4):                  # by hand: one epoch and a step of the next
        tr.train_step()
    tr._tb.close()
    h = Trainer(conv_net(), *make_images(), resume=tmp_path, **kw).train()
    acc = ea.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")    # step 4 of the first writer is purged
    assert [e.step for e in loss] == list(range(1, 7))
    assert [e.value for e in loss] == pytest.approx(h["train_loss"], rel=1e-6)


def test_compile_true_with_xpnet_compile_step_equals_the_plain_step(tmp_path):
    pytest.importorskip("xpnet.compile")
    kw = dict(OPTIONS, epochs=3)
    plain = conv_net()
    h1 = Trainer(plain, *make_images(), **kw).train()
    compiled = conv_net()
    tr = Trainer(compiled, *make_images(), compile=True, checkpoint_dir=tmp_path, **kw)
    h2 = tr.train()
    assert h2["train_loss"] == h1["train_loss"] and h2["val_acc"] == h1["val_acc"]
    assert h2["lr"] == h1["lr"]
    same_params(params_of(compiled), params_of(plain))


def test_training_on_after_train_starts_from_the_last_epoch_not_the_best():
    kw = dict(OPTIONS, early_stopping=None, augment=None, lr_schedule=None, seed=2)
    whole = conv_net()
    h1 = Trainer(whole, *make_images(), **dict(kw, epochs=4)).train()
    net = conv_net()
    tr = Trainer(net, *make_images(), **dict(kw, epochs=2))
    assert tr.train()["best_epoch"] == 1        # so the net now holds epoch 1's parameters
    tr.epochs = 4
    h2 = tr.train()
    assert h2["train_loss"] == h1["train_loss"] and h2["best_epoch"] == h1["best_epoch"]
    same_params(params_of(net), params_of(whole))


def test_all_options_on_every_backend(backend, tmp_path):
    x, t, xt, tt = (backend.asarray(a) for a in make_images(n=200, n_test=50))
    net = conv_net(device=backend.device)
    h = Trainer(net, x, t, xt, tt, checkpoint_dir=tmp_path,
                **dict(OPTIONS, epochs=2, augment="shift:1,flip,erase:0.5,rotate:10")).train()
    assert len(h["val_acc"]) == 2 and len(h["lr"]) == len(h["train_loss"]) == 8
    assert h["best_epoch"] in (1, 2) and (tmp_path / "best.npz").exists()
    best, _ = load_arrays(tmp_path / "best.npz")
    same_params({k: best[k] for k in net.params}, params_of(net))
