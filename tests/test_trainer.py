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
    # it learned something: better than chance (1/3), and the loss went down
    assert h["test_acc"][-1] > 0.8
    assert np.mean(h["train_loss"][-4:]) < 0.5 * np.mean(h["train_loss"][:4])


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
@pytest.mark.skipif(hasattr(signal, "SIGINT") and signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                    reason="SIGINT is ignored in this process (a shell's background job)")
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


# ---------------------------------------------------------------- hostile checkpoints (issue 10)

def _mid_epoch_checkpoint(folder):
    """A real checkpoint written at step 6 (epoch 2, batch 2 of 4) by an Adam run."""
    def cut(tr):
        if tr.current_iter == 6:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        quiet(small_net(), make_data(), epochs=3, mini_batch_size=300, optimizer="adam",
              seed=1, checkpoint_dir=folder, on_step=cut).train()
    return load_arrays(os.path.join(str(folder), "checkpoint.npz"))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return _mid_epoch_checkpoint(tmp_path_factory.mktemp("good"))


def _perm(arrays, meta, f):
    arrays["trainer/perm"] = f(arrays["trainer/perm"])


def _set(path, value):
    def edit(arrays, meta):
        d = meta
        for k in path[:-1]:
            d = d[k]
        if value is KeyError:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


def _array(name, f):
    def edit(arrays, meta):
        if f is KeyError:
            del arrays[name]
        else:
            arrays[name] = f(arrays.get(name))
    return edit


def _replace_meta(new):
    def edit(arrays, meta):
        meta.clear()
        meta["__replace__"] = new
    return edit


