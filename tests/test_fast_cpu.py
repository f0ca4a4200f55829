"""The CPU fast path's precision and its special cases (issue 21).

- float32 through the fast kernels stays within 1e-5 (relative to the largest entry) of
  float64, layer by layer through DeepConvNet, forward and backward: each layer gets the
  float64 net's own input, so errors don't compound and a bad kernel names its layer;
- the 2x2/2 max-pool backward (`numpy_pool`) is bit-identical to the general path,
  ties, NaNs and batch splits over CPU threads included.
"""
import numpy as np
import pytest

import xpnet
from xpnet import layers as L
from xpnet.backend import cpu_threads, numpy_pool
from xpnet.backend.numpy_fast import FAST
from xpnet.nets import DeepConvNet

REL = 1e-5


def _rel(a32, a64):
    a32, a64 = np.asarray(a32, dtype=np.float64), np.asarray(a64)
    return float(np.abs(a32 - a64).max() / max(np.abs(a64).max(), 1e-300))


def _twin32(layer):
    """A float32 copy of a float64 conv or affine layer."""
    p = {k: (None if v is None else v.astype(np.float32)) for k, v in layer.params.items()}
    if isinstance(layer, L.Convolution):
        twin = L.Convolution(p["W"], p["b"], layer.stride, layer.pad)
    else:
        twin = L.Affine(p["W"], p["b"])
    twin.need_input_grad = layer.need_input_grad
    return twin


@pytest.mark.parametrize("threads", [1, 2])
def test_deepconvnet_float32_within_1e5_of_float64_per_layer(threads):
    old = cpu_threads.get_num_threads()
    cpu_threads.set_num_threads(threads)
    try:
        net = DeepConvNet(dtype="float64", seed=3, device="cpu")
        rng = np.random.default_rng(3)
        h = rng.random((6, 1, 28, 28))
        checked = []
        for i, layer in enumerate(net.layers):
            out = layer.forward(h, train_flg=False)
            if isinstance(layer, (L.Convolution, L.Affine)):
                twin = _twin32(layer)
                out32 = twin.forward(h.astype(np.float32))
                assert out32.dtype == np.float32
                dy = rng.standard_normal(out.shape)
                dx = layer.backward(dy)
                dx32 = twin.backward(dy.astype(np.float32))
                errs = {"y": _rel(out32, out), "dW": _rel(twin.grads["W"], layer.grads["W"]),
                        "db": _rel(twin.grads["b"], layer.grads["b"])}
                if layer.need_input_grad:
                    errs["dx"] = _rel(dx32, dx)
                bad = {k: e for k, e in errs.items() if not e <= REL}
                assert not bad, "layer %d %r: float32 off float64 by %s" % (i, layer, bad)
                checked.append(i)
            h = out
        assert len(checked) == 8      # six convolutions, two affine layers
    finally:
        cpu_threads.set_num_threads(old)


def _general_pool_backward(monkeypatch, dy, ctx, shape):
    with monkeypatch.context() as m:
        m.setattr(numpy_pool, "applies", lambda *a: False)
        return FAST.max_pool_backward(dy, ctx, shape, 2, 2, (2, 2), (0, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 2, 6, 4), (40, 16, 28, 28)])
