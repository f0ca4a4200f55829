"""Layers: gradient checks, dtype, no in-place writes, strided inputs, BN/Dropout behaviour,
and the errors bad input gets."""
import numpy as np
import pytest

import xpnet
from xpnet import layers as L
from xpnet.gradient_check import numerical_gradient, relative_error


def grad_error(numeric, analytic, floor):
    """max|numeric - analytic| / max(max|numeric|, max|analytic|, floor), on the host."""
    a = np.asarray(xpnet.asnumpy(numeric), dtype=np.float64)
    b = np.asarray(xpnet.asnumpy(analytic), dtype=np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), floor))


# ---------------------------------------------------------------- layer factories
# Each returns (layer, x, extra) with x a host array; extra is the loss target for loss
# layers, or None. `be` is the backend (arrays are made on its device), dt the dtype.

def _affine(be, dt, rng):
    W = be.asarray(rng.standard_normal((12, 5)) * 0.5, dt)
    b = be.asarray(rng.standard_normal(5), dt)
    return L.Affine(W, b), rng.standard_normal((4, 3, 2, 2)), None


def _relu(be, dt, rng):
    return L.Relu(), rng.standard_normal((3, 5)), None


def _leaky_relu(be, dt, rng):
    return L.LeakyRelu(0.1), rng.standard_normal((3, 5)), None


def _sigmoid(be, dt, rng):
    return L.Sigmoid(), rng.standard_normal((3, 5)) * 2, None


def _tanh(be, dt, rng):
    return L.Tanh(), rng.standard_normal((3, 5)), None


def _flatten(be, dt, rng):
    return L.Flatten(), rng.standard_normal((2, 3, 2, 2)), None


def _conv(be, dt, rng):
    W = be.asarray(rng.standard_normal((4, 3, 3, 3)) * 0.3, dt)
    b = be.asarray(rng.standard_normal(4), dt)
    return L.Convolution(W, b, stride=2, pad=1), rng.standard_normal((2, 3, 6, 5)), None


def _conv_rect(be, dt, rng):
    W = be.asarray(rng.standard_normal((2, 2, 2, 3)) * 0.3, dt)
    b = be.asarray(rng.standard_normal(2), dt)
    return L.Convolution(W, b, stride=(1, 2), pad=(2, 1)), rng.standard_normal((1, 2, 5, 4)), None


def _maxpool(be, dt, rng):
    return L.Pooling(3, 3, stride=2, pad=1), rng.standard_normal((2, 2, 5, 6)), None


def _maxpool_plain(be, dt, rng):
    return L.Pooling(2, 2, stride=2), rng.standard_normal((2, 3, 4, 4)), None


def _avgpool(be, dt, rng):
    x = rng.standard_normal((1, 2, 5, 4))
    return L.Pooling(3, 2, stride=(2, 1), pad=1, mode="avg"), x, None


def _dropout(be, dt, rng):
    return L.Dropout(0.4), rng.standard_normal((4, 6)), None


def _bn2(be, dt, rng):
    g = be.asarray(1 + 0.5 * rng.standard_normal(4), dt)
    b = be.asarray(rng.standard_normal(4), dt)
    return L.BatchNormalization(g, b), rng.standard_normal((6, 4)) * 2 + 1, None


def _bn4(be, dt, rng):
    g = be.asarray(1 + 0.5 * rng.standard_normal(3), dt)
    b = be.asarray(rng.standard_normal(3), dt)
    return L.BatchNormalization(g, b), rng.standard_normal((2, 3, 3, 2)) * 2 - 1, None


def _softmax_int(be, dt, rng):
    return L.SoftmaxWithLoss(), rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])


def _softmax_onehot(be, dt, rng):
    return L.SoftmaxWithLoss(), rng.standard_normal((5, 4)), np.eye(4)[[2, 0, 3, 3, 1]]


def _identity_loss(be, dt, rng):
    return L.IdentityWithLoss(), rng.standard_normal((4, 3)), rng.standard_normal((4, 3))


