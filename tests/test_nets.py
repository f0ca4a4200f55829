"""Nets: gradient checks of every ready-made net, naming, regularization, accuracy, dtype,
devices, state dicts and the errors bad arguments get."""
import numpy as np
import pytest

import xpnet
from xpnet import layers as L
from xpnet.gradient_check import directional_check, numerical_gradient


def grad_error(numeric, analytic, floor=1e-12):
    a = np.asarray(xpnet.asnumpy(numeric), dtype=np.float64)
    b = np.asarray(xpnet.asnumpy(analytic), dtype=np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), floor))


# Float64 central differences against backprop. SoftmaxWithLoss computes its loss from
# log-softmax, so loss and gradient agree exactly; the worst error seen over the nets and
# backends was 1.1e-8 (MultiLayerNetExtend with BatchNorm and dropout on torch-cpu), and
# 1e-9 to 1e-10 elsewhere. (With the book's -log(p + 1e-7) it was 2e-7 to 3e-6.)
RTOL = 3e-8
# Biases feeding a BatchNorm have true gradient 0: both sides must be ~0 instead.
ATOL_ZERO = 1e-8


def small_data(rng, n, in_shape, classes):
    x = rng.standard_normal((n,) + tuple(in_shape))
    t = rng.integers(0, classes, n)
    return x, t


def randomize_biases(net, rng):
    """Nonzero biases: with zero biases a ReLU fed only dead units sits exactly on its kink,
    where central differences see slope 1/2."""
    for k in net.params:
        if k.startswith("b"):
            p = net.params[k]
            p[...] = xpnet.to_device(0.1 * rng.standard_normal(p.shape), net.device)


