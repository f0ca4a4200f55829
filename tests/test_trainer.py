"""Trainer: exact epochs, shuffling without replacement, checkpoints and resume, Ctrl-C,
NaN stops, silence, history files."""
import json
import os
import signal
import sys

import numpy as np
import pytest

import xpnet
from xpnet.serialization import load_arrays
from xpnet.trainer import Trainer, TrainingDivergedError, find_checkpoint


def make_data(n=1000, n_test=200, d=20, k=3, seed=0, one_hot=False):
    """Linearly separable-ish blobs; column 0 is unique per row so batches can be traced."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, k))
    x = rng.standard_normal((n + n_test, d)).astype(np.float32)
    t = (x @ w).argmax(axis=1).astype(np.int64)
    if one_hot:
        t = np.eye(k, dtype=np.float32)[t]
    return x[:n], t[:n], x[n:], t[n:]


def small_net(device=None, seed=0, dropout=False):
    if dropout:
        return xpnet.MultiLayerNetExtend(20, [16, 16], 3, use_dropout=True, dropout_ration=0.2,
                                         use_batchnorm=True, seed=seed, device=device)
    return xpnet.TwoLayerNet(20, 16, 3, weight_init_std=0.1, seed=seed, device=device)


def spy_batches(net):
    """Record column 0 of every training batch (host copies)."""
    seen = []
    orig = net.gradient

    def gradient(x, t):
        seen.append(xpnet.asnumpy(x)[:, 0].copy())
        return orig(x, t)
    net.gradient = gradient
    return seen


def count_accuracy_calls(net):
    calls = []
    orig = net.accuracy

    def accuracy(x, t, batch_size=100):
        calls.append(len(x))
        return orig(x, t, batch_size)
    net.accuracy = accuracy
    return calls


def quiet(net, data, **kw):
    kw.setdefault("verbose", False)
    return Trainer(net, *data, **kw)


def params_of(net):
    return {k: xpnet.asnumpy(v).copy() for k, v in net.params.items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---------------------------------------------------------------- epochs and batches

def test_every_epoch_is_a_permutation_and_evaluated_once(device):
    # 1000 samples at batch 300: the book's float iter_per_epoch (3.33) evaluates in 1 of 20
    # epochs; here each epoch is 4 steps (300, 300, 300, 100) and is evaluated exactly once.
    data = make_data()
    net = small_net(device)
    seen = spy_batches(net)
    calls = count_accuracy_calls(net)
    tr = quiet(net, data, epochs=20, mini_batch_size=300, optimizer="adam",
               optimizer_param={"lr": 0.01}, seed=1)
    assert tr.iter_per_epoch == 4
    h = tr.train()
    assert [len(b) for b in seen] == [300, 300, 300, 100] * 20
    ids = {v: i for i, v in enumerate(data[0][:, 0])}
    orders = []
    for e in range(20):
        order = [ids[v] for b in seen[4 * e:4 * e + 4] for v in b]
        assert sorted(order) == list(range(1000)), "epoch %d repeats or misses samples" % e
        orders.append(order)
    assert orders[0] != list(range(1000)), "not shuffled"
    assert len({tuple(o) for o in orders}) == 20, "epochs share an order"
    assert len(h["train_acc"]) == len(h["test_acc"]) == len(h["epoch_seconds"]) == 20
    assert len(h["train_loss"]) == tr.current_iter == 80
    assert calls == [1000, 200] * 20       # train + test once per epoch, final result reused
    assert h["final_test_acc"] == h["test_acc"][-1]
    assert h["test_acc"][-1] > 0.8 > h["test_acc"][0] - 0.5  # it learned something


def test_drop_last_drops_the_short_batch():
    data = make_data()
    net = small_net()
    seen = spy_batches(net)
    tr = quiet(net, data, epochs=3, mini_batch_size=300, drop_last=True, seed=2)
    tr.train()
    assert tr.iter_per_epoch == 3
    assert [len(b) for b in seen] == [300] * 9
    ids = {v: i for i, v in enumerate(data[0][:, 0])}
    for e in range(3):
        order = [ids[v] for b in seen[3 * e:3 * e + 3] for v in b]
        assert len(set(order)) == 900
    assert len(tr.train_acc_list) == 3


def test_evaluate_sample_num_limits_per_epoch_eval_but_not_final():
    data = make_data()
    net = small_net()
    calls = count_accuracy_calls(net)
    h = quiet(net, data, epochs=2, mini_batch_size=100, evaluate_sample_num_per_epoch=50).train()
    assert calls == [50, 50, 50, 50, 200]
    assert len(h["test_acc"]) == 2


def test_book_interface_and_train_step():
    data = make_data()
    net = small_net()
    tr = Trainer(net, *data, 2, 250, "SGD", {"lr": 0.1}, None, False)
    assert type(tr.optimizer).__name__ == "SGD" and tr.optimizer.lr == 0.1
    for _ in range(4):
        tr.train_step()
    assert tr.current_epoch == 1 and len(tr.train_acc_list) == 1 and len(tr.train_loss_list) == 4
    tr.train()     # finishes the remaining epoch
    assert tr.current_epoch == 2 and len(tr.test_acc_list) == 2


# ---------------------------------------------------------------- optimizer argument

def test_optimizer_by_name_or_instance():
    data = make_data(n=100, n_test=20)
    net = small_net()
    assert type(quiet(net, data).optimizer).__name__ == "SGD"
    assert quiet(net, data).optimizer.lr == 0.01
    for name, cls in (("sgd", "SGD"), ("Adam", "Adam"), ("ADAGRAD", "AdaGrad"),
                      ("rmsprop", "RMSprop")):
        assert type(quiet(net, data, optimizer=name).optimizer).__name__ == cls
    opt = xpnet.Momentum(lr=0.05)
    assert quiet(net, data, optimizer=opt).optimizer is opt
    with pytest.raises(ValueError, match="unknown optimizer 'lion'.*Adam"):
        quiet(net, data, optimizer="lion")
    with pytest.raises(ValueError, match="optimizer_param"):
        quiet(net, data, optimizer=opt, optimizer_param={"lr": 1})


def test_bad_arguments_are_named():
    x, t, xt, tt = make_data(n=100, n_test=20)
    net = small_net()
    with pytest.raises(ValueError, match="x_train has 100 samples but t_train has 99"):
        Trainer(net, x, t[:99], xt, tt)
    with pytest.raises(ValueError, match="mini_batch_size must be a positive int, got 0"):
        Trainer(net, x, t, xt, tt, mini_batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        Trainer(net, x, t, xt, tt, epochs=-1)
    with pytest.raises(ValueError, match="drop_last=True with mini_batch_size=200 > 100"):
        Trainer(net, x, t, xt, tt, mini_batch_size=200, drop_last=True)
    with pytest.raises(FileNotFoundError, match="resume: no checkpoint"):
        Trainer(net, x, t, xt, tt, resume="/nonexistent/ckpt")


# ---------------------------------------------------------------- reproducibility, resume

def _run(tmp, epochs, resume=None, seed=3, **kw):
    data = make_data()
    net = small_net(seed=7 if resume else 0, dropout=True)   # resume overwrites the init
    tr = quiet(net, data, epochs=epochs, mini_batch_size=128, optimizer="Adam",
               optimizer_param={"lr": 0.01}, seed=seed, checkpoint_dir=tmp, resume=resume, **kw)
    tr.train()
    return tr


def test_seeded_runs_are_bit_identical(tmp_path):
    a = _run(tmp_path / "a", 2)
    b = _run(tmp_path / "b", 2)
    c = _run(tmp_path / "c", 2, seed=4)
    assert a.train_loss_list == b.train_loss_list
    assert_same_params(params_of(a.network), params_of(b.network))
    assert a.train_loss_list != c.train_loss_list


def test_resume_continues_bit_for_bit(tmp_path):
    full = _run(tmp_path / "full", 4)
    half = _run(tmp_path / "half", 2)
    assert half.current_epoch == 2
    ck = find_checkpoint(tmp_path / "half")
    arrays, meta = load_arrays(ck)
    assert meta["epoch"] == 2 and meta["step"] == 2 * half.iter_per_epoch
    assert any(k.startswith("opt/") for k in arrays) and "rng" in meta
    rest = _run(tmp_path / "half", 4, resume=tmp_path / "half")
    assert rest.history["resumed_from"] == ck
    assert rest.train_loss_list == full.train_loss_list
    assert rest.test_acc_list == full.test_acc_list
    assert_same_params(params_of(rest.network), params_of(full.network))
    bufs_a, bufs_b = rest.network.buffers, full.network.buffers
    for k in bufs_a:
        np.testing.assert_array_equal(bufs_a[k], bufs_b[k], err_msg=k)
    sa, sb = rest.optimizer.state_dict(), full.optimizer.state_dict()
    assert sa["t"] == sb["t"]
    for k in sa["state"]:
        for s in sa["state"][k]:
            np.testing.assert_array_equal(sa["state"][k][s], sb["state"][k][s])


def test_resume_rejects_a_different_network(tmp_path):
    _run(tmp_path, 1)
    x, t, xt, tt = make_data()
    other = xpnet.TwoLayerNet(20, 8, 3)
    with pytest.raises(ValueError, match="does not fit this network"):
        Trainer(other, x, t, xt, tt, optimizer="adam", resume=tmp_path, verbose=False)
    params = other.save_params(tmp_path / "p.npz")
    with pytest.raises(ValueError, match="not an xpnet checkpoint"):
        Trainer(other, x, t, xt, tt, resume=params, verbose=False)
    with pytest.raises(ValueError, match="resume: .*checkpoint.npz: optimizer state is for 'Adam', this optimizer is SGD"):
        Trainer(small_net(dropout=True), x, t, xt, tt, resume=tmp_path, verbose=False)


def test_ctrl_c_writes_a_consistent_checkpoint(tmp_path, capsys):
    full = _run(tmp_path / "full", 3)

    def interrupt_at_step_10(tr):
        if tr.current_iter == 10:          # mid epoch 2 (8 steps per epoch)
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt, match="resume="):
        _run(tmp_path / "cut", 3, on_step=interrupt_at_step_10)
    arrays, meta = load_arrays(tmp_path / "cut" / "checkpoint.npz")
    assert (meta["step"], meta["epoch"], meta["pos_in_epoch"]) == (10, 1, 2)
    assert meta["mid_epoch"] and "trainer/perm" in arrays
    hist = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert hist["status"] == "interrupted" and len(hist["train_loss"]) == 10
    rest = _run(tmp_path / "cut", 3, resume=tmp_path / "cut")
    assert rest.train_loss_list == full.train_loss_list
    assert_same_params(params_of(rest.network), params_of(full.network))
    assert capsys.readouterr().out == ""     # verbose=False all along


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="needs POSIX signals")
def test_real_sigint_stops_after_the_current_step(tmp_path):
    def send_sigint(tr):
        if tr.current_iter == 3:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, 2, on_step=send_sigint)
    _, meta = load_arrays(tmp_path / "checkpoint.npz")
    assert meta["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------- NaN

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_with_step_epoch_and_checkpoint(tmp_path, device):
    data = make_data()
    net = small_net(device)

    def poison(tr):
        if tr.current_iter == 5:         # epoch 2, batch 1 of 4
            tr.network.params["W1"][0, 0] = float("nan")
    tr = quiet(net, data, epochs=3, mini_batch_size=300, checkpoint_dir=tmp_path, on_step=poison)
    with pytest.raises(TrainingDivergedError) as ei:
        tr.train()
    msg = str(ei.value)
    step = ei.value.step
    # The CPU checks every step; a GPU every log_every steps (at the latest at epoch end).
    assert step == 6 if tr.log_every == 1 else 6 <= step <= 8
    assert "loss is nan at step %d (epoch 2, batch %d of 4" % (step, step - 4) in msg
    ck = os.path.join(str(tmp_path), "checkpoint.npz")
    assert ei.value.checkpoint == ck and ck in msg and "after epoch 1" in msg
    _, meta = load_arrays(ck)
    assert meta["epoch"] == 1
    hist = json.loads((tmp_path / "history.json").read_text())   # strict JSON: NaN -> null
    assert hist["status"] == "diverged" and hist["train_loss"][step - 1] is None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_without_checkpoint_dir_says_so():
    def poison(tr):
        tr.network.params["W2"][...] = float("inf")
    tr = quiet(small_net(), make_data(), epochs=1, mini_batch_size=300, on_step=poison)
    with pytest.raises(TrainingDivergedError, match="step 2 .*no checkpoint"):
        tr.train()


# ---------------------------------------------------------------- output

def test_verbose_false_prints_nothing(tmp_path, capsys):
    quiet(small_net(), make_data(), epochs=2, checkpoint_dir=tmp_path, progress=True).train()
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_reports_epochs_and_progress(capsys):
    lines = []
    Trainer(small_net(), *make_data(), epochs=2, mini_batch_size=250, log=lines.append,
            progress=True).train()
    epoch_lines = [l for l in lines if l.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "train acc" in epoch_lines[1] and "test acc" in lines[2]
    assert "final test accuracy" in lines[-1]
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err     # a bar per epoch on stderr


def test_progress_fallback_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    Trainer(small_net(), *make_data(), epochs=1, mini_batch_size=250, log=lambda s: None,
            progress=True).train()
    err = capsys.readouterr().err
    assert "epoch 1/1 4/4 loss" in err and "img/s" in err and "ETA" in err


def test_history_json_contents(tmp_path):
    hp = tmp_path / "sub" / "h.json"
    tr = quiet(small_net(), make_data(), epochs=3, mini_batch_size=200, optimizer="adam",
               optimizer_param={"lr": 0.02}, history_path=hp, run_info={"note": "x"})
    ret = tr.train()
    h = json.loads(hp.read_text())
    assert ret is tr.history
    assert h["format"] == "xpnet-history" and h["status"] == "completed"
    assert len(h["train_loss"]) == h["steps"] == 15
    assert h["train_loss"] == tr.train_loss_list
    assert len(h["train_acc"]) == len(h["test_acc"]) == len(h["epoch_seconds"]) == 3
    assert all(s > 0 for s in h["epoch_seconds"])
    assert h["epochs_done"] == 3 and h["final_test_acc"] == h["test_acc"][-1]
    c = h["config"]
    assert c["optimizer"] == {"type": "Adam", "hyper": {"lr": 0.02, "beta1": 0.9,
                                                        "beta2": 0.999, "eps": 1e-7}}
    assert c["network"]["type"] == "TwoLayerNet" and c["mini_batch_size"] == 200
    assert c["iter_per_epoch"] == 5 and c["train_size"] == 1000 and c["test_size"] == 200
    assert c["run_info"] == {"note": "x"} and c["dtype"] == "float32"
    assert not list(tmp_path.glob("sub/.*.tmp"))   # atomic writes leave no temp files


def test_one_hot_labels_train_like_integer_labels(device):
    kw = dict(epochs=2, seed=0, optimizer="adam", optimizer_param={"lr": 0.01})
    a = quiet(small_net(device), make_data(), **kw).train()
    b = quiet(small_net(device), make_data(one_hot=True), **kw).train()
    if device == "cpu":     # the same arithmetic: one-hot labels are turned into indices
        assert a["train_acc"] == b["train_acc"] and a["test_acc"] == b["test_acc"]
    else:
        np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=0.01)
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    assert b["test_acc"][-1] > 0.5


class BookStyleNet:
    """Only what the book's Trainer needs: params, gradient, loss, accuracy."""

    def __init__(self, seed):
        self._net = xpnet.TwoLayerNet(20, 16, 3, weight_init_std=0.1, seed=seed)
        self.params = {k: v for k, v in self._net.params.items()}   # the layers' own arrays

    def gradient(self, x, t):
        return self._net.gradient(x, t)

    def loss(self, x, t):
        return self._net.loss(x, t)

    def accuracy(self, x, t, batch_size=100):
        return self._net.accuracy(x, t, batch_size)