LAYERS = {
    "affine_nd": _affine, "relu": _relu, "leaky_relu": _leaky_relu, "sigmoid": _sigmoid,
    "tanh": _tanh,
    "flatten": _flatten, "conv_s2_p1": _conv, "conv_rect": _conv_rect,
    "maxpool_pad": _maxpool, "maxpool": _maxpool_plain, "avgpool_pad": _avgpool,
    "dropout": _dropout, "bn_2d": _bn2, "bn_4d": _bn4,
    "softmax_int_labels": _softmax_int, "softmax_one_hot": _softmax_onehot,
    "identity_loss": _identity_loss,
}
LOSSES = {"softmax_int_labels", "softmax_one_hot", "identity_loss"}


def run_forward(layer, x, t, train=True):
    """Forward in training mode; Dropout draws the same mask every time (reseeded)."""
    if isinstance(layer, L.Dropout):
        xpnet.seed(99)
    if t is not None:
        return layer.forward(x, t)
    return layer.forward(x, train)


# ---------------------------------------------------------------- gradient checks (float64)

# Relative error bounds, |numeric - analytic| / max(|numeric|, |analytic|) over the array:
# central differences with h=1e-4 in float64 are good to ~1e-9 on these smooth-enough
# functions, the loss layers included (SoftmaxWithLoss's loss comes from log-softmax, so its
# gradient is exact; with the book's log(p + 1e-7) this bound had to be 1e-5).
RTOL = 1e-7
RTOL_LOSS = 1e-8


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradients_match_numerical(backend, name):
    rng = np.random.default_rng(len(name))
    layer, x_host, t_host = LAYERS[name](backend, np.float64, rng)
    x = backend.asarray(x_host)
    t = None if t_host is None else backend.asarray(t_host)
    rtol = RTOL_LOSS if name in LOSSES else RTOL

    out = run_forward(layer, x, t)
    if name in LOSSES:
        f = lambda _: float(run_forward(layer, x, t))
        dx = layer.backward(1)
    else:
        r = backend.asarray(rng.standard_normal(out.shape))
        f = lambda _: float(backend.xp.sum(run_forward(layer, x, t) * r))
        dx = layer.backward(r)
    analytic = {k: backend.np(v) for k, v in layer.grads.items()}
    assert set(analytic) == set(layer.params)
    dx = backend.np(dx)

    assert grad_error(numerical_gradient(f, x), dx, 1e-12) < rtol, "dx"
    for k, p in layer.params.items():
        err = grad_error(numerical_gradient(f, p), analytic[k], 1e-12)
        assert err < rtol, "d%s: relative error %g" % (k, err)


def test_gradient_check_catches_a_wrong_gradient(backend):
    """The check above can fail: a deliberately broken backward is caught."""
    rng = np.random.default_rng(0)
    layer = L.Tanh()
    x = backend.asarray(rng.standard_normal((3, 4)))
    r = backend.asarray(rng.standard_normal((3, 4)))
    layer.forward(x)
    wrong = layer.backward(r) * 1.001
    num = numerical_gradient(lambda _: float(backend.xp.sum(layer.forward(x) * r)), x)
    assert grad_error(num, wrong, 1e-12) > 1e-4
    assert relative_error(num, wrong) > 1e-4
    layer.forward(x)          # the numerical pass left a perturbed forward cached
    assert relative_error(num, layer.backward(r)) < RTOL


def test_directional_check_agrees_with_backprop(backend):
    from xpnet.gradient_check import directional_check
    rng = np.random.default_rng(1)
    layer, x_host, _ = _conv(backend, np.float64, rng)
    x = backend.asarray(x_host)
    r = backend.asarray(rng.standard_normal(layer.forward(x).shape))
    layer.backward(r)
    grads = {k: backend.copy(v) for k, v in layer.grads.items()}
    loss = lambda: float(backend.xp.sum(layer.forward(x) * r))
    assert directional_check(loss, layer.params, grads, n_dirs=4) < 1e-7
    grads["W"] = grads["W"] * 1.01
    assert directional_check(loss, layer.params, grads, n_dirs=4) > 1e-4


