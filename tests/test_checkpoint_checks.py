"""The checks `restore` makes of a checkpoint's position fields against the Trainer
(issue 20: removing any one of them left the suite green)."""
import copy
import os

import numpy as np
import pytest

import xpnet
from xpnet.serialization import load_arrays, save_arrays
from xpnet.trainer import Trainer


def make_data(n=1000, d=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 200, d)).astype(np.float32)
    t = (x @ rng.standard_normal((d, k))).argmax(axis=1).astype(np.int64)
    return x[:n], t[:n], x[n:], t[n:]


def net():
    return xpnet.TwoLayerNet(20, 16, 3, weight_init_std=0.1, seed=0, device="cpu")


def checkpoint(folder, at_step=None, at_epoch=None):
    """A real checkpoint of an Adam run at batch 300 (4 steps an epoch), cut after step
    `at_step` or at the end of epoch `at_epoch`."""
    def cut(tr):
        if tr.current_iter == at_step or tr.current_epoch == at_epoch:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        Trainer(net(), *make_data(), epochs=3, mini_batch_size=300, optimizer="adam", seed=1,
                checkpoint_dir=folder, verbose=False,
                **({"on_step": cut} if at_step else {"on_epoch": cut})).train()
    return load_arrays(os.path.join(str(folder), "checkpoint.npz"))


@pytest.fixture(scope="module")
def mid_epoch(tmp_path_factory):        # step 6: epoch 1, position 2 of 4
    return checkpoint(tmp_path_factory.mktemp("mid"), 6)


@pytest.fixture(scope="module")
def end_of_epoch(tmp_path_factory):     # step 8: between epochs
    return checkpoint(tmp_path_factory.mktemp("end"), at_epoch=2)


def resume(tmp_path, stored, edit=None, data=None, **kw):
    arrays = {k: v.copy() for k, v in stored[0].items()}
    meta = copy.deepcopy(stored[1])
    if edit:
        edit(arrays, meta)
    path = str(tmp_path / "ck.npz")
    save_arrays(path, arrays, meta)
    kw.setdefault("mini_batch_size", 300)
    return Trainer(net(), *(data or make_data()), epochs=3, optimizer="adam", resume=path,
                   verbose=False, **kw)


def test_the_checkpoints_resume_where_they_were_cut(tmp_path, mid_epoch, end_of_epoch):
    tr = resume(tmp_path, mid_epoch)
    assert (tr.current_epoch, tr._pos, tr.current_iter) == (1, 2, 6)
    tr = resume(tmp_path, end_of_epoch)
    assert (tr.current_epoch, tr._pos, tr.current_iter) == (2, 0, 8)
    assert mid_epoch[1]["mid_epoch"] and not end_of_epoch[1]["mid_epoch"]


def test_a_mid_epoch_checkpoint_needs_the_same_batch_size(tmp_path, mid_epoch, end_of_epoch):
    # the position (2 batches of 300) means another place at batch 200
    with pytest.raises(ValueError, match=r"ck.npz was written with mini_batch_size=300 "
                                         r"mid-epoch, this Trainer has 200"):
        resume(tmp_path, mid_epoch, mini_batch_size=200)
    with pytest.raises(ValueError, match=r"drop_last=False mid-epoch, this Trainer has True"):
        resume(tmp_path, mid_epoch, drop_last=True)
    tr = resume(tmp_path, end_of_epoch, mini_batch_size=200)   # between epochs: any batch
    assert (tr.current_epoch, tr._pos, tr.batch_size) == (2, 0, 200)


def test_the_training_set_must_have_the_same_size(tmp_path, mid_epoch, end_of_epoch):
    small = tuple(a[:900] if i == 0 or i == 1 else a for i, a in enumerate(make_data()))
    with pytest.raises(ValueError, match=r"ck.npz was written with train_size=1000 mid-epoch, "
                                         r"this Trainer has 900"):
        resume(tmp_path, mid_epoch, data=small)
    with pytest.raises(ValueError, match=r"ck.npz was trained on 1000 samples, x_train has 900"):
        resume(tmp_path, end_of_epoch, data=small)


def _meta(**fields):
    def edit(arrays, meta):
        meta.update(fields)
    return edit


def test_step_must_cover_the_epochs_and_position(tmp_path, mid_epoch):
    with pytest.raises(ValueError, match=r"field 'step' is 2, fewer than 1 epochs and 2 steps "
                                         r"need"):
        resume(tmp_path, mid_epoch, _meta(step=2, history=dict(
            mid_epoch[1]["history"], train_loss=mid_epoch[1]["history"]["train_loss"][:2])))
    tr = resume(tmp_path, mid_epoch, _meta(step=3, history=dict(
        mid_epoch[1]["history"], train_loss=mid_epoch[1]["history"]["train_loss"][:3])))
    assert tr.current_iter == 3                 # epoch + pos exactly: accepted


def test_no_position_between_epochs(tmp_path, end_of_epoch):
    with pytest.raises(ValueError, match=r"field 'pos_in_epoch' is 1 between epochs "
                                         r"\(mid_epoch is false\)"):
        resume(tmp_path, end_of_epoch, _meta(pos_in_epoch=1))


def test_optimizer_state_is_needed_once_steps_were_taken(tmp_path, mid_epoch):
    def drop_state(arrays, meta):
        for k in [k for k in arrays if k.startswith("opt/")]:
            del arrays[k]
    with pytest.raises(ValueError, match=r"optimizer state is missing, but Adam has taken 6 "
                                         r"steps"):
        resume(tmp_path, mid_epoch, drop_state)

    def no_steps(arrays, meta):
        drop_state(arrays, meta)
        meta["optimizer"]["t"] = 0
    tr = resume(tmp_path, mid_epoch, no_steps)   # t = 0: no state yet is right
    assert tr.optimizer.t == 0


def test_a_resumed_epoch_keeps_the_training_time_before_the_cut(tmp_path, mid_epoch):
    # found by the mutation pass: restoring epoch_train_seconds as 0 left the suite green
    tr = resume(tmp_path, mid_epoch, _meta(epoch_train_seconds=1000.0))
    h = tr.train()
    assert len(h["epoch_seconds"]) == 3
    assert 1000.0 <= h["epoch_seconds"][1] < 1000.0 + 600      # the cut epoch: both parts
    assert h["epoch_seconds"][2] < 600                           # the next starts from 0
