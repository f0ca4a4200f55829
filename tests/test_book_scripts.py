"""The book's chapter scripts' patterns (ch05-ch08), run on xpnet with classes of the book's
SHAPE: float64 parameters drawn with ``np.random.randn``, layers kept in an OrderedDict,
``gradient``/``numerical_gradient``/``accuracy`` methods as the book writes them, driven by
xpnet's loaders, optimizers, ``Trainer`` and parameter loading. The classes are written
here for these tests; none is copied from the book. They guard the promise of
docs/from-the-book.md that the book's own classes run on xpnet.

Data: the embedded MNIST sample (4,000 training and 1,000 test digits), so nothing is
downloaded. The whole file runs in a few seconds.
"""
import pickle
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import xpnet
from xpnet import layers as L
from xpnet.datasets import load_mnist_sample
from xpnet.gradient_check import PrecisionWarning, numerical_gradient
from xpnet.trainer import Trainer

# The cast of the loaders' float32 images to the book classes' float64 is expected here;
# the tests that count the DtypeWarning record it themselves.
pytestmark = pytest.mark.filterwarnings("ignore::xpnet.layers.DtypeWarning")


@pytest.fixture(scope="module")
def mnist_flat():
    return load_mnist_sample(normalize=True, flatten=True)


@pytest.fixture(scope="module")
def mnist_images():
    return load_mnist_sample(normalize=True, flatten=False)


# ---------------------------------------------------------------- book-shaped classes