# ---------------------------------------------------------------- dtype, in-place, strides

@pytest.mark.parametrize("name", sorted(LAYERS))
def test_float32_in_float32_out(backend, name):
    rng = np.random.default_rng(2)
    layer, x_host, t_host = LAYERS[name](backend, np.float32, rng)
    x = backend.asarray(x_host, np.float32)
    t = None if t_host is None else backend.asarray(t_host)
    out = run_forward(layer, x, t)
    assert backend.dtype(out) == "float32", "forward"
    dx = layer.backward(1) if name in LOSSES else layer.backward(
        backend.asarray(np.ones(out.shape), np.float32))
    assert backend.dtype(dx) == "float32", "backward"
    for k in layer.params:
        assert backend.dtype(layer.params[k]) == "float32", k
        assert backend.dtype(layer.grads[k]) == "float32", "grad " + k
    for k, v in layer.buffers.items():
        assert backend.dtype(v) == "float32", k
    if name not in LOSSES:       # eval mode too
        assert backend.dtype(layer.forward(x, False)) == "float32"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_no_writes_into_input_or_incoming_gradient(backend, name):
    rng = np.random.default_rng(3)
    layer, x_host, t_host = LAYERS[name](backend, np.float64, rng)
    x = backend.asarray(x_host)
    t = None if t_host is None else backend.asarray(t_host)
    x0, t0 = backend.copy(x), None if t is None else backend.copy(t)
    params0 = {k: backend.copy(v) for k, v in layer.params.items()}
    out = run_forward(layer, x, t)
    if name in LOSSES:
        layer.backward(1)
    else:
        dout = backend.asarray(rng.standard_normal(out.shape))
        d0 = backend.copy(dout)
        layer.backward(dout)
        np.testing.assert_array_equal(backend.np(dout), backend.np(d0), err_msg="dout changed")
        layer.forward(x, False)              # evaluation mode too
    np.testing.assert_array_equal(backend.np(x), backend.np(x0), err_msg="input changed")
    if t is not None:
        np.testing.assert_array_equal(backend.np(t), backend.np(t0), err_msg="target changed")
    for k, v in layer.params.items():
        np.testing.assert_array_equal(backend.np(v), backend.np(params0[k]), err_msg=k)


def _strided(be, a):
    return be.strided(a)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_non_contiguous_inputs_give_the_same_result(backend, name):
    rng = np.random.default_rng(4)
    layer, x_host, t_host = LAYERS[name](backend, np.float64, rng)
    t = None if t_host is None else backend.asarray(t_host)
    results = []
    for make in (backend.asarray, lambda a: _strided(backend, a)):
        out = run_forward(layer, make(x_host), t)
        if name in LOSSES:
            dx = layer.backward(1)
        else:
            dx = layer.backward(make(np.linspace(-1, 1, int(np.prod(out.shape)))
                                     .reshape(out.shape)))
        results.append((backend.np(out), backend.np(dx),
                        {k: backend.np(v) for k, v in layer.grads.items()}))
    (o1, d1, g1), (o2, d2, g2) = results
    np.testing.assert_allclose(o2, o1, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(d2, d1, rtol=1e-13, atol=1e-13)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-12, atol=1e-13, err_msg=k)


# ---------------------------------------------------------------- BatchNormalization

