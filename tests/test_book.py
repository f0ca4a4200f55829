"""The book's own scripts' patterns on xpnet: its float64 classes fed by xpnet's float32
loaders, (N, 1) labels, numerical gradients, the helpers of common/util.py, and the
star-imports its scripts rely on. The classes here are written for these tests in the
book's style (plain NumPy, ``np.random.randn`` weights), not copied from it."""
import pickle
import warnings

import numpy as np
import pytest

import xpnet
import xpnet.datasets
from xpnet import layers as L
from xpnet.gradient_check import PrecisionWarning, numerical_gradient


class BookStyleTwoLayerNet:
    """Chapter 5's shape: an OrderedDict-like list of xpnet layers over float64 params."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01):
        rng = np.random.default_rng(0)
        self.params = {"W1": weight_init_std * rng.standard_normal((input_size, hidden_size)),
                       "b1": np.zeros(hidden_size),
                       "W2": weight_init_std * rng.standard_normal((hidden_size, output_size)),
                       "b2": np.zeros(output_size)}
        self.layers = [L.Affine(self.params["W1"], self.params["b1"]), L.Relu(),
                       L.Affine(self.params["W2"], self.params["b2"])]
        self.last_layer = L.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return {"W1": self.layers[0].dW, "b1": self.layers[0].db,
                "W2": self.layers[2].dW, "b2": self.layers[2].db}


def test_book_float64_class_runs_on_float32_data_with_one_warning():
    (x, t), _ = xpnet.datasets.load_mnist_sample(normalize=True, flatten=True)
    assert x.dtype == np.float32
    net = BookStyleTwoLayerNet(784, 20, 10)
    with pytest.warns(L.DtypeWarning, match="cast to float64"):
        grads = net.gradient(x[:50], t[:50])
    assert grads["W1"].dtype == np.float64
    xpnet.Adam(lr=0.01).update(net.params, grads)       # the book's params dict, updated in place
    assert net.layers[0].W is net.params["W1"]


def test_book_labels_of_shape_n_by_1():
    """ch07/gradient_check.py makes labels with ``np.array([1]).reshape(1, 1)``."""
    s = L.SoftmaxWithLoss()
    x = np.array([[0.2, 1.5, -0.3]])
    assert float(s.forward(x, np.array([[1]]))) == pytest.approx(float(s.forward(x, np.array([1]))))


def test_numerical_gradient_warns_in_float32_and_says_how_to_fix():
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    x = np.ones((2, 4), np.float32)
    with pytest.warns(PrecisionWarning, match="dtype='float64'"):
        net.numerical_gradient(x, np.array([0, 1]))
    net64 = xpnet.TwoLayerNet(4, 3, 2, seed=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = net64.numerical_gradient(x, np.array([0, 1]))
    b = net64.gradient(x, np.array([0, 1]))
    for k in g:
        np.testing.assert_allclose(g[k], b[k], rtol=1e-6, atol=1e-9)
    with pytest.warns(PrecisionWarning):
        numerical_gradient(lambda a: float((a * a).sum()), np.ones(3, np.float32))


def test_common_util_helpers():
    from xpnet.util import col2im, conv_output_size, im2col, shuffle_dataset, smooth_curve
    y = smooth_curve(np.r_[np.zeros(20), np.ones(20)])
    assert y.shape == (40,) and 0 < y[20] < 1 and y[0] == pytest.approx(0) and \
        y[-1] == pytest.approx(1)
    with pytest.raises(ValueError, match="smooth_curve: needs at least 11 values, got 3"):
        smooth_curve([1.0, 2.0, 3.0])
    x, t = np.arange(20).reshape(10, 2), np.arange(10)
    xs, ts = shuffle_dataset(x, t, seed=1)
    assert sorted(ts.tolist()) == list(range(10)) and (xs[:, 0] // 2 == ts).all()
    assert not (ts == t).all()
    col = im2col(np.ones((1, 1, 4, 4)), 3, 3)
    assert col.shape == (4, 9) and conv_output_size(4, 3) == 2
    assert col2im(col, (1, 1, 4, 4), 3, 3)[0, 0, 1, 1] == 4


def test_star_imports_provide_what_the_book_uses():
    names = {}
    exec("from xpnet.optimizers import *\nfrom xpnet.layers import *\n"
         "from xpnet.functions import *", names)
    for want in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "Affine", "Relu",
                 "Sigmoid", "SoftmaxWithLoss", "Convolution", "Pooling", "Dropout",
                 "BatchNormalization", "softmax", "cross_entropy_error", "sigmoid"):
        assert want in names, want


# ---------------------------------------------------------------- the book's pickles

def _book_pickle(tmp_path, obj, name="params.pkl", protocol=4):
    import pickle
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def test_book_pickle_of_arrays_loads(tmp_path):
    from xpnet.book_params import load_book_params
    net = xpnet.SimpleConvNet((1, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 0,
                                          "stride": 1}, hidden_size=5, output_size=4, seed=1,
                              dtype="float64")
    params = {k: np.array(v, copy=True) for k, v in net.params.items()}     # the book's dict
    for protocol in (2, 4, 5):
        got = load_book_params(_book_pickle(tmp_path, params, protocol=protocol))
        assert set(got) == set(params)
        for k in params:
            assert got[k].dtype == params[k].dtype and got[k].tobytes() == params[k].tobytes()


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("touch %s" % _Boom.marker,))


@pytest.mark.parametrize("payload", ["reduce", "nested", "object_array", "not_a_dict", "truncated"])
def test_malicious_or_odd_pickles_are_refused_without_running_anything(tmp_path, payload):
    import pickle
    from xpnet.book_params import load_book_params
    _Boom.marker = str(tmp_path / "ran")
    objs = {"reduce": {"W1": _Boom()}, "nested": {"W1": [np.zeros(2), _Boom()]},
            "object_array": {"W1": np.array([1, "a"], dtype=object)},
            "not_a_dict": [np.zeros(2)], "truncated": None}
    if payload == "truncated":
        path = tmp_path / "t.pkl"
        path.write_bytes(pickle.dumps({"W1": np.zeros(100)}, protocol=4)[:60])
    else:
        path = _book_pickle(tmp_path, objs[payload])
    with pytest.raises(ValueError) as e:
        load_book_params(path)
    assert str(path) in str(e.value)
    assert not (tmp_path / "ran").exists()
    if payload in ("reduce", "nested"):
        assert "refusing posix.system" in str(e.value) or "refusing os.system" in str(e.value)


def _book_deep_convnet_forward(params, x):
    """The book's DeepConvNet at test time (ch08/deep_convnet.py), in plain NumPy and
    independent of xpnet's layers: 3x3 convolutions (pad 1, the fourth pad 2), ReLU,
    2x2 max pooling, Affine, and Dropout(0.5) as a multiplication by 1 - 0.5."""
    from numpy.lib.stride_tricks import sliding_window_view

    def conv(x, w, b, pad):
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))     # N C H W kh kw
        return np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]

    def pool(x):
        n, c, h, w = x.shape
        return x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(
            axis=(3, 5))
    relu = lambda a: np.maximum(a, 0)       # noqa: E731
    h = x
    for i, pad in enumerate((1, 1, 1, 2, 1, 1)):
        h = relu(conv(h, params["W%d" % (i + 1)], params["b%d" % (i + 1)], pad))
        if i % 2 == 1:
            h = pool(h)
    h = relu(h.reshape(h.shape[0], -1) @ params["W7"] + params["b7"]) * (1 - 0.5)
    return (h @ params["W8"] + params["b8"]) * (1 - 0.5)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_book_format_deep_convnet_pickle_gives_the_books_outputs(tmp_path, protocol):
    """The book's deep_convnet_params.pkl, as its save_params writes one (a pickled dict of
    float64 arrays at the book's shapes), made here: xpnet must load it, fold the book's
    test-time Dropout scaling, and give the outputs of the book's own forward pass."""
    rng = np.random.default_rng(0)
    shapes = {k: v.shape for k, v in xpnet.DeepConvNet(device="cpu").state_dict().items()}
    params = {k: rng.standard_normal(s) * (0.3 if k.startswith("W") else 0.05)
              for k, s in shapes.items()}
    path = tmp_path / "deep_convnet_params.pkl"
    with open(path, "wb") as f:
        pickle.dump(params, f, protocol=protocol)
    _, (xt, _) = xpnet.datasets.load_mnist_sample(flatten=False)
    x = np.asarray(xt[:6], dtype=np.float64)
    net = xpnet.DeepConvNet(device="cpu", dtype="float64")
    net.load_params(path)
    expect = _book_deep_convnet_forward(params, x)
    got = xpnet.asnumpy(net.predict(x))
    np.testing.assert_allclose(got, expect, rtol=1e-9, atol=1e-9 * np.abs(expect).max())
    assert np.abs(expect).max() > 1e-3                  # a forward that says something


