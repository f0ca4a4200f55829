"""CPU threading (xpnet.parallel): slicing, the pool, BLAS held at one thread, and
every threaded layer giving the serial answer on odd splits."""
import multiprocessing
import threading

import numpy as np
import pytest

import xpnet
from xpnet import conv, layers
from xpnet.backend import cpu_threads as parallel
from xpnet.nets import DeepConvNet, MultiLayerNet, SimpleConvNet

from test_conv import CONV_CASES, POOL_CASES


@pytest.fixture
def threads(monkeypatch):
    """Set the thread count and split even tiny arrays (restored afterwards)."""
    monkeypatch.setitem(parallel._state, "threads", parallel.get_num_threads())
    monkeypatch.setitem(parallel._state, "min_work", 1)

    def set_(n):
        if n > 1 and not parallel._find_blas():
            pytest.skip("threading is off here: %s" % parallel.info()["disabled_because"])
        parallel.set_num_threads(n)
    return set_


def needs_blas():
    if not parallel._find_blas():
        pytest.skip("no settable BLAS: %s" % parallel.info()["disabled_because"])


# ---------------------------------------------------------------- slicing

@pytest.mark.parametrize("n,parts", [(10, 3), (3, 3), (7, 2), (100, 8), (1, 1), (5, 4)])
def test_split_covers_range_evenly(n, parts):
    r = parallel.split(n, parts)
    assert len(r) == parts
    assert r[0][0] == 0 and r[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(r, r[1:]))
    sizes = [b - a for a, b in r]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_plan_serial_cases(threads, monkeypatch):
    threads(1)
    assert parallel.plan(100, 1 << 30) == [(0, 100)]
    threads(3)
    assert parallel.plan(100, 1 << 30) == parallel.split(100, 3)
    assert parallel.plan(2, 1 << 30) == [(0, 1), (1, 2)]          # never more slices than items
    monkeypatch.setitem(parallel._state, "min_work", None)
    assert parallel.plan(100, 1000, min_work=600) == [(0, 100)]   # too little work
    assert len(parallel.plan(100, 1200, min_work=600)) == 2

    class FakeCupy:
        __name__ = "cupy"
    assert parallel.plan(100, 1 << 30, xp=FakeCupy()) == [(0, 100)]


def test_run_returns_slice_results_in_order(threads):
    threads(3)
    seen = set()

    def fn(i, a, b):
        seen.add(threading.get_ident())
        return (i, a, b)
    ranges = parallel.split(10, 3)
    assert parallel.run(ranges, fn) == [(i, a, b) for i, (a, b) in enumerate(ranges)]
    assert len(seen) >= 2           # the caller and at least one pool thread


def test_run_waits_for_every_slice_before_raising(threads):
    threads(3)
    done = []
    gate = threading.Event()

    def fn(i, a, b):
        if i == 0:
            raise RuntimeError("slice 0 failed")
        gate.wait(5)
        done.append(i)
        return i
    t = threading.Timer(0.2, gate.set)
    t.start()
    with pytest.raises(RuntimeError, match="slice 0 failed"):
        parallel.run(parallel.split(9, 3), fn)
    assert sorted(done) == [1, 2]   # the others finished before the error came out
    t.cancel()


def test_nested_run_in_a_worker_is_serial(threads):
    threads(2)

    def inner(i, a, b):
        return threading.get_ident()

    def outer(i, a, b):
        return parallel.run(parallel.plan(4, 1 << 30), inner)
    res = parallel.run(parallel.split(2, 2), outer)
    assert len(res[1]) == 1         # inside the pool thread: one slice, no deadlock


def test_blas_held_at_one_thread_while_running_then_restored(threads):
    needs_blas()
    threads(2)
    get = parallel._blas["get"]
    before = get()
    inside = parallel.run(parallel.split(4, 2), lambda i, a, b: get())
    assert inside == [1, 1]
    assert get() == before
    with parallel.blas_single_threaded():
        assert get() == 1 and parallel.blas_held()
        with parallel.blas_single_threaded():      # re-entrant
            assert get() == 1
        assert get() == 1
    assert get() == before and not parallel.blas_held()


