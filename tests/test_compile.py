"""xpnet.compile_step: one call = forward + backward + update, compiled by jax.jit on JAX.

Compiled and eager steps must agree (1e-5 in float32, no dropout), the net and the
optimizer must hold the step's results after each call, and value checks must run
on the host before the program."""
import numpy as np
import pytest

import xpnet
from xpnet import compile as xcompile
from xpnet import layers as L
from xpnet.compile import CompileWarning, compile_step

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install -e '.[jax]')")


def data(n=16, shape=(1, 8, 8), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape).astype(np.float32), rng.integers(0, classes, n)


def conv_bn_net(device, dropout=0.0):
    """A small net with every kind of state: conv, pooling, BatchNorm (running
    statistics), Dropout, two weight layers."""
    rng = np.random.default_rng(1)
    f = lambda *s: xpnet.to_device((rng.standard_normal(s) * 0.3).astype(np.float32), device)
    z = lambda n: xpnet.to_device(np.zeros(n, np.float32), device)
    o = lambda n: xpnet.to_device(np.ones(n, np.float32), device)
    # no bias before BatchNorm: its gradient is 0 up to rounding, which Adam would amplify
    layers = [L.Convolution(f(3, 1, 3, 3), None, pad=1), L.BatchNormalization(o(3), z(3)),
              L.Relu(), L.Pooling(2, 2, stride=2), L.Affine(f(48, 10), z(10)),
              L.Dropout(dropout), L.Tanh(), L.Affine(f(10, 4), z(4))]
    net = xpnet.Sequential(layers)
    net.config = {"output_size": 4}
    return net


def host(d):
    return {k: xpnet.asnumpy(v) for k, v in d.items() if v is not None}


def eager_steps(net, opt, batches):
    losses = []
    for x, t in batches:
        g = net.gradient(x, t)
        opt.update(net.params, g)
        losses.append(float(net.last_loss))
    return losses


# Adam steps by about lr wherever a gradient is rounding noise, so its lr is kept small
@pytest.mark.parametrize("optimizer,lr", [pytest.param("sgd", 0.05, marks=pytest.mark.slow),
                                          pytest.param("momentum", 0.05,
                                                       marks=pytest.mark.slow),
                                          ("adam", 1e-3)])
def test_jit_step_equals_eager_step(optimizer, lr):
    batches = [data(seed=s) for s in range(3)]
    ref_net, ref_opt = conv_bn_net("jax:cpu"), xpnet.get_optimizer(optimizer, lr=lr)
    net, opt = conv_bn_net("jax:cpu"), xpnet.get_optimizer(optimizer, lr=lr)
    step = compile_step(net, opt)
    assert step.mode == "jax.jit"
    want = eager_steps(ref_net, ref_opt, batches)
    got = [step(x, t) for x, t in batches]
    assert all(isinstance(v, float) for v in got)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # parameters, BatchNorm's running statistics and the optimizer's state are in the net
    for mine, ref in ((net.params, ref_net.params), (net.buffers, ref_net.buffers)):
        a, b = host(mine), host(ref)
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert host(net.buffers)["running_mean1"].any()          # the statistics moved
    assert opt.t == ref_opt.t == 3
    sd, ref_sd = opt.state_dict(), ref_opt.state_dict()
    for k, st in ref_sd["state"].items():
        for s, a in st.items():
            np.testing.assert_allclose(sd["state"][k][s], a, rtol=1e-5, atol=1e-5)
    step.sync()                  # idempotent: the step has already bound its results
    assert isinstance(net.params["W1"], jax.Array)
    # the net still works eagerly afterwards (no tracer left in a layer)
    x, t = batches[0]
    assert float(net.loss(x, t)) == pytest.approx(float(ref_net.loss(x, t)), rel=1e-5)


def test_jit_step_carries_dropout_keys():
    x, t = data()

    net = conv_bn_net("jax:cpu", dropout=0.5)
    step = compile_step(net, xpnet.SGD(lr=1e-12))   # the parameters barely move
    losses = [step(x, t) for _ in range(3)]
    assert len(set(losses)) == 3           # a new mask each step: the key is carried
    assert net.layers[5].draw is None      # the trace's hook is gone from the layer