def check_probabilities(net, x, t, reseed=None):
    """Keep p of the true class above 0.02: a gradient check of a saturated softmax checks
    little."""
    if reseed is not None:
        xpnet.seed(reseed)
    y = xpnet.asnumpy(net.predict(x, train_flg=True)).astype(np.float64)
    p = np.exp(y - y.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert p[np.arange(len(p)), xpnet.asnumpy(t)].min() > 0.02, "test data too confident"


def full_check(net, x, t, zero_grad=(), reseed=None, keys=None):
    """Backprop vs the book's element-by-element numerical gradient."""
    def loss(_=None):
        if reseed is not None:
            xpnet.seed(reseed)
        return float(net.loss(x, t, train_flg=True))
    check_probabilities(net, x, t, reseed)
    if reseed is not None:
        xpnet.seed(reseed)
    grads = {k: xpnet.asnumpy(v).copy() for k, v in net.gradient(x, t).items()}
    assert set(grads) == set(net.params)
    for k in keys or net.params:
        num = numerical_gradient(loss, net.params[k])
        if k in zero_grad:
            assert np.abs(xpnet.asnumpy(num)).max() < ATOL_ZERO, k
            assert np.abs(grads[k]).max() < ATOL_ZERO, k
            continue
        err = grad_error(num, grads[k])
        assert err < RTOL, "%s: relative error %g" % (k, err)


def test_two_layer_net_gradient(backend):
    rng = np.random.default_rng(0)
    net = xpnet.TwoLayerNet(6, 5, 3, weight_init_std=0.5, dtype="float64", seed=1,
                            device=backend.device)
    x, t = small_data(rng, 4, (6,), 3)
    randomize_biases(net, rng)
    full_check(net, backend.asarray(x), backend.asarray(t))
    # the net's own numerical_gradient gives the same
    g = net.gradient(x, t)
    ng = net.numerical_gradient(x, t)
    for k in net.params:
        assert grad_error(ng[k], g[k]) < RTOL, k


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_multi_layer_net_gradient(backend, activation):
    rng = np.random.default_rng(1)
    net = xpnet.MultiLayerNet(5, [6, 4], 3, activation=activation, dtype="float64", seed=2,
                              device=backend.device)
    x, t = small_data(rng, 5, (5,), 3)
    randomize_biases(net, rng)
    full_check(net, backend.asarray(0.4 * x), backend.asarray(t))


def test_multi_layer_net_extend_bn_dropout_gradient(backend):
    rng = np.random.default_rng(2)
    net = xpnet.MultiLayerNetExtend(5, [6, 4], 3, use_batchnorm=True, use_dropout=True,
                                    dropout_ratio=0.3, dtype="float64", seed=3,
                                    device=backend.device)
    x, t = small_data(rng, 6, (5,), 3)
    randomize_biases(net, rng)
    # a fixed dropout mask: xpnet is reseeded before every forward pass
    full_check(net, backend.asarray(x), backend.asarray(t), zero_grad=("b1", "b2"), reseed=5)
    # dropout off (evaluation has no mask); BN then uses its running statistics
    assert float(net.loss(x, t, train_flg=False)) > 0


def test_simple_conv_net_gradient(backend):
    rng = np.random.default_rng(3)
    net = xpnet.SimpleConvNet((2, 7, 6), {"filter_num": 3, "filter_size": 3, "pad": 1,
                                          "stride": 2},
                              hidden_size=5, output_size=3, weight_init_std=0.3,
                              dtype="float64", seed=4, device=backend.device)
    x, t = small_data(rng, 3, (2, 7, 6), 3)
    randomize_biases(net, rng)
    full_check(net, backend.asarray(x), backend.asarray(t))


def test_deep_conv_net_gradient(backend):
    """DeepConvNet on 12x12 inputs with few filters; dropout on with a fixed mask.
    Directional checks over all parameters plus central differences of a random subset
    of entries of every parameter (the full numerical gradient would be slow)."""
    rng = np.random.default_rng(4)
    small = {"filter_num": 3}
    net = xpnet.DeepConvNet((1, 12, 12), *[dict(small) for _ in range(6)], hidden_size=6,
                            output_size=4, dropout_ratio=0.3, dtype="float64", seed=5,
                            device=backend.device)
    assert [k for k in net.params if k.startswith("W")] == ["W%d" % i for i in range(1, 9)]
    x, t = small_data(rng, 3, (1, 12, 12), 4)
    x, t = backend.asarray(x), backend.asarray(t)
    randomize_biases(net, rng)
    check_probabilities(net, x, t, reseed=7)

    def loss():
        xpnet.seed(7)
        return float(net.loss(x, t, train_flg=True))

    xpnet.seed(7)
    grads = {k: backend.copy(v) for k, v in net.gradient(x, t).items()}
    assert directional_check(loss, net.params, grads, n_dirs=3, seed=1) < RTOL
    h = 1e-5
    for k in net.params:
        p = net.params[k]
        size = int(np.prod(p.shape))
        g = xpnet.asnumpy(grads[k]).reshape(-1)
        for i in rng.choice(size, size=min(4, size), replace=False):
            idx = tuple(int(j) for j in np.unravel_index(i, tuple(p.shape)))
            old = float(p[idx])
            p[idx] = old + h
            lp = loss()
            p[idx] = old - h
            lm = loss()
            p[idx] = old
            num = (lp - lm) / (2 * h)
            assert abs(num - g[i]) <= RTOL * max(abs(num), abs(g[i])) + 1e-9, (k, i, num, g[i])
    # a broken gradient is caught by the directional check
    grads["W3"] = grads["W3"] * 1.01
    assert directional_check(loss, net.params, grads, n_dirs=3, seed=1) > 1e-4


# ---------------------------------------------------------------- naming

def test_sequential_params_and_grads_naming(backend):
    rng = np.random.default_rng(5)
    a = lambda *s: backend.asarray(rng.standard_normal(s))
    layers = [L.Affine(a(4, 5), a(5)), L.BatchNormalization(a(5) + 2, a(5)), L.Relu(),
              L.Affine(a(5, 3), a(3)), L.Tanh(), L.Affine(a(3, 2), a(2))]
    net = xpnet.Sequential(layers)
    assert list(net.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "W3", "b3"]
    assert set(net.buffers) == {"running_mean1", "running_var1"}
    assert net.params["W2"] is layers[3].params["W"]
    assert net.params["gamma1"] is layers[1].gamma
    assert len(net.params) == 8 and "W3" in net.params and "W4" not in net.params
    grads = net.gradient(backend.asarray(rng.standard_normal((3, 4))), backend.asarray([0, 1, 1]))
    assert list(grads) == list(net.params)
    for k in net.params:
        assert grads[k].shape == net.params[k].shape
        assert net.grads[k] is not None
    # the view is live: an optimizer updates the layers' arrays
    before = backend.np(layers[0].W)
    xpnet.SGD(lr=0.1).update(net.params, grads)
    backend.assert_close(layers[0].W, before - 0.1 * backend.np(grads["W1"]), rtol=1e-12)
    # assignment checks the shape and keeps device and dtype
    net.params["W1"] = np.zeros((4, 5), dtype=np.float32)
    assert xpnet.get_array_module(layers[0].W) is backend.xp and backend.dtype(layers[0].W) == "float64"
    with pytest.raises(ValueError, match=r"parameter 'W1' has shape \(4, 5\), got \(5, 4\)"):
        net.params["W1"] = np.zeros((5, 4))
    with pytest.raises(KeyError, match="has no parameter 'W9'; it has W1, b1, gamma1"):
        net.params["W9"]


def test_conv_net_naming():
    net = xpnet.SimpleConvNet((1, 8, 8), {"filter_num": 2, "filter_size": 3, "pad": 0,
                                          "stride": 1}, hidden_size=4, seed=0, device="cpu")
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert net.params["W1"].shape == (2, 1, 3, 3)
    assert net.params["W2"].shape == (2 * 3 * 3, 4)
    ext = xpnet.MultiLayerNetExtend(4, [3, 3], 2, use_batchnorm=True, seed=0, device="cpu")
    assert list(ext.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2",
                                "W3", "b3"]


def test_name_collision_is_refused():
    bn = lambda: L.BatchNormalization(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="parameter names collide"):
        xpnet.Sequential([L.Affine(np.ones((3, 3)), np.zeros(3)), bn(), bn()])


# ---------------------------------------------------------------- regularization

def test_weight_decay_l2_and_l1(backend):
    rng = np.random.default_rng(6)
    lam2, lam1 = 0.3, 0.05
    x, t = small_data(rng, 4, (5,), 3)
    plain = xpnet.MultiLayerNet(5, [4], 3, dtype="float64", seed=7, device=backend.device)
    reg = xpnet.MultiLayerNet(5, [4], 3, dtype="float64", seed=7, device=backend.device,
                              weight_decay_lambda=lam2, l1_lambda=lam1)
    W = [backend.np(reg.params[k]) for k in ("W1", "W2")]
    extra = sum(0.5 * lam2 * (w ** 2).sum() + lam1 * np.abs(w).sum() for w in W)
    assert float(reg.loss(x, t)) == pytest.approx(float(plain.loss(x, t)) + extra, rel=1e-12)
    g0, g1 = plain.gradient(x, t), reg.gradient(x, t)
    for k, w in zip(("W1", "W2"), W):
        backend.assert_close(g1[k], backend.np(g0[k]) + lam2 * w + lam1 * np.sign(w), rtol=1e-10)
    for k in ("b1", "b2"):            # biases aren't regularized
        backend.assert_close(g1[k], g0[k], rtol=1e-12)
    full_check(reg, backend.asarray(x), backend.asarray(t))


def test_negative_regularization_refused():
    with pytest.raises(ValueError, match="weight_decay_lambda and l1_lambda must be >= 0"):
        xpnet.MultiLayerNet(3, [2], 2, weight_decay_lambda=-1, device="cpu")


# ---------------------------------------------------------------- accuracy

def test_accuracy_counts_the_remainder_batch(backend):
    rng = np.random.default_rng(8)
    net = xpnet.MultiLayerNet(4, [5], 3, seed=9, device=backend.device)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    pred = backend.np(net.predict(x)).argmax(axis=1)
    for bs in (1, 3, 4, 10, 100):
        assert net.accuracy(x, pred, batch_size=bs) == 1.0, bs
        wrong_last = pred.copy()
        wrong_last[-1] = (pred[-1] + 1) % 3          # only the remainder sample is wrong
        assert net.accuracy(x, wrong_last, batch_size=bs) == pytest.approx(0.9), bs
    one_hot = np.eye(3)[pred]
    assert net.accuracy(x, one_hot, batch_size=3) == 1.0
    assert net.accuracy(backend.asarray(x), backend.asarray(pred), batch_size=3) == 1.0
    with pytest.raises(ValueError, match="accuracy: 10 samples but 9 labels"):
        net.accuracy(x, pred[:9])


# ---------------------------------------------------------------- dtype

NETS = {
    "TwoLayerNet": lambda dev, dt: (xpnet.TwoLayerNet(6, 5, 3, dtype=dt, seed=0, device=dev), (6,)),
    "MultiLayerNet": lambda dev, dt: (xpnet.MultiLayerNet(
        6, [5, 4], 3, dtype=dt, seed=0, device=dev, weight_decay_lambda=0.1, l1_lambda=0.01), (6,)),
    "MultiLayerNetExtend": lambda dev, dt: (xpnet.MultiLayerNetExtend(
        6, [5, 4], 3, use_batchnorm=True, use_dropout=True, dtype=dt, seed=0, device=dev,
        weight_decay_lambda=0.1), (6,)),
    "SimpleConvNet": lambda dev, dt: (xpnet.SimpleConvNet(
        (1, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}, hidden_size=5,
        output_size=3, dtype=dt, seed=0, device=dev), (1, 8, 8)),
    "DeepConvNet": lambda dev, dt: (xpnet.DeepConvNet(
        (1, 12, 12), *[{"filter_num": 2}] * 6, hidden_size=5, output_size=3, dtype=dt, seed=0,
        device=dev), (1, 12, 12)),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_float32_net_stays_float32(backend, name):
    net, in_shape = NETS[name](backend.device, "float32")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4,) + in_shape).astype(np.float32)
    t = rng.integers(0, 3, 4)
    assert backend.dtype(net) == "float32"
    assert backend.dtype(net.predict(x)) == "float32"
    assert backend.dtype(net.predict(x, train_flg=True)) == "float32"
    assert backend.dtype(net.loss_array(x, t)) == "float32"
    assert type(net.loss(x, t)) is float          # the book's print(loss) shows a number
    grads = net.gradient(x, t)
    assert backend.dtype(net.last_loss_array) == "float32"
    assert type(net.last_loss) is float
    for k, g in grads.items():
        assert backend.dtype(g) == "float32", k
    opt = xpnet.Adam(lr=1e-3)
    opt.update(net.params, grads)
    for k, p in net.params.items():
        assert backend.dtype(p) == "float32", k
    for k, b in net.buffers.items():
        assert backend.dtype(b) == "float32", k
    for st in opt.state.values():
        for a in st.values():
            assert backend.dtype(a) == "float32"
    # float64 input is cast to the net's dtype
    assert backend.dtype(net.predict(x.astype(np.float64))) == "float32"