CRAFTED = [
    ("perm out of range",
     lambda a, m: _perm(a, m, lambda p: np.where(np.arange(1000) == 3, 5000, p)),
     r"'trainer/perm' holds 5000 at index 3, outside \[0, 1000\)"),
    ("perm negative", lambda a, m: _perm(a, m, lambda p: np.where(np.arange(1000) == 9, -1, p)),
     r"'trainer/perm' holds -1 at index 9"),
    ("perm too short", lambda a, m: _perm(a, m, lambda p: p[:-1]),
     r"'trainer/perm' has 999 entries; expected 1000 \(train_size\)"),
    ("perm all zeros", lambda a, m: _perm(a, m, np.zeros_like),
     r"'trainer/perm' is not a permutation of 0..999: 0 appears 1000 times"),
    ("perm duplicate", lambda a, m: _perm(a, m, lambda p: np.where(p == 7, 8, p)),
     r"'trainer/perm' is not a permutation of 0..999: (7 is missing|8 appears 2 times)"),
    ("perm float", lambda a, m: _perm(a, m, lambda p: p.astype(np.float64)),
     r"'trainer/perm' must be a 1-D integer array, got dtype float64"),
    ("perm missing", _array("trainer/perm", KeyError), r"'trainer/perm' is missing"),
    ("train_size missing", _set(["train_size"], KeyError), r"field 'train_size' is missing"),
    ("step missing", _set(["step"], KeyError), r"field 'step' is missing"),
    ("epoch a string", _set(["epoch"], "1"), r"field 'epoch' must be an int >= 0, got '1'"),
    ("pos past the epoch", _set(["pos_in_epoch"], 99),
     r"field 'pos_in_epoch' is 99, but an epoch here has 4 steps"),
    ("mid_epoch not a bool", _set(["mid_epoch"], "yes"),
     r"field 'mid_epoch' must be true or false"),
    ("rng shuffle bad", _set(["rng", "shuffle"], {"bit_generator": "PCG64", "state": "x"}),
     r"rng/shuffle is not a valid PCG64 state"),
    ("rng host wrong kind", _set(["rng", "host", "bit_generator"], "MT19937"),
     r"rng/host is not a valid PCG64 state"),
    ("rng not an object", _set(["rng"], 5), r"rng must be an object"),
    ("negative lr", _set(["optimizer", "hyper", "lr"], -5.0),
     r"field 'optimizer/hyper' is not valid: Adam: lr must be a positive.*-5.0"),
    ("beta1 1.5", _set(["optimizer", "hyper", "beta1"], 1.5), r"beta1 must be .*\[0, 1\)"),
    ("nan eps", _set(["optimizer", "hyper", "eps"], float("nan")), r"eps must be a positive"),
    ("unknown hyper", _set(["optimizer", "hyper", "momentum"], 0.9),
     r"field 'optimizer/hyper' has 'momentum', which Adam does not take"),
    ("t negative", _set(["optimizer", "t"], -1), r"field 'optimizer/t' must be an int >= 0"),
    ("slot shape", _array("opt/W1/m", lambda a: np.zeros((3, 3), np.float32)),
     r"array 'opt/W1/m' has shape \(3, 3\); expected \(20, 16\)"),
    ("slot nan", _array("opt/W1/v", lambda a: np.full_like(a, np.nan)),
     r"array 'opt/W1/v' holds NaN or infinite values"),
    ("slot unknown", _array("opt/W1/zz", lambda a: np.zeros((20, 16), np.float32)),
     r"array 'opt/W1/zz' is not optimizer state"),
    ("slot missing", _array("opt/b2/v", KeyError), r"optimizer state of 'b2' lacks v"),
    ("weights nan", _array("net/W2", lambda a: np.where(np.arange(3) == 1, np.inf, a)),
     r"array 'net/W2' holds NaN or infinite values .*resume from an earlier checkpoint"),
    ("weights complex", _array("net/b1", lambda a: a.astype(np.complex64)),
     r"array 'net/b1' has dtype complex64; expected floating-point"),
    ("weights int", _array("net/b1", lambda a: a.astype(np.int32)), r"has dtype int32"),
    ("weights shape", _array("net/W1", lambda a: np.zeros((20, 15), np.float32)),
     r"does not fit this network: parameter 'W1': file has shape \(20, 15\)"),
    ("losses missing", _set(["history", "train_loss"], [0.5]),
     r"inconsistent: 1 losses for 6 steps"),
    ("accuracies", _set(["history", "test_acc"], []), r"0 values in history/test_acc for 1 epochs"),
    ("loss a string", _set(["history", "train_loss"], ["x"] * 6),
     r"field 'history/train_loss' must be a list of numbers"),
    ("version", _set(["version"], 2), r"field 'version' is 2"),
    ("stray array", _array("extra", lambda a: np.zeros(2)), r"array 'extra' is not part of"),
    ("metadata a list", _replace_meta([1, 2]), r"metadata must be a JSON object, got list"),
    ("metadata not a checkpoint", _replace_meta({"format": "xpnet-params"}),
     r"is not an xpnet checkpoint \(format 'xpnet-params'\)"),
]