def test_pool2_backward_equals_general_path_with_ties(monkeypatch, dtype, shape):
    rng = np.random.default_rng(shape[0])
    x = rng.integers(-1, 2, size=shape).astype(dtype)          # ties in most windows
    x = np.maximum(x, 0)                                        # as after ReLU: all-zero windows
    assert numpy_pool.applies(shape, 2, 2, (2, 2), (0, 0))
    old = cpu_threads.get_num_threads()
    cpu_threads.set_num_threads(2)          # the large case splits the batch over threads
    try:
        y, ctx = FAST.max_pool_forward(x, 2, 2, (2, 2), (0, 0))
        dy = rng.standard_normal(y.shape).astype(dtype)
        got = FAST.max_pool_backward(dy, ctx, shape, 2, 2, (2, 2), (0, 0))
        want = _general_pool_backward(monkeypatch, dy, ctx, shape)
    finally:
        cpu_threads.set_num_threads(old)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, want)
    # each window passes its gradient on exactly once
    np.testing.assert_array_equal(got.reshape(shape[0], shape[1], shape[2] // 2, 2,
                                              shape[3] // 2, 2).sum(axis=(3, 5)), dy)


def test_pool2_backward_nan_window_gets_no_gradient_like_general_path(monkeypatch):
    x = np.array([[[[1.0, np.nan, 3.0, 2.0], [0.5, 0.2, 3.0, 1.0]]]])
    y, ctx = FAST.max_pool_forward(x, 2, 2, (2, 2), (0, 0))
    dy = np.array([[[[5.0, 7.0]]]])
    got = FAST.max_pool_backward(dy, ctx, x.shape, 2, 2, (2, 2), (0, 0))
    np.testing.assert_array_equal(got, _general_pool_backward(monkeypatch, dy, ctx, x.shape))
    np.testing.assert_array_equal(got, [[[[0, 0, 7, 0], [0, 0, 0, 0]]]])


@pytest.mark.parametrize("shape,k,stride,pad,applies", [
    ((1, 1, 4, 4), (2, 2), (2, 2), (0, 0), True),
    ((1, 1, 5, 4), (2, 2), (2, 2), (0, 0), False),     # odd height: last row dropped
    ((1, 1, 4, 4), (2, 2), (1, 1), (0, 0), False),     # overlapping
    ((1, 1, 4, 4), (2, 2), (2, 2), (1, 1), False),     # padded
    ((1, 1, 6, 6), (3, 3), (3, 3), (0, 0), False)])
def test_pool2_path_taken_only_where_it_applies(shape, k, stride, pad, applies):
    assert numpy_pool.applies(shape, *k, stride, pad) is applies


def test_pooling_layer_float32_gradient_check():
    """Numerical gradient of sum(pool(x) * w) in float64 against the fast backward."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 6))
    w = rng.standard_normal((2, 3, 2, 3))
    layer = L.Pooling(2, 2, stride=2)
    layer.forward(x)
    dx = layer.backward(w)
    num = np.zeros_like(x)
    eps = 1e-6
    for idx in np.ndindex(x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += eps
        xm[idx] -= eps
        num[idx] = ((L.Pooling(2, 2, stride=2).forward(xp_) * w).sum()
                    - (L.Pooling(2, 2, stride=2).forward(xm) * w).sum()) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
    assert xpnet.asnumpy(dx).dtype == np.float64


# ------------------------------------------------------------------ batch-innermost convolution

from xpnet.backend import numpy_chwn  # noqa: E402

CHWN_CASES = [   # (N, C, H, W), (FN, KH, KW), pad
    ((2, 3, 7, 5), (4, 3, 3), (1, 1)),
    ((5, 16, 9, 9), (8, 3, 3), (0, 0)),
    ((3, 2, 6, 11), (5, 3, 3), (2, 2)),      # DeepConvNet's pad 2: output larger than input
    ((1, 4, 5, 5), (3, 3, 3), (1, 0)),       # a batch of one, uneven padding
    ((4, 3, 8, 6), (6, 2, 3), (1, 2)),
    ((7, 5, 4, 4), (2, 1, 1), (0, 0)),
    ((64, 16, 14, 14), (32, 3, 3), (1, 1)),  # big enough for both CPU threads
]


def _chwn_copy(a):
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,wshape,pad", CHWN_CASES)
def test_chwn_convolution_matches_the_nchw_path(monkeypatch, shape, wshape, pad, dtype, threads):
    rng = np.random.default_rng(shape[0] * 7 + wshape[1])
    x = rng.standard_normal(shape).astype(dtype)
    W = rng.standard_normal((wshape[0], shape[1]) + wshape[1:]).astype(dtype)
    b = rng.standard_normal(wshape[0]).astype(dtype)
    old = cpu_threads.get_num_threads()
    cpu_threads.set_num_threads(threads)
    try:
        monkeypatch.setattr(numpy_chwn, "ENABLED", False)
        y0, ctx0 = FAST.conv2d_forward(x, W, b, (1, 1), pad, {})
        dy = rng.standard_normal(y0.shape).astype(dtype)
        g0 = FAST.conv2d_backward(dy, ctx0, W, x.shape, (1, 1), pad, True, {})
        monkeypatch.setattr(numpy_chwn, "ENABLED", True)
        assert numpy_chwn.applies(x, W, (1, 1), pad)
        for xin, dyin in ((x, dy), (_chwn_copy(x), _chwn_copy(dy))):   # both input layouts
            y, ctx = FAST.conv2d_forward(xin, W, b, (1, 1), pad, {})
            assert isinstance(ctx, numpy_chwn.Context)
            assert y.shape == y0.shape and y.dtype == dtype and numpy_chwn.is_chwn(y)
            dx, dW, db = FAST.conv2d_backward(dyin, ctx, W, x.shape, (1, 1), pad, True, {})
            tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(y, y0, **tol)
            np.testing.assert_allclose(dx, g0[0], **tol)
            np.testing.assert_allclose(dW, g0[1], **tol)
            np.testing.assert_allclose(db, g0[2], **tol)
            assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape
    finally:
        cpu_threads.set_num_threads(old)


def test_chwn_is_used_only_where_it_applies():
    x = np.zeros((2, 3, 8, 8), np.float32)
    W3 = np.zeros((4, 3, 3, 3), np.float32)
    assert numpy_chwn.applies(x, W3, (1, 1), (1, 1))
    assert not numpy_chwn.applies(x, W3, (2, 2), (1, 1))                 # stride 2
    assert not numpy_chwn.applies(x, W3, (1, 1), (3, 3))                 # pad >= kernel
    assert not numpy_chwn.applies(x, W3.astype(np.float64), 1, 1)       # mixed dtypes
    W5 = np.zeros((4, 3, 5, 5), np.float32)
    assert not numpy_chwn.applies(x, W5, 1, 0)                           # 5x5 on NCHW input
    assert numpy_chwn.applies(_chwn_copy(x), W5, 1, 0)                   # ... unless chwn already


def test_layout_flows_conv_relu_pool_conv_and_gradients_match_nchw(monkeypatch):
    """DeepConvNet's pattern: each layer keeps the batch-innermost layout (no copies between
    them), and the values and gradients equal the (N, C, H, W) path's."""
    rng = np.random.default_rng(0)
    x = rng.random((6, 2, 10, 10))

    def run():
        layers = [L.Convolution(W1.copy(), b1.copy(), 1, 1), L.Relu(), L.Pooling(2, 2, stride=2),
                  L.Convolution(W2.copy(), b2.copy(), 1, 1), L.Relu()]
        h = x
        outs = []
        for layer in layers:
            h = layer.forward(h, True)
            outs.append(h)
        d = np.ones_like(h)
        for layer in reversed(layers):
            d = layer.backward(d)
        return outs, [(l.grads["W"], l.grads["b"]) for l in layers if "W" in l.params], d

    W1, b1 = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    W2, b2 = rng.standard_normal((3, 4, 3, 3)), rng.standard_normal(3)
    outs, grads, dx = run()
    assert all(numpy_chwn.is_chwn(o) and not o.flags.c_contiguous for o in outs)
    monkeypatch.setattr(numpy_chwn, "ENABLED", False)
    outs0, grads0, dx0 = run()
    assert all(o.flags.c_contiguous for o in outs0)
    for a, b in zip(outs, outs0):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for (a, c), (b, d) in zip(grads, grads0):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c, d, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx0, rtol=1e-12, atol=1e-12)


