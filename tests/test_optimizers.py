"""Optimizers: update rules against steps written out here, the same on every backend,
dtype, state round trip, errors."""
import json
import math

import numpy as np
import pytest

import xpnet
from xpnet import optimizers as O

P0 = np.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])
GRADS = [np.array([[0.1, -0.2, 0.3], [1.0, -1.5, 0.05]]),
         np.array([[-0.4, 0.0, 0.2], [0.5, 0.5, -0.5]]),
         np.array([[0.3, 0.7, -0.1], [-2.0, 0.25, 0.0]])]


def expected_steps(name, hyper, p0, grads):
    """The update rules written out one step at a time in float64."""
    p = p0.copy()
    v = np.zeros_like(p)     # momentum / first moment
    h = np.zeros_like(p)     # squared-gradient accumulator / second moment
    for t, g in enumerate(grads, start=1):
        if name == "SGD":
            p = p - hyper["lr"] * g
        elif name == "Momentum":
            v = hyper["momentum"] * v - hyper["lr"] * g
            p = p + v
        elif name == "Nesterov":
            # p_{t+1} = p_t - mo*v_t + (1+mo)*v_{t+1},  v_{t+1} = mo*v_t - lr*g
            v_new = hyper["momentum"] * v - hyper["lr"] * g
            p = p - hyper["momentum"] * v + (1 + hyper["momentum"]) * v_new
            v = v_new
        elif name == "AdaGrad":
            h = h + g * g
            p = p - hyper["lr"] * g / (np.sqrt(h) + hyper["eps"])
        elif name == "RMSprop":
            h = hyper["decay_rate"] * h + (1 - hyper["decay_rate"]) * g * g
            p = p - hyper["lr"] * g / (np.sqrt(h) + hyper["eps"])
        elif name in ("Adam", "AdamW"):
            b1, b2 = hyper["beta1"], hyper["beta2"]
            v = b1 * v + (1 - b1) * g
            h = b2 * h + (1 - b2) * g * g
            lr_t = hyper["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            # AdamW: decoupled decay of the weights before this step (Loshchilov & Hutter;
            # torch.optim.AdamW), not scaled by Adam's statistics
            decay = hyper["lr"] * hyper["weight_decay"] * p if name == "AdamW" else 0.0
            p = p - lr_t * v / (np.sqrt(h) + hyper["eps"]) - decay
        else:
            raise AssertionError(name)
    return p


CASES = [
    ("SGD", {"lr": 0.1}),
    ("Momentum", {"lr": 0.1, "momentum": 0.9}),
    ("Nesterov", {"lr": 0.05, "momentum": 0.8}),
    ("AdaGrad", {"lr": 0.3, "eps": 1e-7}),
    ("RMSprop", {"lr": 0.01, "decay_rate": 0.9, "eps": 1e-7}),
    ("Adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-7}),
    ("AdamW", {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-7, "weight_decay": 0.3}),
]
NAMES = [c[0] for c in CASES]


@pytest.mark.parametrize("name,hyper", CASES, ids=NAMES)
def test_update_rule_matches_hand_computed_steps(backend, name, hyper):
    opt = getattr(xpnet, name)(**hyper)
    params = {"W": backend.asarray(P0)}
    for i, g in enumerate(GRADS):
        opt.update(params, {"W": backend.asarray(g)})
        expect = expected_steps(name, hyper, P0, GRADS[:i + 1])
        backend.assert_close(params["W"], expect, rtol=1e-12, atol=1e-14,
                             what="%s step %d" % (name, i + 1))
    assert opt.t == 3


@pytest.mark.parametrize("name,hyper", CASES, ids=NAMES)
def test_update_same_on_every_backend_as_on_numpy(backend, name, hyper):
    """A few float64 steps on several parameters give what the NumPy fast path gives."""
    rng = np.random.default_rng(7)
    p0 = {"W": rng.standard_normal((5, 7)), "b": rng.standard_normal(7),
          "s": rng.standard_normal(())}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(4)]
    with xpnet.using_device("cpu"):
        host = getattr(xpnet, name)(**hyper)
        ph = {k: v.copy() for k, v in p0.items()}
        for g in grads:
            host.update(ph, g)
    opt = getattr(xpnet, name)(**hyper)
    pd = {k: backend.asarray(v) for k, v in p0.items()}
    for g in grads:
        opt.update(pd, {k: backend.asarray(v) for k, v in g.items()})
    for k in p0:
        assert backend.dtype(pd[k]) == "float64"
        backend.assert_close(pd[k], ph[k], rtol=1e-13, atol=1e-15, what=k)
        for slot, a in opt.state[k].items():
            backend.assert_close(a, host.state[k][slot], rtol=1e-13, atol=1e-15,
                                 what="%s %s" % (k, slot))
    assert not np.allclose(ph["W"], p0["W"])       # the steps did move the parameters


def test_adamw_step_by_hand(backend):
    """One step: Adam's bias-corrected first step moves each weight by lr against its
    gradient; the decay takes lr*weight_decay*p besides, also where the gradient is 0
    (an L2 term in the gradient would instead be normalised by Adam: 4 -> 3.9)."""
    opt = O.AdamW(lr=0.1, weight_decay=0.5, eps=1e-12)
    p = {"w": backend.asarray([1.0, 4.0, -2.0])}
    opt.update(p, {"w": backend.asarray([3.0, 0.0, -0.5])})
    # 1 - 0.1 - 0.05*1 | 4 - 0 - 0.05*4 | -2 + 0.1 - 0.05*(-2)
    backend.assert_close(p["w"], [0.85, 3.8, -1.8], rtol=1e-10)
    # second step with no gradient: Adam's moments still move the first and last weight,
    # the decay shrinks every one by the factor 1 - lr*weight_decay
    m = np.array([0.3, 0.0, -0.05]) * 0.9
    v = np.array([9.0, 0.0, 0.25]) * 0.001 * 0.999
    lr_t = 0.1 * math.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    want = np.array([0.85, 3.8, -1.8]) * 0.95 - lr_t * m / (np.sqrt(v) + 1e-12)
    opt.update(p, {"w": backend.asarray([0.0, 0.0, 0.0])})
    backend.assert_close(p["w"], want, rtol=1e-10)
    assert float(backend.np(p["w"])[1]) == pytest.approx(3.8 * 0.95, rel=1e-12)


def test_adamw_without_decay_is_adam(backend):
    hyper = {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-7}
    a, w = O.Adam(**hyper), O.AdamW(weight_decay=0.0, **hyper)
    pa, pw = {"W": backend.asarray(P0)}, {"W": backend.asarray(P0)}
    for g in GRADS:
        a.update(pa, {"W": backend.asarray(g)})
        w.update(pw, {"W": backend.asarray(g)})
    np.testing.assert_array_equal(backend.np(pw["W"]), backend.np(pa["W"]))


@pytest.mark.parametrize("wd", [-0.01, float("nan"), float("inf"), -float("inf")])
def test_adamw_bad_weight_decay(wd):
    with pytest.raises(ValueError, match="AdamW: weight_decay must be a finite number >= 0, got"):
        O.AdamW(weight_decay=wd)
    sd = O.AdamW().state_dict()
    sd["hyper"]["weight_decay"] = wd
    with pytest.raises(ValueError, match="AdamW: weight_decay must be a finite number >= 0"):
        O.AdamW().load_state_dict(sd)


@pytest.mark.parametrize("wd", ["0.1", None, True])
def test_adamw_weight_decay_must_be_a_number(wd):
    with pytest.raises(TypeError, match="AdamW: weight_decay must be a number, got"):
        O.AdamW(weight_decay=wd)


def test_first_steps_by_hand():
    """A few steps spelled out as plain numbers (not through the helper above)."""
    p = {"w": np.array([1.0])}
    O.SGD(lr=0.5).update(p, {"w": np.array([0.2])})
    assert p["w"][0] == pytest.approx(0.9)
    p = {"w": np.array([1.0])}
    m = O.Momentum(lr=0.1, momentum=0.5)
    m.update(p, {"w": np.array([1.0])})           # v=-0.1, p=0.9
    m.update(p, {"w": np.array([1.0])})           # v=-0.15, p=0.75
    assert p["w"][0] == pytest.approx(0.75)
    p = {"w": np.array([1.0])}
    a = O.AdaGrad(lr=0.1, eps=1e-12)              # eps must be > 0; 1e-12 is nothing here
    a.update(p, {"w": np.array([2.0])})           # h=4, p=1-0.1*2/2=0.9
    a.update(p, {"w": np.array([0.0])})           # no change
    assert p["w"][0] == pytest.approx(0.9, rel=1e-10)
    p = {"w": np.array([1.0])}
    ad = O.Adam(lr=0.1, eps=1e-12)
    ad.update(p, {"w": np.array([3.0])})          # bias-corrected first step moves by lr
    assert p["w"][0] == pytest.approx(0.9, rel=1e-10)


def test_skips_missing_and_none_gradients(backend):
    opt = O.Momentum(lr=0.1)
    params = {"a": backend.asarray([1.0]), "b": backend.asarray([2.0]), "c": backend.asarray([3.0])}
    opt.update(params, {"a": backend.asarray([1.0]), "b": None})
    backend.assert_close(params["a"], [0.9])
    backend.assert_close(params["b"], [2.0])
    backend.assert_close(params["c"], [3.0])
    assert set(opt.state) == {"a"}


@pytest.mark.parametrize("name,hyper", CASES, ids=NAMES)
def test_float32_stays_float32(backend, name, hyper):
    opt = getattr(xpnet, name)(**hyper)
    params = {"W": backend.asarray(P0, np.float32)}
    ref = params["W"]
    for g in GRADS:
        opt.update(params, {"W": backend.asarray(g, np.float32)})
    # in place on the fast providers (NumPy, CuPy); new arrays from the reference kernels
    fast = backend.is_numpy or backend.is_gpu
    assert (params["W"] is ref) == (fast and not backend.dev.reference)
    assert backend.dtype(params["W"]) == "float32"
    for slot, arr in opt.state.get("W", {}).items():
        assert backend.dtype(arr) == "float32", slot
    expect = expected_steps(name, hyper, P0, GRADS)
    backend.assert_close(params["W"], expect, rtol=2e-5, atol=2e-6)
    # float64 gradients for float32 parameters are cast, not promoted
    opt.update(params, {"W": backend.asarray(GRADS[0])})
    assert backend.dtype(params["W"]) == "float32"
    assert all(backend.dtype(a) == "float32" for a in opt.state.get("W", {}).values())


@pytest.mark.parametrize("name,hyper", CASES, ids=NAMES)
def test_state_dict_round_trip_continues_identically(backend, name, hyper):
    cls = getattr(xpnet, name)
    a = cls(**hyper)
    pa = {"W": backend.asarray(P0), "b": backend.asarray(P0[0])}
    for g in GRADS[:2]:
        a.update(pa, {"W": backend.asarray(g), "b": backend.asarray(g[1])})
    sd = a.state_dict()
    # host arrays and JSON-able scalars, fit for a .npz + JSON checkpoint
    json.dumps({"type": sd["type"], "hyper": sd["hyper"], "t": sd["t"]})
    for st in sd["state"].values():
        for arr in st.values():
            assert type(arr) is np.ndarray
    b = cls(lr=0.5).load_state_dict(sd)
    assert b.lr == hyper["lr"] and b.t == a.t
    pb = {k: backend.copy(v) for k, v in pa.items()}
    for g in GRADS[1:] + GRADS[:1]:
        grads = {"W": backend.asarray(g), "b": backend.asarray(g[0])}
        a.update(pa, grads)
        b.update(pb, grads)
    for k in pa:
        np.testing.assert_array_equal(backend.np(pb[k]), backend.np(pa[k]), err_msg=k)
    # the saved dict is a snapshot: later updates didn't change it
    c = cls(**hyper).load_state_dict(sd)
    assert c.t == 2


def test_load_state_dict_errors():
    sd = O.Adam().state_dict()
    with pytest.raises(ValueError, match="optimizer state is for 'Adam', this optimizer is SGD"):
        O.SGD().load_state_dict(sd)
    sd["hyper"]["warp"] = 9
    with pytest.raises(ValueError, match="Adam: unknown hyper-parameter 'warp'"):
        O.Adam().load_state_dict(sd)


def test_update_errors(backend):
    opt = O.SGD(lr=0.1)
    params = {"W": backend.asarray(np.zeros((2, 3)))}
    with pytest.raises(ValueError, match=r"SGD: gradient 'W' has shape \(3, 2\) but the parameter "
                                         r"has \(2, 3\)"):
        opt.update(params, {"W": backend.asarray(np.zeros((3, 2)))})


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="Adam: lr must be a positive number, got"):
        O.Adam(lr=lr)