def test_astype_float64_then_float16(backend):
    net, _ = NETS["TwoLayerNet"](backend.device, "float32")
    x = np.random.default_rng(0).standard_normal((3, 6))
    y32 = backend.np(net.predict(x))
    net.astype("float64")
    assert backend.dtype(net) == "float64" and net.config["dtype"] == "float64"
    backend.assert_close(net.predict(x), y32, rtol=1e-5, atol=1e-6)
    if backend.name == "array-api-strict":      # the standard has no float16
        with pytest.raises(ValueError, match="array_api_strict arrays have no float16"):
            net.astype(np.float16)
        assert backend.dtype(net) == "float64"
    else:
        net.astype(np.float16)
        assert backend.dtype(net.predict(x)) == "float16"
    with pytest.raises(ValueError, match="dtype must be one of float32, float64, float16, got "
                                         "'int8'"):
        net.astype("int8")


# ---------------------------------------------------------------- devices

def test_net_moves_its_input_to_its_device(backend):
    net, _ = NETS["SimpleConvNet"](backend.device, "float32")
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8))      # host data
    y = net.predict(x)
    assert xpnet.get_array_module(y) is backend.xp
    assert net.loss_array(x, np.array([0, 1])).shape == ()
    assert net.device == xpnet.get_device(backend.device)