@pytest.mark.parametrize("name, edit, message", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_checkpoints_are_refused_before_anything_changes(tmp_path, good_checkpoint,
                                                                  name, edit, message):
    import copy
    from xpnet.serialization import save_arrays
    arrays = {k: v.copy() for k, v in good_checkpoint[0].items()}
    meta = copy.deepcopy(good_checkpoint[1])
    edit(arrays, meta)
    bad = str(tmp_path / "bad.npz")
    save_arrays(bad, arrays, meta.pop("__replace__", meta))
    net, opt = small_net(seed=3), xpnet.Adam(lr=0.01)
    before = params_of(net)
    with pytest.raises(ValueError, match=message) as ei:
        quiet(net, make_data(), epochs=3, mini_batch_size=300, optimizer=opt, seed=5,
              resume=bad)
    assert bad in str(ei.value)                              # names the file
    assert_same_params(params_of(net), before)                # nothing was changed
    assert opt.t == 0 and opt.state == {} and opt.lr == 0.01


def test_the_good_checkpoint_still_resumes(tmp_path, good_checkpoint):
    from xpnet.serialization import save_arrays
    ck = str(tmp_path / "ok.npz")
    save_arrays(ck, *good_checkpoint)
    tr = quiet(small_net(seed=3), make_data(), epochs=3, mini_batch_size=300, optimizer="adam",
               resume=ck)
    assert (tr.current_epoch, tr._pos, tr.current_iter) == (1, 2, 6)
    tr.train()
    assert tr.current_iter == 12


def test_failed_restore_leaves_the_random_streams_alone(tmp_path, good_checkpoint):
    from xpnet.serialization import save_arrays
    arrays, meta = good_checkpoint
    meta = json.loads(json.dumps(meta))
    meta["optimizer"]["hyper"]["lr"] = -5.0        # checked after the random states
    bad = str(tmp_path / "bad.npz")
    save_arrays(bad, arrays, meta)
    xpnet.seed(11)
    expected = xpnet.backend.host_rng().bit_generator.state
    xpnet.seed(11)
    with pytest.raises(ValueError, match="lr must be a positive"):
        Trainer(small_net(), *make_data(), epochs=3, mini_batch_size=300, optimizer="adam",
                resume=bad, verbose=False, seed=11)
    assert xpnet.backend.host_rng().bit_generator.state == expected


# ---------------------------------------------------------------- NaN never "good" (issue 10)

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_ctrl_c_after_a_nan_update_keeps_the_good_checkpoint(tmp_path):
    def poison_then_stop(tr):
        if tr.current_iter == 6:      # epoch 2, batch 2: the update made W1 NaN, loss was fine
            tr.network.params["W1"][0, 0] = float("nan")
            raise KeyboardInterrupt
    tr = quiet(small_net(), make_data(), epochs=3, mini_batch_size=300, checkpoint_dir=tmp_path,
               on_step=poison_then_stop)
    ck = os.path.join(str(tmp_path), "checkpoint.npz")
    with pytest.raises(TrainingDivergedError) as ei:
        tr.train()
    msg = str(ei.value)
    assert "'W1' is NaN or infinite at step 6" in msg
    assert "last good checkpoint: %s (after epoch 1, step 4)" % ck in msg
    arrays, meta = load_arrays(ck)           # not overwritten with the NaN state
    assert meta["epoch"] == 1 and meta["step"] == 4 and np.isfinite(arrays["net/W1"]).all()
    assert tr.interrupt_checkpoint is None
    assert json.loads((tmp_path / "history.json").read_text())["status"] == "diverged"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_save_checkpoint_refuses_nan_and_keeps_the_file(tmp_path):
    tr = quiet(small_net(), make_data(), epochs=1, mini_batch_size=300, checkpoint_dir=tmp_path)
    tr.train()
    ck = tr.last_checkpoint
    before = (tmp_path / "checkpoint.npz").read_bytes()
    tr.network.params["b1"][...] = float("inf")
    with pytest.raises(ValueError, match=r"save_checkpoint: 'b1' is NaN or infinite.*nothing "
                                         r"was written \(the last good checkpoint is %s\)" % ck):
        tr.save_checkpoint()
    assert (tmp_path / "checkpoint.npz").read_bytes() == before and tr.last_checkpoint == ck


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_after_a_mid_epoch_resume_names_that_checkpoint_and_its_step(tmp_path):
    _mid_epoch_checkpoint(tmp_path)           # step 6 = epoch 2, batch 2 of 4
    ck = os.path.join(str(tmp_path), "checkpoint.npz")

    def poison(tr):
        if tr.current_iter == 7:
            tr.network.params["W1"][...] = float("nan")
    tr = quiet(small_net(), make_data(), epochs=3, mini_batch_size=300, optimizer="adam",
               checkpoint_dir=tmp_path, resume=tmp_path, on_step=poison)
    with pytest.raises(TrainingDivergedError) as ei:
        tr.train()
    assert "last good checkpoint: %s (at step 6, epoch 2 batch 2)" % ck in str(ei.value)


# ---------------------------------------------------------------- epochs already done

def test_resume_with_fewer_epochs_than_done_says_so(tmp_path):
    quiet(small_net(), make_data(), epochs=3, mini_batch_size=300, checkpoint_dir=tmp_path).train()
    tr = quiet(small_net(), make_data(), epochs=2, mini_batch_size=300, resume=tmp_path)
    with pytest.raises(ValueError, match=r"epochs=2 is the total number of epochs, but 3 epochs "
                                         r"are already done \(resumed from .*checkpoint.npz\); "
                                         r"pass epochs=4 or more"):
        tr.train()
    same = quiet(small_net(), make_data(), epochs=3, mini_batch_size=300, resume=tmp_path)
    assert same.train()["epochs_done"] == 3     # the total reached: nothing to do, no error


# ---------------------------------------------------------------- labels (issue 10)

@pytest.mark.parametrize("which, bad, message", [
    ("t_train", lambda t: np.where(np.arange(len(t)) == 5, -1, t),
     r"Trainer: t_train\[5\] = -1 is not a class label: labels must be in \[0, 3\) \(the network "
     r"has 3 outputs\)"),
    ("t_test", lambda t: np.where(np.arange(len(t)) == 7, 3, t), r"t_test\[7\] = 3 is not a class"),
    ("t_train", lambda t: np.where(np.arange(len(t)) == 0, 10 ** 6, t), r"t_train\[0\] = 1000000"),
    ("t_train", lambda t: t.astype(np.float32), r"t_train must hold integer class labels.*float32"),
    ("t_train", lambda t: t.astype(bool), r"t_train must hold integer class labels.*bool"),
    ("t_train", lambda t: np.eye(4, dtype=np.float32)[t],
     r"t_train has one-hot rows of 4 values, but the network has 3 outputs"),
    ("t_test", lambda t: np.where(np.arange(3) == 2, np.nan, np.eye(3)[t]),
     r"t_test\[0, 2\] = nan is not a one-hot or soft target"),
    ("t_train", lambda t: t.reshape(-1, 1, 1), r"t_train must be 1-D class labels or 2-D"),
])
def test_bad_labels_fail_at_construction_naming_value_and_index(which, bad, message):
    x, t, xt, tt = make_data()
    if which == "t_train":
        t = bad(t)
    else:
        tt = bad(tt)
    with pytest.raises(ValueError, match=message):
        Trainer(small_net(), x, t, xt, tt, verbose=False)


def test_labels_of_nets_without_a_config_use_predict_or_only_the_lower_bound():
    x, t, xt, tt = make_data()
    net = xpnet.Sequential([xpnet.layers.Affine(np.full((20, 4), 0.1, np.float32),
                                                np.zeros(4, np.float32))])
    with pytest.raises(ValueError, match=r"t_train\[1\] = 4 .*\[0, 4\)"):
        Trainer(net, x, np.where(np.arange(1000) == 1, 4, t), xt, tt, verbose=False)
    with pytest.raises(ValueError, match=r"t_train\[2\] = -3 .*\[0, n_classes\)"):
        Trainer(BookStyleNet(0), x, np.where(np.arange(1000) == 2, -3, t), xt, tt, verbose=False)
    quiet(BookStyleNet(0), (x, t, xt, tt))      # good labels pass


def test_labels_on_other_array_libraries(device):
    x, t, xt, tt = make_data()
    dev = xpnet.get_device(device)
    t = xpnet.to_device(np.where(np.arange(1000) == 4, 3, t), dev)
    with pytest.raises(ValueError, match=r"t_train\[4\] = 3 is not a class label"):
        Trainer(small_net(device), xpnet.to_device(x, dev), t, xt, tt, verbose=False)


# ---------------------------------------------------------------- one writer per folder (issue 10)

def _hold_lock_in_child(folder):
    """A second process that takes the folder's lock and sleeps; returns it once locked."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys, time; from xpnet.trainer.folder import FolderLock; "
            "lock = FolderLock(sys.argv[1], 'checkpoint_dir').acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                         env=env, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


@pytest.mark.skipif(sys.platform == "win32", reason="needs fcntl")
def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_folder(tmp_path):
    import socket
    from xpnet.trainer import FolderInUseError
    child = _hold_lock_in_child(tmp_path)
    try:
        tr = quiet(small_net(), make_data(), epochs=1, mini_batch_size=300,
                   checkpoint_dir=tmp_path)
        with pytest.raises(FolderInUseError) as ei:
            tr.train()
        msg = str(ei.value)
        assert "checkpoint_dir %s is in use by process %d on %s, started " % (
            tmp_path, child.pid, socket.gethostname()) in msg
        assert ".xpnet.lock" in msg and ei.value.holder["pid"] == child.pid
        assert not (tmp_path / "checkpoint.npz").exists()
        assert not (tmp_path / "history.json").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    h = tr.train()                 # the OS dropped the dead holder's lock
    assert h["status"] == "completed" and (tmp_path / "checkpoint.npz").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="needs fcntl")
def test_two_trainers_in_one_process_and_sequential_runs(tmp_path):
    from xpnet.trainer import FolderInUseError
    errors = []

    def second_writer(tr):
        if tr.current_iter == 1:
            other = quiet(small_net(), make_data(), epochs=1, checkpoint_dir=tmp_path)
            try:
                other.train()
            except FolderInUseError as e:
                errors.append(str(e))
    quiet(small_net(), make_data(), epochs=1, checkpoint_dir=tmp_path,
          on_step=second_writer).train()
    assert len(errors) == 1 and "(this process)" in errors[0]
    # one after the other is fine, also by hand (train_step locks each write)
    tr = quiet(small_net(), make_data(), epochs=2, checkpoint_dir=tmp_path, resume=tmp_path)
    for _ in range(tr.iter_per_epoch):
        tr.train_step()
    assert tr.current_epoch == 2 and not tr._folder.held
    assert (tmp_path / ".xpnet.lock").read_bytes() == b""       # released: nobody named


def test_stale_temporaries_are_removed_when_the_folder_is_taken(tmp_path):
    ours = [".checkpoint.npz.abcd1234.tmp", ".checkpoint.json.x_y_z_12.tmp",
            ".history.json.zzzz_999.tmp", ".params.npz.a1b2c3d4.tmp"]
    others = [".checkpoint.npz.mine.tmp", "notes.tmp", ".other.json.abcdefgh.tmp",
              "checkpoint.npz.abcd1234.tmp", ".history.json.abcd1234.tmp.keep"]
    for n in ours + others:
        (tmp_path / n).write_bytes(b"half a file")
    os.mkdir(tmp_path / ".params.json.dir_1234.tmp")          # not a plain file: kept
    quiet(small_net(), make_data(), epochs=1, checkpoint_dir=tmp_path).train()
    left = set(os.listdir(tmp_path))
    assert not left & set(ours)
    assert set(others) | {".params.json.dir_1234.tmp"} <= left


@pytest.mark.skipif(sys.platform == "win32", reason="needs fcntl")
def test_stale_temporaries_stay_while_another_process_holds_the_folder(tmp_path):
    from xpnet.trainer import FolderInUseError
    child = _hold_lock_in_child(tmp_path)
    tmp = tmp_path / ".checkpoint.npz.abcd1234.tmp"
    tmp.write_bytes(b"being written by the other run")
    try:
        with pytest.raises(FolderInUseError):
            quiet(small_net(), make_data(), epochs=1, checkpoint_dir=tmp_path).train()
        assert tmp.exists()
    finally:
        child.kill()
        child.wait(timeout=30)


def test_checkpoint_dir_that_is_a_file_is_named(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    tr = quiet(small_net(), make_data(), epochs=1, checkpoint_dir=f)
    with pytest.raises(NotADirectoryError, match="checkpoint_dir %s exists and is not a "
                                                 "directory" % f):
        tr.train()


def test_callbacks_and_history_path_are_checked_up_front(tmp_path):
    with pytest.raises(TypeError, match="on_step must be a function or None, got 5"):
        quiet(small_net(), make_data(), on_step=5)
    with pytest.raises(TypeError, match="log must be a function or None"):
        quiet(small_net(), make_data(), log="stdout")
    with pytest.raises(IsADirectoryError, match="history_path %s is a directory" % tmp_path):
        quiet(small_net(), make_data(), history_path=tmp_path)
    os.mkdir(tmp_path / "ck")
    os.mkdir(tmp_path / "ck" / "history.json")
    with pytest.raises(IsADirectoryError, match="history.json is a directory"):
        quiet(small_net(), make_data(), checkpoint_dir=tmp_path / "ck")