def test_conv_net_holds_blas_mlp_does_not(threads, monkeypatch):
    needs_blas()
    threads(2)
    seen = {}
    real = layers.Affine.forward

    def spy(self, x, train_flg=False):
        seen.setdefault("held", []).append(parallel.blas_held())
        return real(self, x, train_flg)
    monkeypatch.setattr(layers.Affine, "forward", spy)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    SimpleConvNet().predict(x)
    assert seen.pop("held") == [True, True]
    MultiLayerNet(784, [20], 10).predict(x.reshape(4, -1))
    assert seen.pop("held") == [False, False]
    assert not parallel.blas_held()


def test_set_num_threads_checks_and_returns_previous(monkeypatch):
    monkeypatch.setitem(parallel._state, "threads", 1)
    for bad in (0, -1, 1.5, "2", True, None):
        with pytest.raises(ValueError, match="set_num_threads: expected an int >= 1"):
            parallel.set_num_threads(bad)
    prev = parallel.set_num_threads(3)
    assert prev == 1
    assert xpnet.get_num_threads() == (3 if parallel._find_blas() else 1)


@pytest.mark.parametrize("value,ok", [("3", 3), (" 1 ", 1), ("0", None), ("two", None),
                                      ("-2", None)])
def test_env_thread_count(monkeypatch, value, ok):
    monkeypatch.setenv("XPNET_NUM_THREADS", value)
    if ok is None:
        with pytest.raises(ValueError, match="XPNET_NUM_THREADS must be a positive integer"):
            parallel._default_threads()
    else:
        assert parallel._default_threads() == ok


def test_default_thread_count_follows_blas(monkeypatch):
    needs_blas()
    monkeypatch.delenv("XPNET_NUM_THREADS", raising=False)
    n = parallel._default_threads()
    assert 1 <= n <= parallel._blas["get"]()


def _child_runs_parallel(q):
    try:
        out = parallel.run(parallel.split(6, 2), lambda i, a, b: b - a)
        q.put(out)
    except BaseException as e:  # report, don't hang
        q.put(repr(e))


def test_pool_works_after_fork(threads):
    threads(2)
    parallel.run(parallel.split(4, 2), lambda i, a, b: None)   # pool threads exist now
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_runs_parallel, args=(q,))
    p.start()
    p.join(30)
    if p.is_alive():
        p.kill()
        pytest.fail("parallel.run hung in a forked child")
    assert q.get(timeout=5) == [3, 3]


# ---------------------------------------------------------------- layers: threaded == serial

def _both(threads, fn, n_threads=3):
    threads(1)
    ref = fn()
    threads(n_threads)
    return ref, fn()


@pytest.mark.parametrize("shape,fshape,stride,pad", CONV_CASES + [
    ((5, 3, 9, 8), (4, 3, 3), 1, 1), ((7, 2, 11, 10), (3, 3, 3), 2, 2)])
def test_conv_threaded_matches_serial(threads, shape, fshape, stride, pad):
    rng = np.random.default_rng(sum(shape))
    FN, KH, KW = fshape
    x = rng.standard_normal(shape)
    W = rng.standard_normal((FN, shape[1], KH, KW))
    b = rng.standard_normal(FN)

    def go():
        layer = layers.Convolution(W, b, stride, pad)
        out = []
        for k in range(2):                  # the second pass reuses the workspaces
            y = layer.forward(x * (k + 1))
            dy = np.cos(y)
            out += [y, layer.backward(dy), layer.dW.copy(), layer.db.copy()]
        return out
    ref, got = _both(threads, go, n_threads=min(3, shape[0]) if shape[0] > 1 else 2)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("shape,k,stride,pad", POOL_CASES + [((5, 2, 6, 6), (2, 2), 2, 0)])
