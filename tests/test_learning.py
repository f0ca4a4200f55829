"""Tiny end-to-end learning runs: the pieces together actually learn."""

import numpy as np
import pytest

import xpnet
from xpnet.datasets import load_mnist_sample


def rings(rng, n_per_class, classes=3):
    """Concentric rings in 2-D, one class per ring: separable, but not linearly."""
    xs, ts = [], []
    for c in range(classes):
        r = 1.0 + 1.5 * c + rng.uniform(-0.35, 0.35, n_per_class)
        a = rng.uniform(0, 2 * np.pi, n_per_class)
        xs.append(np.stack([r * np.cos(a), r * np.sin(a)], axis=1))
        ts.append(np.full(n_per_class, c))
    x = np.concatenate(xs).astype(np.float32)
    t = np.concatenate(ts)
    p = rng.permutation(len(t))
    return x[p], t[p]


def test_multilayer_net_learns_rings(backend):
    rng = np.random.default_rng(0)
    x, t = rings(rng, 200)
    x_test, t_test = rings(rng, 100)
    net = xpnet.MultiLayerNet(2, [32, 32], 3, seed=1, device=backend.device)
    opt = xpnet.Adam(lr=0.01)
    assert net.accuracy(x_test, t_test) < 0.7          # not solved before training
    for it in range(400):
        idx = rng.choice(len(t), 50, replace=False)
        opt.update(net.params, net.gradient(x[idx], t[idx]))
    acc = net.accuracy(x_test, t_test)
    assert acc >= 0.95, acc
    assert net.accuracy(x, t) >= 0.95


def test_simple_conv_net_loss_decreases_on_mnist_sample(backend):
    (x, t), (x_test, t_test) = load_mnist_sample(flatten=False)
    assert x.shape[1:] == (1, 28, 28) and x.dtype == np.float32
    net = xpnet.SimpleConvNet((1, 28, 28), {"filter_num": 8, "filter_size": 5, "pad": 0,
                                            "stride": 1}, hidden_size=50, output_size=10,
                              seed=2, device=backend.device)
    opt = xpnet.Adam(lr=0.01)
    rng = np.random.default_rng(3)
    x_eval, t_eval = x_test[:300], t_test[:300]
    loss0 = float(net.loss(x_eval, t_eval))
    acc0 = net.accuracy(x_eval, t_eval)
    losses = []
    for it in range(25):
        idx = rng.choice(len(t), 32, replace=False)
        opt.update(net.params, net.gradient(x[idx], t[idx]))
        losses.append(float(net.last_loss))
    loss1 = float(net.loss(x_eval, t_eval))
    assert loss0 == pytest.approx(np.log(10), rel=0.05)   # small init: near-uniform guesses
    assert loss1 < 0.6 * loss0, (loss0, loss1)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert net.accuracy(x_eval, t_eval) > max(0.5, acc0 + 0.3)   # ~0.7 seen