def test_chwn_convolution_gradient_check():
    """Numerical gradient of sum(conv(x) * w) (float64, chwn path, pad 2 as in DeepConvNet)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 4, 5))
    W = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    layer = L.Convolution(W, b, 1, 2)
    y = layer.forward(x)
    assert numpy_chwn.is_chwn(y)
    w = rng.standard_normal(y.shape)
    dx = layer.backward(w)
    eps = 1e-6

    def f(xx, WW):
        return float((L.Convolution(WW, b, 1, 2).forward(xx) * w).sum())

    for arr, grad in ((x, dx), (W, layer.grads["W"])):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            fp = f(x, W)
            arr[idx] = old - eps
            fm = f(x, W)
            arr[idx] = old
            num[idx] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.grads["b"], w.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_chwn_backward_rejects_a_raw_column_array():
    x = np.ones((2, 1, 4, 4))
    W = np.ones((1, 1, 3, 3))
    y, ctx = FAST.conv2d_forward(x, W, None, (1, 1), (1, 1))
    assert isinstance(ctx, numpy_chwn.Context)
    with pytest.raises(TypeError, match="ctx must be the ConvContext that conv2d_forward"):
        FAST.conv2d_backward(np.ones_like(y), ctx.col, W, x.shape, (1, 1), (1, 1))