class BookTwoLayerNet:
    """Chapter 5's shape. ``accuracy(x, t)`` takes no batch_size, as in the book's
    TwoLayerNet and MultiLayerNet."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, seed=0):
        rs = np.random.RandomState(seed)
        self.params = {}
        self.params["W1"] = weight_init_std * rs.randn(input_size, hidden_size)
        self.params["b1"] = np.zeros(hidden_size)
        self.params["W2"] = weight_init_std * rs.randn(hidden_size, output_size)
        self.params["b2"] = np.zeros(output_size)
        self.layers = OrderedDict()
        self.layers["Affine1"] = L.Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = L.Relu()
        self.layers["Affine2"] = L.Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = L.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        f = lambda _: self.loss(x, t)      # noqa: E731  (the book's loss_W)
        return {k: numerical_gradient(f, self.params[k]) for k in ("W1", "b1", "W2", "b2")}

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


class BookSimpleConvNet:
    """Chapter 7's shape: conv - relu - pool - affine - relu - affine. Its
    ``accuracy(x, t, batch_size=100)`` walks ``int(N / batch_size)`` whole batches and
    divides by N, so the images of a last partial batch count as wrong."""

    def __init__(self, input_dim=(1, 28, 28), filter_num=30, filter_size=5, hidden_size=100,
                 output_size=10, weight_init_std=0.01, seed=0):
        rs = np.random.RandomState(seed)
        C, H, _ = input_dim
        conv_out = H - filter_size + 1
        pool_out = filter_num * (conv_out // 2) * (conv_out // 2)
        self.params = {
            "W1": weight_init_std * rs.randn(filter_num, C, filter_size, filter_size),
            "b1": np.zeros(filter_num),
            "W2": weight_init_std * rs.randn(pool_out, hidden_size),
            "b2": np.zeros(hidden_size),
            "W3": weight_init_std * rs.randn(hidden_size, output_size),
            "b3": np.zeros(output_size)}
        self.layers = OrderedDict()
        self.layers["Conv1"] = L.Convolution(self.params["W1"], self.params["b1"], 1, 0)
        self.layers["Relu1"] = L.Relu()
        self.layers["Pool1"] = L.Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = L.Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = L.Relu()
        self.layers["Affine2"] = L.Affine(self.params["W3"], self.params["b3"])
        self.last_layer = L.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t, batch_size=100):
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(int(x.shape[0] / batch_size)):
            y = np.argmax(self.predict(x[i * batch_size:(i + 1) * batch_size]), axis=1)
            acc += np.sum(y == t[i * batch_size:(i + 1) * batch_size])
        return acc / x.shape[0]

    def numerical_gradient(self, x, t):
        f = lambda _: self.loss(x, t)      # noqa: E731
        return {k: numerical_gradient(f, v) for k, v in self.params.items()}

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        c, a1, a2 = self.layers["Conv1"], self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": c.dW, "b1": c.db, "W2": a1.dW, "b2": a1.db, "W3": a2.dW, "b3": a2.db}


def _true_accuracy(net, x, t):
    """Every image counted, batch by batch, remainder included."""
    correct = 0
    for i in range(0, x.shape[0], 100):
        correct += int(np.sum(np.argmax(net.predict(x[i:i + 100]), axis=1) == t[i:i + 100]))
    return correct / x.shape[0]


def _dtype_warnings(record):
    return [w for w in record if issubclass(w.category, L.DtypeWarning)]


# ---------------------------------------------------------------- ch05/gradient_check.py

def test_ch05_gradient_check_of_a_float64_book_class_agrees_to_1e_9():
    """float32 images from xpnet's loader, one-hot labels, the book's float64 class: the
    input is cast (one DtypeWarning), no PrecisionWarning, and numerical and backprop
    gradients agree to 1e-9 or better (xpnet's loss is exact; the book's own code, whose
    loss adds 1e-7 inside the log, shows 1e-8..1e-6 on these images)."""
    (x, t), _ = load_mnist_sample(normalize=True, one_hot_label=True)
    net = BookTwoLayerNet(784, 5, 10)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("default")
        warnings.simplefilter("error", PrecisionWarning)
        grad_numerical = net.numerical_gradient(x[:3], t[:3])
        grad_backprop = net.gradient(x[:3], t[:3])
    assert len(_dtype_warnings(rec)) == 1, [str(w.message) for w in rec]
    assert "cast to float64" in str(_dtype_warnings(rec)[0].message)
    for key in ("W1", "b1", "W2", "b2"):
        assert grad_backprop[key].dtype == np.float64
        diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
        assert diff < 1e-9, (key, diff)
        assert np.abs(grad_backprop[key]).max() > 1e-4, key     # not a check of zeros


def test_ch05_gradient_check_in_float32_warns():
    """The same class given float32 parameters (set the way the book's load_params sets
    them): its numerical gradient warns and says to use float64."""
    net = BookTwoLayerNet(6, 3, 2)
    for k in net.params:
        net.params[k] = net.params[k].astype(np.float32)
    for i, name in ((1, "Affine1"), (2, "Affine2")):
        net.layers[name].W, net.layers[name].b = net.params["W%d" % i], net.params["b%d" % i]
    x = np.random.RandomState(1).rand(2, 6).astype(np.float32)
    with pytest.warns(PrecisionWarning, match="float64"):
        grads = net.numerical_gradient(x, np.array([0, 1]))
    assert grads["W1"].dtype == np.float32


# ---------------------------------------------------------------- ch05/train_neuralnet.py, ch06 optimizers

LEARNING_RATES = {"SGD": 0.1, "Momentum": 0.05, "Nesterov": 0.05, "AdaGrad": 0.05,
                  "RMSprop": 0.002, "Adam": 0.002}


@pytest.mark.parametrize("name", sorted(LEARNING_RATES))
def test_book_training_loop_with_star_imported_optimizers(mnist_flat, name):
    """``from xpnet.optimizers import *`` (ch06/optimizer_compare_mnist.py), the book's
    loop of random batches, gradient, ``optimizer.update(network.params, grads)``: the
    update lands in the arrays the layers hold, and the net learns."""
    ns = {}
    exec("from xpnet.optimizers import *", ns)
    optimizer = ns[name](lr=LEARNING_RATES[name])
    (x_train, t_train), (x_test, t_test) = mnist_flat
    network = BookTwoLayerNet(784, 50, 10, seed=1)
    before = network.accuracy(x_test, t_test)
    rs = np.random.RandomState(0)
    losses = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("default")
        for i in range(150):
            batch_mask = rs.choice(x_train.shape[0], 100)
            grads = network.gradient(x_train[batch_mask], t_train[batch_mask])
            optimizer.update(network.params, grads)
            losses.append(float(network.loss(x_train[batch_mask], t_train[batch_mask])))
    assert len(_dtype_warnings(rec)) <= 1      # once per call site, not once per step
    assert network.layers["Affine1"].W is network.params["W1"]
    assert network.params["W1"].dtype == np.float64
    after = network.accuracy(x_test, t_test)
    assert before < 0.3 and after > 0.8, (before, after)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5])


# ---------------------------------------------------------------- common/trainer.py

def test_trainer_takes_a_book_net_whose_accuracy_has_no_batch_size(mnist_flat):
    """ch06/overfit_dropout.py and hyperparameter_optimization.py give xpnet's Trainer the
    book's MultiLayerNet(Extend), whose ``accuracy(x, t)`` has no batch_size."""
    (x_train, t_train), (x_test, t_test) = mnist_flat
    network = BookTwoLayerNet(784, 30, 10, seed=2)
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=2,
                      mini_batch_size=100, optimizer="sgd", optimizer_param={"lr": 0.3},
                      verbose=False, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", L.DtypeWarning)
        trainer.train()
        truth = network.accuracy(x_test, t_test)      # right for this class: no batches
    assert len(trainer.test_acc_list) == 2 and len(trainer.train_acc_list) == 2
    assert trainer.test_acc_list[-1] == pytest.approx(truth, abs=1e-12)
    assert truth > 0.7