def test_book_style_network_trains_checkpoints_and_resumes(tmp_path):
    data = make_data()
    kw = dict(mini_batch_size=100, optimizer="adam", optimizer_param={"lr": 0.01}, seed=9)
    full = quiet(BookStyleNet(0), data, epochs=3, **kw)
    full.train()
    quiet(BookStyleNet(0), data, epochs=1, checkpoint_dir=tmp_path, **kw).train()
    rest = quiet(BookStyleNet(5), data, epochs=3, resume=tmp_path, **kw)
    rest.train()
    assert rest.train_loss_list == full.train_loss_list
    assert_same_params(params_of(rest.network), params_of(full.network))
    assert full.test_acc_list[-1] > 0.8


# ---------------------------------------------------------------- structure

def test_run_epoch_goes_through_train_step(monkeypatch):
    calls = []
    orig = Trainer.train_step

    def train_step(self):
        calls.append(self.current_iter)
        orig(self)
    monkeypatch.setattr(Trainer, "train_step", train_step)
    steps = []
    tr = quiet(small_net(), make_data(), epochs=2, mini_batch_size=300,
               on_step=lambda t: steps.append(t.current_iter))
    tr.train()
    assert calls == list(range(8)) and steps == list(range(1, 9))
    tr.train_step()          # by hand, as in the book: callbacks still run
    assert steps[-1] == 9