@pytest.mark.parametrize("lr", ["0.1", None, True])
def test_learning_rate_must_be_a_number(lr):
    with pytest.raises(TypeError, match="Adam: lr must be a number, got"):
        O.Adam(lr=lr)


@pytest.mark.parametrize("cls,hyper", [(O.AdaGrad, "eps"), (O.RMSprop, "eps"), (O.Adam, "eps"),
                                       (O.AdamW, "eps")])
def test_eps_must_be_positive(cls, hyper):
    with pytest.raises(ValueError, match="%s: %s must be a positive number, got 0.0"
                       % (cls.__name__, hyper)):
        cls(**{hyper: 0.0})


def test_get_optimizer():
    for name, hyper in CASES:
        opt = O.get_optimizer(name.upper(), **hyper)
        assert type(opt).__name__ == name
        assert opt.lr == hyper["lr"]
    assert sorted(O.OPTIMIZERS) == sorted(n.lower() for n in NAMES)
    adam = O.Adam()
    assert O.get_optimizer(adam) is adam
    adamw = O.get_optimizer("adamw", weight_decay=0.05)
    assert type(adamw) is O.AdamW and adamw.weight_decay == 0.05 and adamw.lr == 0.001
    assert O.get_optimizer("AdamW").weight_decay == 0.01
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'; valid: SGD, Momentum, "
                                         "Nesterov, AdaGrad, RMSprop, Adam, AdamW$"):
        O.get_optimizer("adamx")
    with pytest.raises(TypeError, match="SGD: bad optimizer_param .*momentum"):
        O.get_optimizer("sgd", lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match="Adam: bad optimizer_param .*weight_decay"):
        O.get_optimizer("adam", weight_decay=0.1)
    assert "lr=0.001" in repr(O.Adam())
    assert "weight_decay=0.01" in repr(O.AdamW())