@pytest.mark.parametrize("n_test", [999, 500])
def test_trainer_counts_every_image_with_an_accuracy_that_drops_the_partial_batch(
        mnist_images, n_test):
    """ch07/train_convnet.py with the book's SimpleConvNet: its accuracy ignores a last
    partial batch (and, with the Trainer's batch of 1,000, every batch of a smaller test
    set). The Trainer must report the accuracy over all n_test images."""
    (x_train, t_train), (x_test, t_test) = mnist_images
    x_test, t_test = x_test[:n_test], t_test[:n_test]
    network = BookSimpleConvNet(filter_num=6, hidden_size=30, weight_init_std=0.1, seed=3)
    trainer = Trainer(network, x_train[:800], t_train[:800], x_test, t_test, epochs=1,
                      mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.01},
                      verbose=False, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", L.DtypeWarning)
        history = trainer.train()
        truth = _true_accuracy(network, x_test, t_test)
        # the class's own numbers at the Trainer's evaluation batch (1,000) and its own (100)
        own_1000 = network.accuracy(x_test, t_test, batch_size=1000)
        own_100 = network.accuracy(x_test, t_test)
    assert truth > 0.35
    assert own_1000 == 0.0
    assert own_100 < truth if n_test % 100 else own_100 == pytest.approx(truth, abs=1e-12)
    assert trainer.test_acc_list[-1] == pytest.approx(truth, abs=1e-12)
    assert history["final_test_acc"] == pytest.approx(truth, abs=1e-12)


# ---------------------------------------------------------------- ch07/gradient_check.py: (N, 1) labels