def test_batchnorm_4d_is_per_channel(backend):
    rng = np.random.default_rng(5)
    C = 3
    x = rng.standard_normal((4, C, 5, 6)) * np.array([1.0, 3.0, 0.5])[:, None, None] \
        + np.array([2.0, -1.0, 7.0])[:, None, None]
    bn = L.BatchNormalization(backend.asarray(np.ones(C)), backend.asarray(np.zeros(C)),
                              momentum=0.0)
    y = backend.np(bn.forward(backend.asarray(x), True))
    assert bn.gamma.shape == bn.beta.shape == (C,)
    assert bn.running_mean.shape == bn.running_var.shape == (C,)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    # momentum 0: the running stats are this batch's, variance unbiased
    backend.assert_close(bn.running_mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    backend.assert_close(bn.running_var, x.transpose(1, 0, 2, 3).reshape(C, -1).var(axis=1, ddof=1),
                         rtol=1e-12)
    bn.forward(backend.asarray(x), True)
    bn.backward(backend.asarray(np.ones_like(x)))
    assert bn.dgamma.shape == bn.dbeta.shape == (C,)
    backend.assert_close(bn.dbeta, np.full(C, x.size / C))


def test_batchnorm_train_vs_eval(backend):
    rng = np.random.default_rng(6)
    D = 4
    gamma = 1 + rng.random(D)
    beta = rng.standard_normal(D)
    bn = L.BatchNormalization(backend.asarray(gamma), backend.asarray(beta), momentum=0.8)
    assert backend.np(bn.running_mean).tolist() == [0] * D
    assert backend.np(bn.running_var).tolist() == [1] * D
    xs = [rng.standard_normal((8, D)) * 2 + 3 for _ in range(3)]
    rm, rv = np.zeros(D), np.ones(D)
    for x in xs:
        y = backend.np(bn.forward(backend.asarray(x), train_flg=True))
        mu, var = x.mean(0), x.var(0)
        np.testing.assert_allclose(y, gamma * (x - mu) / np.sqrt(var + 1e-5) + beta, rtol=1e-10)
        rm = 0.8 * rm + 0.2 * mu
        rv = 0.8 * rv + 0.2 * x.var(0, ddof=1)
    backend.assert_close(bn.running_mean, rm, rtol=1e-12)
    backend.assert_close(bn.running_var, rv, rtol=1e-12)
    # eval uses the running statistics and leaves them alone, even for a batch of one
    x1 = rng.standard_normal((1, D))
    y1 = backend.np(bn.forward(backend.asarray(x1), train_flg=False))
    np.testing.assert_allclose(y1, gamma * (x1 - rm) / np.sqrt(rv + 1e-5) + beta, rtol=1e-10)
    backend.assert_close(bn.running_mean, rm, rtol=1e-12)
    # the default is training mode, as in the book
    y_default = backend.np(bn.forward(backend.asarray(xs[0])))
    mu, var = xs[0].mean(0), xs[0].var(0)
    np.testing.assert_allclose(y_default, gamma * (xs[0] - mu) / np.sqrt(var + 1e-5) + beta,
                               rtol=1e-10)


# ---------------------------------------------------------------- Dropout

def test_dropout_statistics(backend):
    ratio = 0.3
    x = backend.asarray(np.ones((400, 500)), np.float32)
    d = L.Dropout(ratio)
    y = backend.np(d.forward(x, train_flg=True))
    kept = y != 0
    # 200,000 draws: the kept fraction's standard deviation is ~0.001
    assert abs(kept.mean() - (1 - ratio)) < 0.006
    np.testing.assert_allclose(y[kept], 1 / (1 - ratio), rtol=1e-6)   # inverted scaling
    assert abs(y.mean() - 1.0) < 0.01                                   # expectation kept
    g = backend.np(d.backward(backend.asarray(np.full((400, 500), 2.0), np.float32)))
    np.testing.assert_array_equal(g != 0, kept)                         # same mask
    np.testing.assert_allclose(g[kept], 2 / (1 - ratio), rtol=1e-6)
    # a new forward draws a new mask
    y2 = backend.np(d.forward(x, train_flg=True))
    assert (y2 != 0).mean() == pytest.approx(1 - ratio, abs=0.006)
    assert not np.array_equal(y2 != 0, kept)
    # evaluation is the identity and its backward passes the gradient through
    e = d.forward(x, train_flg=False)
    np.testing.assert_array_equal(backend.np(e), backend.np(x))
    np.testing.assert_array_equal(backend.np(d.backward(x)), backend.np(x))


def test_dropout_ratio_zero_is_identity_in_training(backend):
    x = backend.asarray(np.arange(6.0).reshape(2, 3))
    d = L.Dropout(0.0)
    np.testing.assert_array_equal(backend.np(d.forward(x, True)), backend.np(x))


def test_dropout_is_reproducible_with_seed(backend):
    x = backend.asarray(np.ones((50, 40)))
    d = L.Dropout(0.5)
    xpnet.seed(3)
    a = backend.np(d.forward(x, True))
    xpnet.seed(3)
    b = backend.np(d.forward(x, True))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- shapes of N-D Affine

def test_affine_nd_input_restores_gradient_shape(backend):
    rng = np.random.default_rng(7)
    W = backend.asarray(rng.standard_normal((12, 5)))
    layer = L.Affine(W, backend.asarray(np.zeros(5)))
    x = rng.standard_normal((4, 3, 2, 2))
    y = layer.forward(backend.asarray(x))
    backend.assert_close(y, x.reshape(4, -1) @ backend.np(W), rtol=1e-12)
    dx = layer.backward(backend.asarray(np.ones((4, 5))))
    assert dx.shape == (4, 3, 2, 2)
    assert layer.dW.shape == (12, 5) and layer.db.shape == (5,)


def test_affine_without_bias(backend):
    W = backend.asarray(np.eye(3))
    layer = L.Affine(W, None)
    y = layer.forward(backend.asarray(np.ones((2, 3))))
    backend.assert_close(y, np.ones((2, 3)))
    layer.backward(backend.asarray(np.ones((2, 3))))
    assert layer.grads["b"] is None


def test_book_attribute_names_share_arrays(backend):
    W = backend.asarray(np.ones((3, 2)))
    layer = L.Affine(W, backend.asarray(np.zeros(2)))
    assert layer.W is layer.params["W"]
    layer.forward(backend.asarray(np.ones((1, 3))))
    layer.backward(backend.asarray(np.ones((1, 2))))
    assert layer.dW is layer.grads["W"]
    new = backend.asarray(np.zeros((3, 2)))
    layer.W = new
    assert layer.params["W"] is new


# ---------------------------------------------------------------- bad input

def test_affine_errors(backend):
    W = backend.asarray(np.zeros((6, 3)))
    with pytest.raises(ValueError, match=r"Affine: W must be 2-D \(in_features, out_features\), "
                                         r"got shape \(6,\)"):
        L.Affine(W[:, 0], None)
    with pytest.raises(ValueError, match=r"Affine: b must have shape \(3,\), got \(4,\)"):
        L.Affine(W, backend.asarray(np.zeros(4)))
    layer = L.Affine(W, backend.asarray(np.zeros(3)))
    with pytest.raises(ValueError, match=r"Affine: input of shape \(2, 7\) has 7 features per "
                                         r"sample, W expects 6"):
        layer.forward(backend.asarray(np.zeros((2, 7))))
    with pytest.raises(TypeError, match="Affine: input must be a floating-point array, got "
                                        "dtype int"):
        layer.forward(backend.asarray(np.zeros((2, 6), dtype=np.int64)))
    with pytest.warns(L.DtypeWarning, match="Affine: input has dtype float32 but the parameters "
                                            "are float64; the input is cast to float64"):
        y = layer.forward(backend.asarray(np.ones((2, 6)), np.float32))
    assert backend.dtype(y) == "float64"            # the book's float64 classes work unedited
    layer.forward(backend.asarray(np.zeros((2, 6))))
    with pytest.raises(ValueError, match=r"Affine.backward: dout has shape \(2, 4\), expected "
                                         r"\(2, 3\)"):
        layer.backward(backend.asarray(np.zeros((2, 4))))


def test_convolution_errors(backend):
    W = backend.asarray(np.zeros((4, 3, 3, 3)))
    b = backend.asarray(np.zeros(4))
    with pytest.raises(ValueError, match=r"W must be 4-D \(FN, C, FH, FW\), got shape \(4, 3, 3\)"):
        L.Convolution(W[..., 0], b)
    with pytest.raises(ValueError, match=r"b must have shape \(4,\), got \(3,\)"):
        L.Convolution(W, b[:3])
    with pytest.raises(ValueError, match="stride must be >= 1 and pad >= 0, got stride=-1"):
        L.Convolution(W, b, stride=-1)
    with pytest.raises(ValueError, match="stride must be >= 1 and pad >= 0, got stride=0"):
        L.Convolution(W, b, stride=0)
    with pytest.raises(ValueError, match="pad=-2"):
        L.Convolution(W, b, pad=-2)
    layer = L.Convolution(W, b)
    with pytest.raises(ValueError, match=r"Convolution: expected a 4-D input, got shape "
                                         r"\(3, 8, 8\)"):
        layer.forward(backend.asarray(np.zeros((3, 8, 8))))
    with pytest.raises(ValueError, match=r"input has 1 channels \(shape \(2, 1, 8, 8\)\), W "
                                         r"expects 3"):
        layer.forward(backend.asarray(np.zeros((2, 1, 8, 8))))
    with pytest.raises(ValueError, match="window 3 is larger than the padded input 2"):
        layer.forward(backend.asarray(np.zeros((1, 3, 2, 8))))


def test_pooling_errors(backend):
    with pytest.raises(ValueError, match=r"Pooling: pad 2 must be at most half the window "
                                         r"\(2, 2\)"):
        L.Pooling(2, 2, stride=2, pad=2)
    with pytest.raises(ValueError, match="at most half the window"):
        L.Pooling(3, 2, stride=1, pad=(1, 2))
    L.Pooling(3, 3, stride=1, pad=1)          # exactly allowed
    with pytest.raises(ValueError, match="stride must be >= 1 and pad >= 0, got stride=-2"):
        L.Pooling(2, 2, stride=-2)
    with pytest.raises(ValueError, match="mode must be 'max' or 'avg', got 'min'"):
        L.Pooling(2, 2, mode="min")
    with pytest.raises(ValueError, match=r"window must be >= 1, got \(0, 2\)"):
        L.Pooling(0, 2)
    with pytest.raises(ValueError, match=r"Pooling: expected a 4-D input, got shape \(4, 4\)"):
        L.Pooling(2, 2).forward(backend.asarray(np.zeros((4, 4))))


def test_dropout_and_batchnorm_errors(backend):
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"dropout_ratio must be a number in \[0, 1\), got %r" % bad):
            L.Dropout(bad)
    g = backend.asarray(np.ones(3))
    with pytest.raises(ValueError, match="gamma and beta must be 1-D of equal shape"):
        L.BatchNormalization(g, backend.asarray(np.zeros(4)))
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\], got 1.5"):
        L.BatchNormalization(g, g * 0, momentum=1.5)
    bn = L.BatchNormalization(g, g * 0)
    with pytest.raises(ValueError, match=r"expected input \(N, 3\) or \(N, 3, H, W\), got shape "
                                         r"\(2, 4\)"):
        bn.forward(backend.asarray(np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"training needs more than one value per feature, got "
                                         r"input shape \(1, 3\)"):
        bn.forward(backend.asarray(np.zeros((1, 3))), True)
    bn.forward(backend.asarray(np.zeros((2, 3))), False)
    with pytest.raises(RuntimeError, match="needs a forward with train_flg=True"):
        bn.backward(backend.asarray(np.zeros((2, 3))))


def test_loss_layer_errors(backend):
    s = L.SoftmaxWithLoss()
    x = backend.asarray(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"labels must be integer class indices of shape \(3,\) "
                                         r"or one-hot/soft targets of shape \(3, 4\), got dtype int64 shape "
                                         r"\(3, 2\)"):
        s.forward(x, backend.asarray(np.zeros((3, 2), dtype=np.int64)))
    for bad, at in (([1, 2, 4], 2), ([-1, 0, 1], 0)):          # -1 must not mean "the last"
        with pytest.raises(ValueError, match=r"SoftmaxWithLoss: label %d at index %d is outside "
                                             r"\[0, 4\)" % (bad[at], at)):
            s.forward(x, backend.asarray(np.array(bad)))
        with pytest.raises(ValueError, match="label %d at index %d" % (bad[at], at)):
            s.forward(x, bad)                                  # host labels, any device
    with pytest.raises(ValueError, match=r"shape \(3,\) or one-hot/soft .* got dtype float64 shape "
                                         r"\(3,\)"):
        s.forward(x, backend.asarray([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"got dtype int64 shape \(2,\)"):
        s.forward(x, backend.asarray(np.array([0, 1], dtype=np.int64)))
    with pytest.raises(ValueError, match=r"SoftmaxWithLoss: expected a 2-D scores"):
        s.forward(backend.asarray(np.zeros((3, 4, 1))), backend.asarray([0, 1, 2]))
    i = L.IdentityWithLoss()
    with pytest.raises(ValueError, match=r"targets of shape \(3, 2\) don't match outputs "
                                         r"\(3, 4\)"):
        i.forward(x, backend.asarray(np.zeros((3, 2))))


def test_softmax_with_loss_values(backend):
    x = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    t = np.array([1, 2])
    e = np.exp(x - x.max(1, keepdims=True))
    y = e / e.sum(1, keepdims=True)
    expect = -np.mean(np.log(y[[0, 1], t]))           # exact: no 1e-7 inside the log
    s = L.SoftmaxWithLoss()
    assert float(s.forward(backend.asarray(x), backend.asarray(t))) == pytest.approx(expect,
                                                                                     rel=1e-14)
    # the book's (N, 1) labels, as in its ch07 gradient_check.py, mean the same
    assert float(s.forward(backend.asarray(x), backend.asarray(t[:, None]))) == \
        pytest.approx(expect, rel=1e-14)
    dx = backend.copy(y)
    dx[[0, 1], t] -= 1
    backend.assert_close(s.backward(), dx / 2, rtol=1e-12)
    # labels on the host are fine for a device layer
    assert float(s.forward(backend.asarray(x), t)) == pytest.approx(expect, rel=1e-12)


@pytest.mark.gpu
def test_layer_fed_arrays_of_two_devices(backend):
    if not backend.is_gpu:
        pytest.skip("needs the cupy backend")
    W = backend.asarray(np.zeros((3, 2)))
    layer = L.Affine(W, backend.asarray(np.zeros(2)))
    gpu = backend.dev.name                   # gpu:0 (cupy-standin:0 on the stand-in)
    with pytest.raises(ValueError, match=r"Affine: input is on cpu but the parameters are on "
                                         r"%s; move one with xpnet.to_device" % gpu):
        layer.forward(np.zeros((1, 3)))
    conv = L.Convolution(xpnet.to_device(np.zeros((1, 1, 2, 2)), "cpu"), None)
    with pytest.raises(ValueError, match="input is on %s but the parameters are on cpu" % gpu):
        conv.forward(backend.asarray(np.zeros((1, 1, 3, 3))))


def test_layer_to_moves_params_and_clears_cache(backend):
    rng = np.random.default_rng(8)
    layer, x_host, _ = _conv(backend, np.float64, rng)
    layer.to("cpu")
    y_cpu = layer.forward(x_host)
    layer.to(backend.device)
    assert xpnet.get_array_module(layer.W) is backend.xp
    assert all(v is None for k, v in vars(layer).items() if k.startswith("_c_"))
    assert layer._workspace == {}
    backend.assert_close(layer.forward(backend.asarray(x_host)), y_cpu, rtol=1e-12, atol=1e-12)


def test_softmax_with_loss_soft_and_integer_onehot_targets(backend):
    """One-hot targets of any numeric dtype equal integer labels; soft targets get the
    true cross-entropy gradient (numerically checked), not an argmax of the targets."""
    from xpnet.gradient_check import numerical_gradient, relative_error
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 5))
    lab = np.array([0, 3, 1, 4])
    ref = L.SoftmaxWithLoss()
    l_ref = float(ref.forward(backend.asarray(x), backend.asarray(lab)))
    dx_ref = xpnet.asnumpy(ref.backward())
    s = L.SoftmaxWithLoss()
    onehot = np.eye(5, dtype=np.int32)[lab]
    assert abs(float(s.forward(backend.asarray(x), backend.asarray(onehot))) - l_ref) < 1e-12
    np.testing.assert_allclose(xpnet.asnumpy(s.backward()), dx_ref, atol=1e-12)
    soft = rng.random((4, 5))
    soft /= soft.sum(axis=1, keepdims=True)
    xs = backend.copy(x)

    def f(_):
        return float(L.SoftmaxWithLoss().forward(backend.asarray(xs), backend.asarray(soft)))
    num = numerical_gradient(f, xs)
    s2 = L.SoftmaxWithLoss()
    s2.forward(backend.asarray(x), backend.asarray(soft))
    # log(y + 1e-7) in the loss shifts its gradient by ~1e-7/p
    assert relative_error(xpnet.asnumpy(s2.backward()), num) < 1e-5
    hard = L.SoftmaxWithLoss()
    hard.forward(backend.asarray(x), backend.asarray(soft.argmax(axis=1)))
    assert np.abs(xpnet.asnumpy(hard.backward()) - xpnet.asnumpy(s2.backward())).max() > 1e-3


def test_leaky_relu_values_and_errors(backend):
    x = backend.asarray([[-2.0, -0.5, 0.0, 3.0]])
    layer = L.LeakyRelu(0.1)
    backend.assert_close(layer.forward(x), [[-0.2, -0.05, 0.0, 3.0]])
    backend.assert_close(layer.backward(backend.asarray([[1.0, 2.0, 3.0, 4.0]])),
                         [[0.1, 0.2, 0.3, 4.0]])
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"LeakyRelu: alpha must be a number in \[0, 1\)"):
            L.LeakyRelu(bad)
    with pytest.raises(RuntimeError, match="LeakyRelu.backward: call forward first"):
        L.LeakyRelu().backward(x)