@pytest.mark.gpu
@pytest.mark.parametrize("name,hyper", CASES, ids=NAMES)
def test_state_follows_the_parameters_to_another_device(backend, name, hyper):
    """Train a step on the CPU, move parameters and optimizer to the backend's device,
    continue: same result as staying on the CPU."""
    if not backend.is_gpu:
        pytest.skip("needs the cupy backend")
    stay = getattr(xpnet, name)(**hyper)
    move = getattr(xpnet, name)(**hyper)
    ps = {"W": P0.copy()}
    pm = {"W": P0.copy()}
    stay.update(ps, {"W": GRADS[0]})
    move.update(pm, {"W": GRADS[0]})
    pm = xpnet.to_device(pm, backend.device)
    assert xpnet.to_device(move, backend.device) is move
    for st in move.state.values():
        for arr in st.values():
            assert xpnet.get_array_module(arr) is backend.xp
    for g in GRADS[1:]:
        stay.update(ps, {"W": g})
        move.update(pm, {"W": backend.asarray(g)})
    backend.assert_close(pm["W"], ps["W"], rtol=1e-12, atol=1e-14)
    # moving only the parameters: the state follows them at the next update
    lazy = getattr(xpnet, name)(**hyper)
    pl = {"W": P0.copy()}
    lazy.update(pl, {"W": GRADS[0]})
    pl = xpnet.to_device(pl, backend.device)
    for g in GRADS[1:]:
        lazy.update(pl, {"W": backend.asarray(g)})
    backend.assert_close(pl["W"], ps["W"], rtol=1e-12, atol=1e-14)
