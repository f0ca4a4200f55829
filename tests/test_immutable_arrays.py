"""Outside the fast providers nothing writes into an array: BatchNorm's running
statistics, optimizers, load_state_dict, trainer load_params and numerical gradients
work on JAX's immutable arrays and give NumPy's values."""
import warnings

import numpy as np
import pytest

import xpnet
from xpnet import layers as L
from xpnet.gradient_check import PrecisionWarning, numerical_gradient
from xpnet.trainer import arrays as tarrays

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install -e '.[jax]')")
DEV = "jax:cpu"


def small_net(device, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: xpnet.to_device(rng.standard_normal(s).astype(np.float32), device)
    layers = [L.Affine(f(4, 5), f(5)), L.BatchNormalization(f(5) + 2.0, f(5)), L.Relu(),
              L.Affine(f(5, 3), f(3))]
    return xpnet.Sequential(layers)


def host(d):
    return {k: xpnet.asnumpy(v) for k, v in d.items()}


def test_running_stats_is_one_function_of_arrays():
    rm, rv = np.zeros(3), np.ones(3)
    mean, var = np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0])
    nm, nv = L.running_stats(rm, rv, mean, var, 5, 0.9)
    np.testing.assert_allclose(nm, 0.1 * mean)
    np.testing.assert_allclose(nv, 0.9 + 0.1 * 4.0 * 5 / 4)
    assert rm.tolist() == [0, 0, 0] and rv.tolist() == [1, 1, 1]     # inputs untouched


def test_batchnorm_rebinds_its_statistics_on_jax():
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32) * 3 + 1
    ref, mine = small_net("cpu"), small_net(DEV)
    before = mine.layers[1].buffers["running_mean"]
    for net in (ref, mine):
        net.predict(x, train_flg=True)
    assert mine.layers[1].buffers["running_mean"] is not before
    a, b = host(mine.buffers), host(ref.buffers)
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(b["running_mean1"], 0)


def test_optimizer_update_rebinds_parameters_on_jax():
    x = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    t = np.array([0, 1, 2, 0, 1, 2])
    ref, mine = small_net("cpu"), small_net(DEV)
    # Momentum, not Adam: b1 before BatchNorm has a gradient of rounding noise only
    ro, mo = xpnet.Momentum(lr=0.01), xpnet.Momentum(lr=0.01)
    w_before = mine.params["W1"]
    for _ in range(2):
        ro.update(ref.params, ref.gradient(x, t))
        mo.update(mine.params, mine.gradient(x, t))
    assert mine.params["W1"] is not w_before and isinstance(mine.params["W1"], jax.Array)
    a, b = host(mine.params), host(ref.params)
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_load_state_dict_and_trainer_load_params_on_jax():
    src, dst = small_net("cpu", seed=1), small_net(DEV, seed=2)
    sd = src.state_dict()
    dst.load_state_dict(sd)
    got = dst.state_dict()
    assert all(np.array_equal(got[k], sd[k]) for k in sd)
    assert all(isinstance(v, jax.Array) for v in dst.params.values())
    params = {k: v for k, v in src.params.items()}
    other = small_net(DEV, seed=3)
    tarrays.load_params(other.params, {k: xpnet.asnumpy(v) for k, v in params.items()},
                        other.device)
    assert all(np.array_equal(xpnet.asnumpy(other.params[k]), sd[k]) for k in params)


def test_numerical_gradient_of_immutable_arrays():
    x = np.random.default_rng(3).standard_normal((2, 3))
    for dev in ("cpu", DEV):
        a = xpnet.to_device(x.astype(np.float32), dev)
        with pytest.warns(PrecisionWarning):
            g = numerical_gradient(lambda w: (w * w).sum(), a, h=1e-2)
        np.testing.assert_allclose(xpnet.asnumpy(g), 2 * x, rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(xpnet.asnumpy(a), x.astype(np.float32))   # restored
    xs = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    t = np.array([0, 1, 2])
    ref, mine = small_net("cpu"), small_net(DEV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        want = ref.numerical_gradient(xs, t, h=1e-2)
        got = mine.numerical_gradient(xs, t, h=1e-2)
    for k in want:
        np.testing.assert_allclose(xpnet.asnumpy(got[k]), want[k], rtol=2e-2, atol=2e-3,
                                   err_msg=k)
    np.testing.assert_array_equal(xpnet.asnumpy(mine.params["W1"]),
                                  xpnet.asnumpy(small_net(DEV).params["W1"]))  # restored