def test_checkpoint_format_is_stable(tmp_path):
    """Old checkpoints must keep loading: the file's names and metadata keys are fixed."""
    def cut(tr):
        if tr.current_iter == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        quiet(small_net(), make_data(), epochs=1, mini_batch_size=300, optimizer="adam",
              checkpoint_dir=tmp_path, on_step=cut).train()
    arrays, meta = load_arrays(tmp_path / "checkpoint.npz")
    assert sorted(meta) == ["architecture", "drop_last", "dtype", "epoch", "epoch_train_seconds",
                            "format", "history", "mid_epoch", "mini_batch_size", "optimizer",
                            "pos_in_epoch", "rng", "step", "train_size", "version",
                            "xpnet_version"]
    assert meta["format"] == "xpnet-checkpoint" and meta["version"] == 1
    assert sorted(meta["rng"]) == ["host", "shuffle"] and sorted(meta["optimizer"]) == [
        "hyper", "t", "type"]
    assert {k.split("/")[0] for k in arrays} == {"net", "opt", "trainer"}
    assert json.loads((tmp_path / "checkpoint.json").read_text()) == meta


def test_trainer_array_helpers_take_any_array_api_array():
    xs = pytest.importorskip("array_api_strict")
    from xpnet.trainer import arrays as A
    a, bad = xs.asarray([[1.0, 2.0], [3.0, 4.0]]), xs.asarray([1.0, float("inf")])
    assert A.all_finite([a]) and not A.all_finite([a, bad])
    vals = A.read_back([xs.asarray(1.5), xs.asarray(float("nan")), 2.0])
    assert vals[0] == 1.5 and vals[1] != vals[1] and vals[2] == 2.0