def test_pool_threaded_matches_serial(threads, shape, k, stride, pad, mode):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 4, size=shape).astype(float)      # ties too

    def go():
        layer = layers.Pooling(k[0], k[1], stride, pad, mode=mode)
        y = layer.forward(x)
        return [y, layer.backward(np.sin(y + 1))]
    ref, got = _both(threads, go)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("shape", [(7, 3), (5, 2, 3, 4), (3,), ()])
def test_relu_threaded_matches_serial(threads, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)

    def go():
        layer = layers.Relu()
        y = layer.forward(x)
        return [y, layer.backward(np.ones_like(y) * 2)]
    ref, got = _both(threads, go)
    for r, g in zip(ref, got):
        assert g.shape == r.shape and g.dtype == r.dtype
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("need_dx", [True, False])
def test_affine_threaded_matches_serial(threads, need_dx):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 2, 3, 2))
    W, b = rng.standard_normal((12, 5)), rng.standard_normal(5)
    dy = rng.standard_normal((7, 5))

    def go():
        layer = layers.Affine(W, b)
        layer.need_input_grad = need_dx
        with parallel.blas_single_threaded():     # Affine splits only inside a held stretch
            y = layer.forward(x)
            dx = layer.backward(dy)
        return [y, layer.dW, layer.db] + ([dx] if need_dx else [])
    ref, got = _both(threads, go)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_deep_conv_net_gradient_threaded_matches_serial(threads):
    rng = np.random.default_rng(3)
    x = rng.random((5, 1, 28, 28))
    t = rng.integers(0, 10, 5)

    def go():
        xpnet.seed(0)
        net = DeepConvNet(dtype="float64")
        for layer in net.layers:
            if isinstance(layer, layers.Dropout):
                layer.dropout_ratio = 0.0
        g = net.gradient(x, t)
        return [float(net.last_loss)] + [g[k] for k in sorted(g)] + [net.predict(x)]
    ref, got = _both(threads, go)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_conv_context_slices_follow_the_forward_plan(threads):
    threads(3)
    x = np.random.default_rng(4).random((7, 2, 6, 6))
    W = np.random.default_rng(5).random((3, 2, 3, 3))
    y, ctx = conv.conv2d_forward(x, W, None, 1, 1, workspace={})
    assert ctx.ranges == parallel.split(7, 3)
    assert [c.shape[3] for c in ctx.cols] == [3, 2, 2]


def test_error_in_a_worker_slice_is_raised_and_pool_stays_usable(threads):
    threads(3)

    def fn(i, a, b):
        if i == 2:
            raise ValueError("slice 2 failed")
        return i
    with pytest.raises(ValueError, match="slice 2 failed"):
        parallel.run(parallel.split(9, 3), fn)
    assert parallel.run(parallel.split(9, 3), lambda i, a, b: (a, b)) == parallel.split(9, 3)


def test_concurrent_callers_share_the_pool(threads):
    """Two threads running at once: slices that find no free worker run in their
    caller, and every caller gets its own results."""
    threads(3)
    errors, out = [], {}

    def caller(k):
        try:
            for _ in range(50):
                r = parallel.run(parallel.split(30, 3), lambda i, a, b: sum(range(a, b)) + k)
                assert r == [sum(range(a, b)) + k for a, b in parallel.split(30, 3)]
            out[k] = True
        except BaseException as e:
            errors.append(e)
    ts = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors and sorted(out) == [0, 1, 2]


@pytest.mark.parametrize("n,F,K,P,block", [(3, 4, 18, 100, 1 << 20),   # one GEMM per image
                                           (3, 4, 18, 100, 4 * 18 * 50),  # two blocks per image
                                           (2, 5, 7, 96, 5 * 7 * 33),   # w=32: 3 blocks
                                           (2, 3, 5, 30, 1 << 20),      # P < 32: one GEMM
                                           (0, 3, 5, 64, 1 << 20)])
