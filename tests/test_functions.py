"""xpnet.functions: values against textbook formulas, stability, dtype, no in-place writes."""
import warnings

import numpy as np
import pytest

from xpnet import functions as F


def test_activations_values(backend, rng):
    x = rng.standard_normal((4, 5)) * 3
    d = backend.asarray(x)
    backend.assert_close(F.sigmoid(d), 1 / (1 + np.exp(-x)), rtol=1e-12)
    backend.assert_close(F.sigmoid_grad(d), np.exp(-x) / (1 + np.exp(-x)) ** 2, rtol=1e-10)
    backend.assert_close(F.tanh(d), np.tanh(x), rtol=1e-12)
    backend.assert_close(F.relu(d), np.where(x > 0, x, 0.0))
    backend.assert_close(F.relu_grad(d), (x > 0).astype(float))
    backend.assert_close(F.step_function(d), (x > 0).astype(float))
    assert F.identity_function(d) is d


def test_integer_input_becomes_float32(backend):
    d = backend.asarray([-2, 0, 3])
    assert backend.dtype(d) == "int64"
    for f in (F.relu, F.sigmoid, F.step_function, F.tanh, F.softmax):
        assert backend.dtype(f(d)) == "float32", f.__name__
    backend.assert_close(F.relu(d), [0, 0, 3])


def test_sigmoid_extremes_no_overflow_warning(backend):
    d = backend.asarray([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = backend.np(F.sigmoid(d))
    assert np.all(np.isfinite(s))
    assert s[0] == 0.0 and s[2] == 0.5 and s[-1] == 1.0


def test_softmax_rows_sum_to_one_and_are_stable(backend, rng):
    x = rng.standard_normal((3, 6)) * 4
    x[1] += 1000.0        # naive exp would overflow
    d = backend.asarray(x)
    y = backend.np(F.softmax(d))
    z = x - x.max(axis=1, keepdims=True)
    ref = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-12)
    # any axis, any batch shape; log_softmax agrees
    x3 = rng.standard_normal((2, 3, 4))
    d3 = backend.asarray(x3)
    y0 = backend.np(F.softmax(d3, axis=0))
    np.testing.assert_allclose(y0.sum(axis=0), 1.0, rtol=1e-12)
    # log_softmax against its own formula in NumPy (not the library's softmax), with
    # values where log(softmax) would underflow to -inf
    x3[0] += 800.0
    z3 = x3 - x3.max(axis=-1, keepdims=True)
    ref3 = z3 - np.log(np.exp(z3).sum(axis=-1, keepdims=True))
    got3 = backend.np(F.log_softmax(backend.asarray(x3)))
    np.testing.assert_allclose(got3, ref3, rtol=1e-12, atol=1e-12)
    x4 = np.array([[0.0, -800.0]])
    assert backend.np(F.log_softmax(backend.asarray(x4)))[0, 1] == pytest.approx(-800.0)
    # 1-D input
    v = backend.asarray([1.0, 2.0, 3.0])
    e = np.exp([1.0, 2.0, 3.0])
    backend.assert_close(F.softmax(v), e / e.sum(), rtol=1e-12)


def test_cross_entropy_labels_one_hot_and_single_sample(backend):
    y = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    t = np.array([1, 0])
    expect = -(np.log(0.7 + 1e-7) + np.log(0.5 + 1e-7)) / 2
    dy = backend.asarray(y)
    assert float(F.cross_entropy_error(dy, backend.asarray(t))) == pytest.approx(expect, rel=1e-12)
    oh = np.eye(3)[t]
    assert float(F.cross_entropy_error(dy, backend.asarray(oh))) == pytest.approx(expect, rel=1e-12)
    assert float(F.cross_entropy_error(dy, backend.asarray(oh.astype(np.int64)))) == \
        pytest.approx(expect, rel=1e-12)
    # the book's chapter-4 single sample: 1-D y with one-hot t or a label
    y1 = backend.asarray([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    t1 = backend.asarray([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    assert float(F.cross_entropy_error(y1, t1)) == pytest.approx(0.510825457, rel=1e-6)
    assert float(F.cross_entropy_error(y1, backend.asarray(2))) == pytest.approx(0.510825457,
                                                                                 rel=1e-6)


def test_cross_entropy_bad_labels(backend):
    y = backend.asarray(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) don't match predictions of "
                                         r"shape \(2, 3\): expected \(2,\)"):
        F.cross_entropy_error(y, backend.asarray([0, 1, 2]))
    with pytest.raises(TypeError, match="labels must be integers or one-hot"):
        F.cross_entropy_error(y, backend.asarray([0.0, 1.0]))


def test_squared_errors_book_values(backend):
    # chapter 4: t = one-hot 2, y as in the book -> 0.0975
    y = backend.asarray([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    t = backend.asarray([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    assert float(F.mean_squared_error(y, t)) == pytest.approx(0.0975, rel=1e-12)
    assert float(F.sum_squared_error(y, t)) == pytest.approx(0.0975, rel=1e-12)
    # a batch is averaged over samples
    yb = backend.asarray([[1.0, 2.0], [3.0, 5.0]])
    tb = backend.asarray([[0.0, 0.0], [3.0, 3.0]])
    assert float(F.mean_squared_error(yb, tb)) == pytest.approx((5 + 4) * 0.5 / 2)
    assert float(F.sum_squared_error(yb, tb)) == pytest.approx((5 + 4) * 0.5)


def test_one_hot(backend):
    t = backend.asarray([2, 0, 1, 2])
    oh = F.one_hot(t, 3)
    assert backend.dtype(oh) == "float32"
    np.testing.assert_array_equal(backend.np(oh), np.eye(3, dtype=np.float32)[[2, 0, 1, 2]])
    oh4 = F.one_hot(t, 4, dtype=backend.xp.float64)
    assert tuple(oh4.shape) == (4, 4) and backend.dtype(oh4) == "float64"
    np.testing.assert_array_equal(backend.np(oh4), np.eye(4)[[2, 0, 1, 2]])


@pytest.mark.parametrize("name", ["sigmoid", "sigmoid_grad", "tanh", "relu", "relu_grad",
                                  "step_function", "softmax", "log_softmax"])
def test_float32_in_float32_out_and_input_untouched(backend, rng, name):
    f = getattr(F, name)
    x = backend.asarray(rng.standard_normal((3, 4)), dtype=np.float32)
    keep = backend.copy(x)
    y = f(x)
    assert backend.dtype(y) == "float32"
    assert y is not x
    np.testing.assert_array_equal(backend.np(x), backend.np(keep))


def test_losses_keep_float32(backend, rng):
    y = backend.asarray(F.softmax(rng.standard_normal((4, 3))), dtype=np.float32)
    t = backend.asarray([0, 1, 2, 0])
    keep = backend.copy(y)
    assert backend.dtype(F.cross_entropy_error(y, t)) == "float32"
    oh = F.one_hot(t, 3)
    assert backend.dtype(F.mean_squared_error(y, oh)) == "float32"
    assert backend.dtype(F.sum_squared_error(y, oh)) == "float32"
    np.testing.assert_array_equal(backend.np(y), backend.np(keep))