def test_fold_book_dropout_reproduces_test_time_scaling():
    """The book scales by (1 - ratio) at test time; folded weights give the same outputs."""
    net = xpnet.DeepConvNet((1, 8, 8), *[{"filter_num": 2, "filter_size": 3, "pad": 1,
                                          "stride": 1}] * 6, hidden_size=4, output_size=3,
                            dropout_ratio=0.3, seed=0, dtype="float64")
    from xpnet.book_params import fold_book_dropout
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    params = net.state_dict()
    h = x
    for layer in net.layers:                                  # the book's evaluation
        h = h * 0.7 if isinstance(layer, L.Dropout) else layer.forward(h, False)
    net.load_state_dict(fold_book_dropout(net, params))
    np.testing.assert_allclose(net.predict(x), h, rtol=1e-12)


def test_save_params_with_the_books_pkl_name_writes_npz_and_says_so(tmp_path):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.warns(UserWarning, match=r"xpnet writes no pickles; wrote .*params\.npz"):
        path = net.save_params(str(tmp_path / "params.pkl"))
    assert path.endswith("params.npz") and not (tmp_path / "params.pkl").exists()
    other = xpnet.TwoLayerNet(4, 3, 2, seed=1)
    other.load_params(str(tmp_path / "params.pkl"))          # the book's next script's line
    np.testing.assert_array_equal(other.params["W1"], net.params["W1"])