@pytest.mark.parametrize("held", [True, False])
def test_gemm_per_image_blocks(threads, monkeypatch, n, F, K, P, block, held):
    threads(2)
    monkeypatch.setattr(conv, "_GEMM_BLOCK", block)
    rng = np.random.default_rng(n + F + K + P)
    Wm = rng.standard_normal((F, K))
    col2 = rng.standard_normal((K, n * P))
    out = np.full((n, F, P), np.nan)
    with parallel.blas_single_threaded(held):
        conv._gemm_per_image(Wm, col2, out)
    want = np.einsum("fk,knp->nfp", Wm, col2.reshape(K, n, P))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,F,K,P,block", [(3, 4, 18, 100, 1 << 20),     # w = P
                                           (3, 4, 18, 128, 4 * 18 * 64),  # two blocks per image
                                           (2, 3, 5, 60, 1 << 20),        # P < 64: one GEMM
                                           (0, 3, 5, 64, 1 << 20)])
@pytest.mark.parametrize("held", [True, False])
def test_weight_grad_blocks(threads, monkeypatch, n, F, K, P, block, held):
    threads(2)
    monkeypatch.setattr(conv, "_GEMM_BLOCK", block)
    rng = np.random.default_rng(n + F + K + P)
    col2 = rng.standard_normal((K, n * P))
    dy = rng.standard_normal((n, F, P // 4, 8))[:, :, :, ::2]     # not contiguous
    with parallel.blas_single_threaded(held):
        got = conv._weight_grad(col2, dy)
    want = np.einsum("knp,nfp->kf", col2.reshape(K, n, P), dy.reshape(n, F, P))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_scratch_of_ended_threads_is_dropped():
    def use():
        conv._scratch("t", np, (1000,), np.float32)
    conv.release_scratch()
    ts = [threading.Thread(target=use) for _ in range(5)]
    for t in ts:
        t.start()
        t.join()
    use()       # this thread registers and prunes the ended ones
    ended = {t.ident for t in ts} - {threading.get_ident()}
    assert not ended & set(conv._scratch_bufs)
    conv.release_scratch()
    assert conv._scratch_bufs == {}


def test_numpys_own_blas_is_preferred():
    import os
    d = os.path.dirname(np.__file__)
    other = "/usr/lib/libopenblas.so.0"
    scipy_like = os.path.join(os.path.dirname(d), "scipy.libs", "libscipy_openblas-1.so")
    own = os.path.join(d + ".libs", "libscipy_openblas64_-2.so")
    assert parallel._numpy_first([other, scipy_like, own]) == [own, other, scipy_like]


def test_conv_backward_rejects_a_raw_column_array():
    x = np.ones((2, 1, 4, 4))
    W = np.ones((1, 1, 3, 3))
    y, ctx = conv.conv2d_forward(x, W, None)
    with pytest.raises(TypeError, match="ctx must be the ConvContext that conv2d_forward"):
        conv.conv2d_backward(np.ones_like(y), ctx.cols[0], W, x.shape)


def test_affine_alone_holds_blas_but_lets_it_thread_in_an_mlp_pass(threads, monkeypatch):
    """A book-style loop over a convnet's layers must not wake BLAS's threads in its
    affine layers; an MLP's pass lets BLAS thread its GEMMs."""
    needs_blas()
    threads(2)
    get = parallel._blas["get"]
    seen = []
    real_plan = parallel.plan

    def spy(n, *a, **k):
        seen.append(get())
        return real_plan(n, *a, **k)
    monkeypatch.setattr(parallel, "plan", spy)
    layer = layers.Affine(np.ones((6, 3)), np.zeros(3))
    layer.forward(np.ones((4, 6)))
    layer.backward(np.ones((4, 3)))
    assert seen == [1, 1]
    before = get()
    with parallel.blas_threads_preferred():
        assert parallel.blas_threads_preferred_here()
        layer.forward(np.ones((4, 6)))
        layer.backward(np.ones((4, 3)))
        assert get() == before
    assert seen == [1, 1] and not parallel.blas_threads_preferred_here()