def test_training_continues_after_moving_net_and_optimizer(backend):
    """Two Adam steps on the CPU, then two on the backend's device (net moved with
    net.to, the optimizer's state following it) == four steps on the CPU."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 6))
    t = rng.integers(0, 3, 6)
    nets, opts = [], []
    for _ in range(2):
        nets.append(xpnet.MultiLayerNet(6, [5], 3, dtype="float64", seed=3, device="cpu"))
        opts.append(xpnet.Adam(lr=0.01))
    for step in range(4):
        if step == 2:
            nets[1].to(backend.device)
            assert nets[1].device == xpnet.get_device(backend.device)
        for net, opt in zip(nets, opts):
            opt.update(net.params, net.gradient(x, t))
    for st in opts[1].state.values():
        for a in st.values():
            assert xpnet.get_array_module(a) is backend.xp
    for k in nets[0].params:
        # float64 on both; GPU BLAS may round differently in the last bits
        backend.assert_close(nets[1].params[k], nets[0].params[k], rtol=1e-9, atol=1e-9,
                             what=k)


# ---------------------------------------------------------------- state dicts

def test_state_dict_and_load_state_dict(backend):
    net, _ = NETS["MultiLayerNetExtend"](backend.device, "float32")
    x = np.random.default_rng(3).standard_normal((5, 6))
    net.gradient(x, np.array([0, 1, 2, 0, 1]))       # moves the running statistics
    sd = net.state_dict()
    assert set(sd) == set(net.params) | set(net.buffers)
    assert all(type(v) is np.ndarray for v in sd.values())
    y = backend.np(net.predict(x))
    other, _ = NETS["MultiLayerNetExtend"](backend.device, "float32")
    other.params["W1"][...] = 0
    other.load_state_dict(sd)
    np.testing.assert_array_equal(backend.np(other.predict(x)), y)
    # a snapshot: training on doesn't change what was saved
    saved = {k: v.copy() for k, v in sd.items()}
    xpnet.SGD(lr=1.0).update(net.params, net.gradient(x, np.array([0, 1, 2, 0, 1])))
    for k in sd:
        np.testing.assert_array_equal(sd[k], saved[k], err_msg=k)
    bad = dict(sd)
    bad["W2"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"parameter 'W2': file has shape \(3, 3\), "
                                         r"MultiLayerNetExtend expects \(5, 4\)"):
        other.load_state_dict(bad)
    missing = {k: v for k, v in sd.items() if k != "running_var2"}
    with pytest.raises(ValueError, match=r"missing \['running_var2'\], unexpected none"):
        other.load_state_dict(missing)
    other.load_state_dict(missing, strict=False)


# ---------------------------------------------------------------- bad arguments

def test_net_input_and_label_errors(backend):
    net, _ = NETS["MultiLayerNet"](backend.device, "float32")
    with pytest.raises(ValueError, match=r"Affine: input of shape \(2, 5\) has 5 features per "
                                         r"sample, W expects 6"):
        net.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="MultiLayerNet.loss: 2 samples but 3 labels"):
        net.loss(np.zeros((2, 6)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must be integer class indices of shape \(2,\)"):
        net.loss(np.zeros((2, 6)), np.array([[0, 1], [1, 0]]))
    for labels in ([0, 3], [-1, 0], backend.asarray(np.array([0, 7]))):
        with pytest.raises(ValueError, match=r"SoftmaxWithLoss: label -?\d at index \d is outside "
                                             r"\[0, 3\) \(3 classes\)"):
            net.loss(np.zeros((2, 6)), labels)
        with pytest.raises(ValueError, match=r"accuracy: label -?\d at index \d is outside"):
            net.accuracy(np.zeros((2, 6)), labels)
    for bad in (np.array(["1.0", "2.0"]), np.zeros((2, 6), complex), np.zeros((2, 6), bool),
                np.array([None, None])):
        with pytest.raises(TypeError, match="MultiLayerNet: input must hold real numbers"):
            net.predict(bad)
    with pytest.raises(ValueError, match=r"MultiLayerNet: input must be a non-empty batch, got "
                                         r"shape \(0, 6\)"):
        net.predict(np.zeros((0, 6)))
    for bs in (0, -5, 2.5):
        with pytest.raises((ValueError, TypeError), match="accuracy: batch_size must be a "
                                                          "positive int"):
            net.accuracy(np.zeros((2, 6)), [0, 1], batch_size=bs)
    conv, _ = NETS["SimpleConvNet"](backend.device, "float32")
    with pytest.raises(ValueError, match=r"Convolution: expected a 4-D input, got shape \(2, 64\)"):
        conv.predict(np.zeros((2, 64)))
    with pytest.raises(ValueError, match=r"Convolution: input has 3 channels \(shape "
                                         r"\(2, 3, 8, 8\)\), W expects 1"):
        conv.predict(np.zeros((2, 3, 8, 8)))


def test_constructor_errors():
    with pytest.raises(ValueError, match="activation must be one of relu, sigmoid, tanh, got "
                                         "'gelu'"):
        xpnet.MultiLayerNet(4, [3], 2, activation="gelu", device="cpu")
    with pytest.raises(ValueError, match="hidden_size_list entry must be a positive int, got 0"):
        xpnet.MultiLayerNet(4, [3, 0], 2, device="cpu")
    with pytest.raises(TypeError, match="input_size must be a positive int, got 4.5"):
        xpnet.TwoLayerNet(4.5, 3, 2, device="cpu")
    with pytest.raises(ValueError, match="output_size must be a positive int, got -2"):
        xpnet.TwoLayerNet(4, 3, -2, device="cpu")
    with pytest.raises(ValueError, match="weight_init_std must be a number or one of"):
        xpnet.MultiLayerNet(4, [3], 2, weight_init_std="lecun", device="cpu")
    with pytest.raises(ValueError, match="weight_init_std must be >= 0, got -0.1"):
        xpnet.TwoLayerNet(4, 3, 2, weight_init_std=-0.1, device="cpu")
    with pytest.raises(ValueError, match="dtype must be one of float32, float64, float16"):
        xpnet.TwoLayerNet(4, 3, 2, dtype="int32", device="cpu")
    with pytest.raises(ValueError, match=r"input_dim must be \(C, H, W\), got \(28, 28\)"):
        xpnet.SimpleConvNet((28, 28), device="cpu")
    with pytest.raises(ValueError, match=r"conv_param: unknown keys \['filters'\]; valid:"):
        xpnet.SimpleConvNet((1, 8, 8), {"filters": 3}, device="cpu")
    with pytest.raises(ValueError, match="stride must be >= 1 and pad >= 0, got stride=-1"):
        xpnet.SimpleConvNet((1, 8, 8), {"stride": -1, "filter_size": 3}, device="cpu")
    with pytest.raises(ValueError, match="window 5 is larger than the padded input 4"):
        xpnet.SimpleConvNet((1, 4, 4), device="cpu")
    with pytest.raises(ValueError, match=r"dropout_ratio must be a number in \[0, 1\)"):
        xpnet.MultiLayerNetExtend(4, [3], 2, use_dropout=True, dropout_ratio=1.0, device="cpu")
    with pytest.raises(ValueError, match="unknown network type 'ResNet'"):
        xpnet.build_net({"type": "ResNet"})
    with pytest.raises(xpnet.DeviceError, match="unknown device 'tpu'"):
        xpnet.TwoLayerNet(4, 3, 2, device="tpu")


def test_book_spelling_dropout_ration():
    net = xpnet.MultiLayerNetExtend(4, [3], 2, use_dropout=True, dropout_ration=0.25,
                                    device="cpu")
    assert [l.dropout_ratio for l in net.layers if isinstance(l, L.Dropout)] == [0.25]


@pytest.mark.parametrize("name", sorted(NETS))
def test_build_net_from_config_rebuilds_the_same_net(name):
    net, in_shape = NETS[name]("cpu", "float32")
    again = xpnet.build_net(net.config, device="cpu")
    assert type(again) is type(net)
    assert list(again.params) == list(net.params)
    for k in net.params:
        assert again.params[k].shape == net.params[k].shape, k
        assert again.params[k].dtype == net.params[k].dtype, k
    assert again.config == net.config


@pytest.mark.parametrize("name", ["SimpleConvNet", "DeepConvNet"])
def test_predict_from_several_threads_equals_serial(name):
    """Layers keep caches and column buffers: one net used by several threads at once must
    still give each caller its own answer (the net's passes take turns)."""
    import threading
    conv = {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}
    net = (xpnet.SimpleConvNet((1, 12, 12), conv, hidden_size=8, output_size=5, seed=0)
           if name == "SimpleConvNet" else
           xpnet.DeepConvNet((1, 12, 12), *[conv] * 6, hidden_size=8, output_size=5, seed=0))
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, 1, 12, 12)).astype(np.float32) for n in (3, 8, 5, 8)]
    serial = [xpnet.asnumpy(net.predict(b)).copy() for b in batches]
    got = {}

    def work(k):
        for r in range(25):
            i = (k + r) % len(batches)
            got.setdefault((k, r), (i, xpnet.asnumpy(net.predict(batches[i])).copy()))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 100
    for i, y in got.values():
        np.testing.assert_array_equal(y, serial[i])


def test_a_net_can_be_deep_copied():
    import copy
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    twin = copy.deepcopy(net)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(twin.predict(x), net.predict(x))
    twin.params["W1"][...] = 0
    assert float(np.abs(net.params["W1"]).sum()) > 0


def test_a_layer_without_bias_saves_and_loads(tmp_path):
    from xpnet import layers as L
    net = xpnet.Sequential([L.Affine(np.arange(6.0).reshape(3, 2), None)])
    assert set(net.state_dict()) == {"W1"}
    path = net.save_params(tmp_path / "nobias")
    other = xpnet.Sequential([L.Affine(np.zeros((3, 2)), None)])
    other.load_params(path)
    np.testing.assert_array_equal(other.params["W1"], np.arange(6.0).reshape(3, 2))
