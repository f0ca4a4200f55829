"""Fuzzing layer arguments with hypothesis: any stride, pad, window, dtype or shape either
works (with the output shape the formula gives) or is refused with a TypeError/ValueError
that names the layer; never an error from deep inside an array library, never a silently
coerced argument. Seeded and bounded, so CI is deterministic."""
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xpnet import layers as L
from xpnet.backend.geometry import conv_output_size

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

odd = st.one_of(st.integers(-2, 4), st.floats(-1, 3), st.booleans(), st.none(), st.text(max_size=2),
                st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
                st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)))
shapes = st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7))
dtypes = st.sampled_from(["float32", "float64", "int64", "bool", "complex64"])


def _is_int_pair(v):
    items = v if isinstance(v, tuple) else (v, v)
    return len(items) == 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in items)


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


@SETTINGS
@given(stride=odd, pad=odd, shape=shapes, k=st.integers(1, 4), dtype=dtypes)
def test_convolution_arguments(stride, pad, shape, k, dtype):
    W = np.ones((2, shape[1], k, k))
    try:
        layer = L.Convolution(W, np.zeros(2), stride=stride, pad=pad)
    except (TypeError, ValueError) as e:
        assert "Convolution" in str(e)
        assert not (_is_int_pair(stride) and _is_int_pair(pad)
                    and min(_pair(stride)) >= 1 and min(_pair(pad)) >= 0), e
        return
    assert _is_int_pair(stride) and _is_int_pair(pad)      # nothing else is taken
    x = np.ones(shape, dtype=dtype)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", L.DtypeWarning)   # float32 is cast, with a warning
            y = layer.forward(x)
    except (TypeError, ValueError) as e:
        assert "Convolution" in str(e)
        return
    assert dtype in ("float32", "float64")                  # floats only, cast to the params'
    assert y.dtype == np.float64
    (sy, sx), (ph, pw) = layer.stride, layer.pad
    assert y.shape == (shape[0], 2, conv_output_size(shape[2], k, sy, ph),
                       conv_output_size(shape[3], k, sx, pw))


@SETTINGS
@given(window=odd, stride=odd, pad=odd, shape=shapes, mode=st.sampled_from(["max", "avg"]))
def test_pooling_arguments(window, stride, pad, shape, mode):
    wh, ww = window if isinstance(window, tuple) and len(window) == 2 else (window, window)
    try:
        layer = L.Pooling(wh, ww, stride=stride, pad=pad, mode=mode)
    except (TypeError, ValueError) as e:
        assert "Pooling" in str(e)
        return
    assert _is_int_pair((wh, ww)) and _is_int_pair(stride) and _is_int_pair(pad)
    x = np.ones(shape, dtype=np.float32)
    try:
        y = layer.forward(x)
    except (TypeError, ValueError) as e:
        assert "Pooling" in str(e) or "pooling" in str(e).lower()
        return
    (sy, sx), (ph, pw) = layer.stride, layer.pad
    assert y.shape == (shape[0], shape[1], conv_output_size(shape[2], wh, sy, ph),
                       conv_output_size(shape[3], ww, sx, pw))
    assert np.isfinite(y).all()                             # -inf padding never shows


@SETTINGS
@given(ratio=st.one_of(st.floats(-1, 2), st.just(float("nan")), st.none(), st.text(max_size=2)),
       alpha=st.one_of(st.floats(-1, 2), st.just(float("nan")), st.none()))
def test_dropout_and_leaky_relu_arguments(ratio, alpha):
    for make, arg, name in ((L.Dropout, ratio, "Dropout"), (L.LeakyRelu, alpha, "LeakyRelu")):
        try:
            layer = make(arg)
        except (TypeError, ValueError) as e:
            assert name in str(e)
            continue
        assert 0.0 <= float(arg) < 1.0
        y = layer.forward(np.array([[-1.0, 2.0]]), True)
        assert y.shape == (1, 2)