def test_ch07_gradient_check_with_n_by_1_labels():
    """``T = np.array([1]).reshape((1, 1))`` on a 10x10 float64 image, as in
    ch07/gradient_check.py: SoftmaxWithLoss takes it, and gradients agree."""
    network = BookSimpleConvNet(input_dim=(1, 10, 10), filter_num=10, filter_size=3,
                                hidden_size=10, output_size=10, weight_init_std=0.3, seed=4)
    rs = np.random.RandomState(5)
    X = rs.rand(100).reshape((1, 1, 10, 10))
    T = np.array([1]).reshape((1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # float64 throughout: no warning at all
        grad_num = network.numerical_gradient(X, T)
        grad = network.gradient(X, T)
    for key in grad_num:
        assert np.abs(grad_num[key] - grad[key]).mean() < 1e-8, key
        assert np.abs(grad[key]).max() > 1e-3, key


def test_n_by_1_labels_equal_flat_labels_in_loss_and_gradient():
    rs = np.random.RandomState(6)
    x = rs.randn(5, 4)
    t = np.array([3, 0, 1, 1, 2])
    a, b = L.SoftmaxWithLoss(), L.SoftmaxWithLoss()
    assert float(a.forward(x, t.reshape(5, 1))) == pytest.approx(float(b.forward(x, t)),
                                                                 rel=1e-15)
    np.testing.assert_array_equal(a.backward(1), b.backward(1))
    net = xpnet.SimpleConvNet((1, 10, 10), {"filter_num": 3, "filter_size": 3, "pad": 0,
                                             "stride": 1}, hidden_size=5, output_size=4,
                              weight_init_std=0.3, dtype="float64", seed=7)
    X = rs.rand(2, 1, 10, 10)
    g1 = net.gradient(X, np.array([[1], [3]]))
    g2 = net.gradient(X, np.array([1, 3]))
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


# ---------------------------------------------------------------- the book's pickled parameters

def _write_book_pickle(path, params):
    """What the book's ``save_params`` writes: pickle of a plain dict of float64 arrays."""
    path.write_bytes(pickle.dumps({k: np.array(v, dtype=np.float64) for k, v in params.items()}))
    return str(path)


def test_pickled_params_of_a_book_simple_convnet_load_into_xpnet(tmp_path, mnist_images):
    """ch07/visualize_filter.py: ``network.load_params("params.pkl")`` with the file the
    book's SimpleConvNet pickled."""
    _, (x_test, _) = mnist_images
    book = BookSimpleConvNet(filter_num=4, hidden_size=20, weight_init_std=0.1, seed=8)
    path = _write_book_pickle(tmp_path / "params.pkl", book.params)
    net = xpnet.SimpleConvNet(input_dim=(1, 28, 28),
                              conv_param={"filter_num": 4, "filter_size": 5, "pad": 0,
                                          "stride": 1},
                              hidden_size=20, output_size=10, seed=0)
    net.load_params(path)
    for k, v in book.params.items():
        np.testing.assert_array_equal(net.params[k], v.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", L.DtypeWarning)
        want = book.predict(x_test[:50])
    np.testing.assert_allclose(net.predict(x_test[:50]), want, rtol=1e-4, atol=1e-5)


def test_pickled_params_of_a_book_deep_convnet_score_as_the_book_does(tmp_path, mnist_images):
    """ch08/misclassified_mnist.py: the book's DeepConvNet scales by (1 - 0.5) at each
    Dropout at test time; xpnet's DeepConvNet, loaded from the book's pickle, must give
    the same scores."""
    _, (x_test, _) = mnist_images
    cps = [{"filter_num": 2 + i, "filter_size": 3, "pad": 2 if i == 3 else 1, "stride": 1}
           for i in range(6)]
    net = xpnet.DeepConvNet(input_dim=(1, 28, 28), conv_param_1=cps[0], conv_param_2=cps[1],
                            conv_param_3=cps[2], conv_param_4=cps[3], conv_param_5=cps[4],
                            conv_param_6=cps[5], hidden_size=8, output_size=10,
                            dtype="float64", seed=9)
    rs = np.random.RandomState(10)
    params = {k: rs.randn(*v.shape) * 0.3 for k, v in net.params.items()}   # "trained"
    path = _write_book_pickle(tmp_path / "deep_convnet_params.pkl", params)
    # the book's evaluation, with xpnet layers holding the pickled arrays
    book_layers = []
    for layer in net.layers:
        if isinstance(layer, L.Convolution):
            i = sum(isinstance(lay, L.Convolution) for lay in book_layers) + 1
            book_layers.append(L.Convolution(params["W%d" % i], params["b%d" % i],
                                             layer.stride, layer.pad))
        elif isinstance(layer, L.Affine):
            i = 7 + sum(isinstance(lay, L.Affine) for lay in book_layers)
            book_layers.append(L.Affine(params["W%d" % i], params["b%d" % i]))
        else:
            book_layers.append(layer)
    h = x_test[:20].astype(np.float64)
    for layer in book_layers:
        h = h * (1.0 - 0.5) if isinstance(layer, L.Dropout) else layer.forward(h)
    net.load_params(path)
    np.testing.assert_allclose(net.predict(x_test[:20]), h, rtol=1e-10, atol=1e-12)


class _RunsCode:
    marker = None

    def __reduce__(self):
        import os
        return (os.system, ("touch %s" % _RunsCode.marker,))


def test_a_pickle_that_would_run_code_is_refused_by_load_params(tmp_path):
    _RunsCode.marker = str(tmp_path / "it_ran")
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps({"W1": _RunsCode()}))
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    before = {k: np.array(v, copy=True) for k, v in net.params.items()}
    with pytest.raises(ValueError, match="refusing"):
        net.load_params(str(path))
    assert not (tmp_path / "it_ran").exists()
    for k, v in before.items():
        np.testing.assert_array_equal(net.params[k], v)