def test_load_params_reads_the_books_pickle(tmp_path):
    net = xpnet.SimpleConvNet(seed=3, dtype="float64")
    book = {k: np.array(v, copy=True) for k, v in net.params.items()}
    path = _book_pickle(tmp_path, book)
    other = xpnet.SimpleConvNet(seed=4)
    other.load_params(str(path))
    for k in book:
        np.testing.assert_allclose(other.params[k], book[k], rtol=1e-6)


def test_xpnet_convert(tmp_path, capsys):
    from xpnet import cli
    net = xpnet.SimpleConvNet(seed=3, dtype="float64")          # the book's ch07 shapes
    src = _book_pickle(tmp_path, {k: np.array(v) for k, v in net.params.items()})
    assert cli.main(["convert", str(src), str(tmp_path / "new.npz")]) == 0
    again = xpnet.load_net(tmp_path / "new.npz")
    assert type(again).__name__ == "SimpleConvNet"
    x = np.random.default_rng(0).random((3, 1, 28, 28))
    np.testing.assert_allclose(again.predict(x), net.predict(x), rtol=1e-4, atol=1e-6)
    _Boom.marker = str(tmp_path / "ran")
    evil = _book_pickle(tmp_path, {"W1": _Boom()}, name="evil.pkl")
    assert cli.main(["convert", str(evil), str(tmp_path / "evil.npz")]) == 1
    err = capsys.readouterr().err
    assert "refusing" in err and "Traceback" not in err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "evil.npz").exists()
    odd = _book_pickle(tmp_path, {"W1": np.zeros((3, 3, 3))}, name="odd.pkl")
    assert cli.main(["convert", str(odd), str(tmp_path / "odd.npz")]) == 1
    assert "no ready net of xpnet has exactly these parameters" in capsys.readouterr().err


def test_accuracy_takes_the_books_n_by_1_labels():
    net = xpnet.TwoLayerNet(4, 3, 3, seed=0)
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    t = np.argmax(net.predict(x), axis=1)
    assert net.accuracy(x, t[:, None]) == net.accuracy(x, t) == 1.0


def test_precision_warning_names_the_callers_line():
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.warns(PrecisionWarning) as rec:
        net.numerical_gradient(np.ones((2, 4), np.float32), np.array([0, 1]))
    assert len(rec) == 1 and rec[0].filename == __file__


def test_load_params_reads_the_books_pkl_even_with_an_npz_beside_it(tmp_path):
    """ch08: the folder ships the book's deep_convnet_params.pkl; train_deepnet.py's
    save_params writes an .npz beside it; misclassified_mnist.py's load_params('...pkl')
    must read the file it names (issue 20: it read the .npz and scored 0.463, not 0.982)."""
    book = xpnet.TwoLayerNet(4, 3, 2, seed=1, dtype="float64")
    _book_pickle(tmp_path, {k: np.array(v) for k, v in book.params.items()})
    mine = xpnet.TwoLayerNet(4, 3, 2, seed=2)
    with pytest.warns(UserWarning, match="wrote"):
        mine.save_params(str(tmp_path / "params.pkl"))
    other = xpnet.TwoLayerNet(4, 3, 2, seed=3, dtype="float64")
    other.load_params(str(tmp_path / "params.pkl"))
    np.testing.assert_array_equal(other.params["W1"], book.params["W1"])
    other.load_params(str(tmp_path / "params.npz"))        # the .npz, when named
    np.testing.assert_array_equal(other.params["W1"], mine.params["W1"])