def test_softmax_loss_is_exact_where_the_book_form_is_not(backend):
    """Logits (1e4, -1e4) with the wrong label: the loss is 2e4 (the book's form gives 16.1);
    a perfect prediction gives 0, never -1e-7."""
    s = L.SoftmaxWithLoss()
    x = backend.asarray(np.array([[1e4, -1e4], [1e4, -1e4]]))
    assert float(s.forward(x, backend.asarray(np.array([1, 1])))) == pytest.approx(2e4, rel=1e-12)
    assert float(s.forward(x, backend.asarray(np.array([0, 0])))) == 0.0
    onehot = backend.asarray(np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert float(s.forward(x, onehot)) == pytest.approx(2e4, rel=1e-12)


def test_backward_before_forward_says_so(backend):
    W = backend.asarray(np.ones((2, 2, 3, 3)))
    for layer, dout in ((L.Relu(), (2, 2)), (L.Affine(backend.asarray(np.ones((2, 2))), None), (2, 2)),
                        (L.Convolution(W, None), (1, 2, 1, 1)), (L.Pooling(2, 2), (1, 1, 1, 1)),
                        (L.Dropout(0.5), (2, 2)), (L.Sigmoid(), (2, 2)), (L.Flatten(), (2, 2)),
                        (L.SoftmaxWithLoss(), None)):
        with pytest.raises(RuntimeError, match="%s.backward: call forward first" % layer.name):
            layer.backward(backend.asarray(np.ones(dout)) if dout else 1)


def test_layer_arguments_are_not_coerced():
    W = np.ones((2, 1, 3, 3))
    for bad in (1.5, True, None, "2", (1, 2, 3)):
        with pytest.raises((TypeError, ValueError), match="Convolution stride"):
            L.Convolution(W, None, stride=bad)
    with pytest.raises(TypeError, match=r"Pooling window \(pool_h, pool_w\) must be an int"):
        L.Pooling(2.7, 2)
    with pytest.raises(TypeError, match=r"Pooling window .* got \(None, 2\)"):
        L.Pooling(None, 2)
    with pytest.raises(TypeError, match="Pooling stride"):
        L.Pooling(2, 2, stride=True)
    conv = L.Convolution(W, None, stride=np.int64(2))           # integer scalars are fine
    assert conv.stride == (2, 2)