def test_host_checks_run_before_the_program():
    net, opt = conv_bn_net("jax:cpu"), xpnet.Adam()
    step = compile_step(net, opt)
    x, t = data()
    before = host(net.params)
    with pytest.raises(ValueError, match=r"SoftmaxWithLoss: label 7 at index 2 is outside "
                                         r"\[0, 4\)"):
        step(x, np.where(np.arange(16) == 2, 7, t))
    bad = x.copy()
    bad[1, 0, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value nan at index \(1, 0, 2, 3\)"):
        step(bad, t)
    with pytest.raises(ValueError, match="16 samples but 3 labels"):
        step(x, t[:3])
    assert opt.t == 0 and step._program is None           # nothing ran
    after = host(net.params)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert step(x, t.reshape(-1, 1)) > 0                  # the book's (N, 1) labels


def test_eager_on_numpy_and_jit_refused_where_there_is_no_compiler():
    batches = [data(seed=s) for s in range(2)]
    net, opt = conv_bn_net("cpu"), xpnet.Adam(lr=0.01)
    ref_net, ref_opt = conv_bn_net("cpu"), xpnet.Adam(lr=0.01)
    step = compile_step(net, opt)
    assert step.mode == "eager"
    assert [step(x, t) for x, t in batches] == eager_steps(ref_net, ref_opt, batches)
    assert all(np.array_equal(a, b) for a, b in zip(host(net.params).values(),
                                                       host(ref_net.params).values()))
    with pytest.raises(ValueError, match="no compiler for numpy arrays"):
        compile_step(net, opt, mode="jit")
    with pytest.raises(ValueError, match="mode must be"):
        compile_step(net, opt, mode="fast")


def test_torch_compile_falls_back_with_a_warning(monkeypatch):
    pytest.importorskip("torch")
    x, t = data()
    net, opt = conv_bn_net("torch:cpu"), xpnet.SGD(lr=0.1)
    ref_net, ref_opt = conv_bn_net("torch:cpu"), xpnet.SGD(lr=0.1)
    assert compile_step(net, opt, mode="eager").mode == "eager"

    def broken(fn):
        def run(*a):
            raise RuntimeError("inductor: no C++ compiler")
        return run
    monkeypatch.setattr(xcompile._Torch, "compile", staticmethod(broken))
    step = compile_step(net, opt)
    assert step.mode == "torch.compile"
    with pytest.warns(CompileWarning, match=r"torch.compile failed \(RuntimeError: inductor: "
                                            r"no C\+\+ compiler\); this step runs eagerly"):
        loss = step(x, t)
    assert step.mode == "eager" and opt.t == 1
    assert loss == eager_steps(ref_net, ref_opt, [(x, t)])[0]
    strict = compile_step(net, opt, mode="jit")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        strict(x, t)
    assert opt.t == 1


@pytest.mark.slow
def test_torch_compile_step_equals_eager():       # minutes: inductor compiles many graphs
    pytest.importorskip("torch")
    batches = [data(seed=s) for s in range(2)]
    net, opt = conv_bn_net("torch:cpu"), xpnet.Momentum(lr=0.05)
    ref_net, ref_opt = conv_bn_net("torch:cpu"), xpnet.Momentum(lr=0.05)
    step = compile_step(net, opt, mode="jit")
    got = [step(x, t) for x, t in batches]
    np.testing.assert_allclose(got, eager_steps(ref_net, ref_opt, batches), rtol=1e-5)
    a, b = host(net.params), host(ref_net.params)
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_book_style_net_runs_eagerly():
    net = xpnet.TwoLayerNet(16, 5, 4, seed=0).to("jax:cpu")
    x, t = data(shape=(16,))
    assert compile_step(net, xpnet.SGD()).mode == "jax.jit"     # an xpnet Sequential
    with pytest.raises(TypeError, match="only xpnet nets"):
        compile_step(type("BookNet", (), {"params": net.params, "gradient": net.gradient})(), xpnet.SGD(), mode="jit")


def test_compile_step_refuses_what_is_not_a_net_or_an_optimizer():
    net = xpnet.TwoLayerNet(4, 3, 2)
    with pytest.raises(TypeError, match="compile_step: net must be a net"):
        xpnet.compile_step(None, xpnet.SGD())
    with pytest.raises(TypeError, match="compile_step: optimizer must have update"):
        xpnet.compile_step(net, "adam")
