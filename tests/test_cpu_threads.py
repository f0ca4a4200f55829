"""CPU threading (xpnet.backend.cpu_threads): slicing, the pool, BLAS held at one
thread (seen through threadpoolctl), and every threaded layer giving the serial
answer on odd splits."""
import contextlib
import multiprocessing
import os
import pickle
import threading

import numpy as np
import pytest
import threadpoolctl

import xpnet
from xpnet import conv, layers
from xpnet.backend import cpu_pool as pool
from xpnet.backend import cpu_threads as parallel
from xpnet.backend import numpy_chwn
from xpnet.nets import DeepConvNet, MultiLayerNet, SimpleConvNet

from test_conv import CONV_CASES, POOL_CASES


@pytest.fixture
def threads(monkeypatch):
    """Set the thread count and split even tiny arrays (restored afterwards)."""
    monkeypatch.setitem(parallel._state, "threads", parallel.get_num_threads())
    monkeypatch.setitem(pool._pool, "min_work", 1)

    def set_(n):
        if n > 1 and parallel.info()["disabled_because"]:
            pytest.skip("threading is off here: %s" % parallel.info()["disabled_because"])
        parallel.set_num_threads(n)
    return set_


def needs_blas():
    if parallel.info()["disabled_because"]:
        pytest.skip("no settable BLAS: %s" % parallel.info()["disabled_because"])


# threadpoolctl >= 3.8: a thread that set OpenBLAS's count keeps control until it lets go
_let_go = getattr(threadpoolctl.OpenBLASController, "clear_controlling_thread", lambda: None)


def blas_counts():
    """Every BLAS library's thread count, as threadpoolctl reads it in this thread."""
    return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]


@pytest.fixture
def blas3():
    """Every BLAS at 3 threads (neither 1 nor the usual default, so a hold that restored
    a remembered or default count would show), set back afterwards."""
    needs_blas()
    limiter = threadpoolctl.ThreadpoolController().limit(limits=3, user_api="blas")
    _let_go()
    try:
        if set(blas_counts()) != {3}:
            pytest.skip("BLAS can't be set to 3 threads here: %s" % blas_counts())
        yield [3] * len(blas_counts())
    finally:
        limiter.restore_original_limits()
        _let_go()


class FakeBlas:
    """A BLAS controller the way threadpoolctl presents one; `per_thread`: its count
    applies to the calling thread only (as MKL's does)."""
    user_api, internal_api, version = "blas", "fakeblas", "9.9"

    def __init__(self, filepath="/opt/fake/libfakeblas.so", n=4, per_thread=False):
        self.filepath, self.default, self.per_thread = filepath, n, per_thread
        self._n, self._local = n, threading.local()

    def get_num_threads(self):
        return getattr(self._local, "n", self.default) if self.per_thread else self._n

    def set_num_threads(self, n):
        if self.per_thread:
            self._local.n = n
        else:
            self._n = n

    num_threads = property(get_num_threads)

    def info(self, debugging_info=False):
        scope = "current_thread" if self.per_thread else "process"
        return {"thread_limit_scope": scope} if debugging_info else {}


def use_libs(monkeypatch, libs):
    """Make the module find `libs` (threadpoolctl's controllers) from now on, with a
    fresh pool whose workers start under them."""
    class Controller:
        lib_controllers = libs
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Controller)
    monkeypatch.setattr(parallel, "_blas", dict(parallel._blas, tried=False))
    monkeypatch.setitem(pool._pool, "idle", [])
    monkeypatch.setitem(pool._pool, "made", 0)


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
    monkeypatch.setitem(pool._pool, "min_work", None)
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


def test_blas_held_at_one_thread_while_running_then_restored(threads, blas3):
    ones = [1] * len(blas3)
    threads(2)
    inside = parallel.run(parallel.split(4, 2), lambda i, a, b: blas_counts())
    assert inside == [ones, ones]               # in the caller's slice and the worker's
    assert blas_counts() == blas3 and not parallel.blas_single_threaded()
    with parallel.policy().hold():
        assert blas_counts() == ones and parallel.blas_single_threaded()
        assert parallel.blas_single_threaded()
        with parallel.policy().hold():      # re-entrant
            assert blas_counts() == ones
        assert blas_counts() == ones
    assert blas_counts() == blas3 and not parallel.blas_single_threaded()
    threads(1)
    with parallel.policy().hold():          # xpnet's threads off: BLAS threads
        assert blas_counts() == blas3 and not parallel.blas_single_threaded()


def test_hold_restores_the_count_it_found_each_time(threads, blas3):
    threads(2)
    with parallel.policy().hold():
        pass
    assert blas_counts() == blas3
    two = threadpoolctl.ThreadpoolController().limit(limits=2, user_api="blas")
    _let_go()
    try:
        with parallel.policy().hold():
            assert set(blas_counts()) == {1}
            assert parallel.info()["blas_threads"] == 2      # BLAS's count, not the hold's
        assert set(blas_counts()) == {2}
    finally:
        two.restore_original_limits()
        _let_go()


def test_hold_entered_in_one_thread_is_restored_by_the_last_to_leave(threads, blas3):
    """Thread A holds first, B joins, A leaves (alive still), B leaves: B restores
    the counts A found, though A was the thread that set them."""
    threads(2)
    a_in, b_in, a_out, b_out = (threading.Event() for _ in range(4))
    seen = []

    def a():
        with parallel.policy().hold():
            a_in.set()
            b_in.wait(5)
        a_out.set()
        b_out.wait(5)

    def b():
        a_in.wait(5)
        with parallel.policy().hold():
            b_in.set()
            a_out.wait(5)
            seen.append((blas_counts(), parallel.blas_single_threaded()))
        seen.append((blas_counts(), parallel.blas_single_threaded()))
        b_out.set()
    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert seen == [([1] * len(blas3), True), (blas3, False)]
    assert blas_counts() == blas3


def test_many_threads_holding_at_once_leave_blas_as_found(threads, blas3):
    threads(2)
    errors = []

    def hammer(k):
        try:
            for i in range(200):
                with parallel.policy().hold():
                    if i % 3 == k % 3:
                        with parallel.policy().hold():
                            assert parallel.blas_single_threaded()
                    assert parallel.blas_single_threaded()
        except BaseException as e:
            errors.append(e)
    ts = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors
    assert blas_counts() == blas3 and not parallel.blas_single_threaded()


def test_hold_does_not_scan_the_libraries_again(threads, monkeypatch):
    needs_blas()
    threads(2)

    def scan():
        raise AssertionError("the hold looked for BLAS libraries again")
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", scan)
    for _ in range(3):
        with parallel.policy().hold():
            assert parallel.run(parallel.split(4, 2), lambda i, a, b: b - a) == [2, 2]
    assert parallel.info()["blas"]


def test_per_thread_blas_held_in_each_holding_thread_and_worker(threads, monkeypatch):
    """A BLAS whose count is per thread (MKL's): the holding threads and the workers
    run at one, other threads keep theirs, each holder restores its own."""
    fake = FakeBlas(per_thread=True, n=4)
    use_libs(monkeypatch, [fake])
    threads(2)
    assert parallel.info()["blas_threads"] == 4
    assert parallel.run(parallel.split(4, 2), lambda i, a, b: fake.get_num_threads()) == [1, 1]
    assert fake.get_num_threads() == 4
    inside, other = threading.Event(), []

    def holder():
        with parallel.policy().hold():
            other.append(fake.get_num_threads())
            inside.set()
            done.wait(5)
        other.append(fake.get_num_threads())
    done = threading.Event()
    with parallel.policy().hold():
        t = threading.Thread(target=holder)
        t.start()
        inside.wait(5)
        assert fake.get_num_threads() == 1 and parallel.blas_single_threaded()
        seen = []
        looker = threading.Thread(target=lambda: seen.append(
            (fake.get_num_threads(), parallel.blas_single_threaded())))
        looker.start()
        looker.join(5)
        assert seen == [(4, False)]                 # a thread that holds nothing
        done.set()
        t.join(5)
        assert fake.get_num_threads() == 1          # the other holder left: still held here
    assert other == [1, 4] and fake.get_num_threads() == 4


def test_numpys_own_blas_named_first_and_every_blas_held(threads, monkeypatch):
    d = os.path.dirname(np.__file__)
    system = FakeBlas("/usr/lib/libopenblas.so.0", n=3)
    own = FakeBlas(os.path.join(d + ".libs", "libscipy_openblas64_-2.so"), n=2)

    class OpenMP(FakeBlas):
        user_api = internal_api = "openmp"
    omp = OpenMP("/usr/lib/libgomp.so.1", n=4)
    use_libs(monkeypatch, [system, omp, own])
    threads(2)
    i = parallel.info()
    assert i["blas"] == "fakeblas 9.9 (libscipy_openblas64_-2.so)"
    assert i["blas_also_held"] == ["fakeblas 9.9 (libopenblas.so.0)"]
    assert i["blas_threads"] == 2 and i["disabled_because"] == ""
    with parallel.policy().hold():
        assert (own.num_threads, system.num_threads, omp.num_threads) == (1, 1, 4)
    assert (own.num_threads, system.num_threads, omp.num_threads) == (2, 3, 4)


@pytest.mark.parametrize("libs,why", [
    ([], "found no BLAS library it can control"),
    ([FakeBlas(n=None)], "can't read the thread count of fakeblas 9.9 (libfakeblas.so)")])
def test_threading_off_without_a_settable_blas_and_info_says_why(threads, monkeypatch,
                                                                 libs, why):
    use_libs(monkeypatch, libs)
    monkeypatch.setitem(parallel._state, "threads", 4)
    i = parallel.info()
    assert why in i["disabled_because"]
    assert i["threads"] == 1 and i["blas"] is None and i["blas_threads"] is None
    assert parallel.plan(100, 1 << 30) == [(0, 100)]
    with parallel.policy().hold():
        assert not parallel.blas_single_threaded()
    assert not parallel.blas_single_threaded()


def test_conv_and_mlp_passes_both_hold_blas_unless_threads_are_off(threads, monkeypatch,
                                                                    blas3):
    """An MLP's small GEMMs with BLAS's own threads oversubscribe the cores (the book's
    chapter 5 loop: 82-93 s against 5.4 s held, on a loaded 2-core machine): every
    net's pass holds BLAS at one thread while xpnet threads; with one xpnet thread BLAS
    threads, as plain NumPy."""
    seen = {}
    real = layers.Affine.forward

    def spy(self, x, train_flg=False):
        seen.setdefault("held", []).append((parallel.blas_single_threaded(), blas_counts()))
        return real(self, x, train_flg)
    monkeypatch.setattr(layers.Affine, "forward", spy)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    ones = [1] * len(blas3)
    threads(2)
    SimpleConvNet().predict(x)
    assert seen.pop("held") == [(True, ones)] * 2
    MultiLayerNet(784, [20], 10).predict(x.reshape(4, -1))
    assert seen.pop("held") == [(True, ones)] * 2
    assert not parallel.blas_single_threaded() and blas_counts() == blas3
    assert parallel.policy() == parallel.ThreadPolicy(2, True)
    threads(1)
    MultiLayerNet(784, [20], 10).predict(x.reshape(4, -1))
    assert seen.pop("held") == [(False, blas3)] * 2
    assert parallel.policy() == parallel.ThreadPolicy(1, False)


def test_set_num_threads_checks_and_returns_previous(monkeypatch):
    monkeypatch.setitem(parallel._state, "threads", 1)
    for bad in (0, -1, 1.5, "2", True, None):
        with pytest.raises(ValueError, match="set_num_threads: expected an int >= 1"):
            parallel.set_num_threads(bad)
    prev = parallel.set_num_threads(3)
    assert prev == 1
    assert xpnet.get_num_threads() == (1 if parallel.info()["disabled_because"] else 3)


@pytest.mark.parametrize("value,ok", [("3", 3), (" 1 ", 1), ("0", None), ("two", None),
                                      ("-2", None)])
def test_env_thread_count(monkeypatch, value, ok):
    monkeypatch.setenv("XPNET_NUM_THREADS", value)
    if ok is None:
        with pytest.raises(ValueError, match="XPNET_NUM_THREADS must be a positive integer"):
            parallel._default_threads()
    else:
        assert parallel._default_threads() == ok


def test_default_thread_count_follows_blas(monkeypatch, threads, blas3):
    monkeypatch.delenv("XPNET_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parallel._default_threads() == min(3, cores)
    threads(2)
    with parallel.policy().hold():      # BLAS's own count, not the hold's 1
        assert parallel._default_threads() == min(3, cores)


def _child_runs_parallel(q):
    try:
        out = parallel.run(parallel.split(6, 2), lambda i, a, b: b - a)
        q.put(out)
    except BaseException as e:  # report, don't hang
        q.put(repr(e))


def _child_reports_blas(q):
    try:
        got = [blas_counts(), parallel.blas_single_threaded()]
        with parallel.policy().hold():
            got.append(blas_counts())
        got += [blas_counts(), parallel.run(parallel.split(6, 2), lambda i, a, b: b - a)]
        q.put(got)
    except BaseException as e:  # report, don't hang
        q.put(repr(e))


def test_fork_child_restores_blas_that_another_thread_held(threads, blas3):
    threads(2)
    held, release = threading.Event(), threading.Event()

    def holder():
        with parallel.policy().hold():
            held.set()
            release.wait(30)
    t = threading.Thread(target=holder)
    t.start()
    try:
        held.wait(5)
        assert set(blas_counts()) == {1}
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_child_reports_blas, args=(q,))
        p.start()
        p.join(30)
        if p.is_alive():
            p.kill()
            pytest.fail("the forked child hung")
        assert q.get(timeout=5) == [blas3, False, [1] * len(blas3), blas3, [3, 3]]
    finally:
        release.set()
        t.join(10)
    assert blas_counts() == blas3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_inside_a_hold_child_starts_unheld(threads, blas3):
    """The child of a fork inside a hold: BLAS as found, not held; leaving the
    pre-fork hold there does nothing; its own holds work."""
    threads(2)
    r, w = os.pipe()
    with parallel.policy().hold():
        pid = os.fork()
        if pid == 0:                             # the child: report, never return
            try:
                got = [blas_counts(), parallel.blas_single_threaded()]
            except BaseException as e:
                got = repr(e)
    if pid == 0:
        try:
            if isinstance(got, list):
                got.append(parallel.blas_single_threaded())
                with parallel.policy().hold():
                    got.append(blas_counts())
                got.append(blas_counts())
            os.write(w, pickle.dumps(got))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = pickle.loads(f.read())
    os.waitpid(pid, 0)
    assert got == [blas3, False, False, [1] * len(blas3), blas3]
    assert blas_counts() == blas3 and not parallel.blas_single_threaded()


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
        with parallel.policy().hold():     # Affine splits only inside a held stretch
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


def test_conv_context_slices_follow_the_forward_plan(threads, monkeypatch):
    monkeypatch.setattr(numpy_chwn, "ENABLED", False)   # the (N, C, H, W) path's batch slices
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
    monkeypatch.setattr(xpnet.backend.numpy_columns, "_GEMM_BLOCK", block)
    rng = np.random.default_rng(n + F + K + P)
    Wm = rng.standard_normal((F, K))
    col2 = rng.standard_normal((K, n * P))
    out = np.full((n, F, P), np.nan)
    with (parallel.policy().hold() if held else contextlib.nullcontext()):
        xpnet.backend.numpy_fast._gemm_per_image(Wm, col2, out)
    want = np.einsum("fk,knp->nfp", Wm, col2.reshape(K, n, P))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,F,K,P,block", [(3, 4, 18, 100, 1 << 20),     # w = P
                                           (3, 4, 18, 128, 4 * 18 * 64),  # two blocks per image
                                           (2, 3, 5, 60, 1 << 20),        # P < 64: one GEMM
                                           (0, 3, 5, 64, 1 << 20)])
@pytest.mark.parametrize("held", [True, False])
def test_weight_grad_blocks(threads, monkeypatch, n, F, K, P, block, held):
    threads(2)
    monkeypatch.setattr(xpnet.backend.numpy_columns, "_GEMM_BLOCK", block)
    rng = np.random.default_rng(n + F + K + P)
    col2 = rng.standard_normal((K, n * P))
    dy = rng.standard_normal((n, F, P // 4, 8))[:, :, :, ::2]     # not contiguous
    with (parallel.policy().hold() if held else contextlib.nullcontext()):
        got = xpnet.backend.numpy_fast._weight_grad(col2, dy)
    want = np.einsum("knp,nfp->kf", col2.reshape(K, n, P), dy.reshape(n, F, P))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_scratch_of_ended_threads_is_dropped():
    fast = xpnet.backend.numpy_fast

    def use():
        fast._scratch("t", (1000,), np.float32)
    fast.release_scratch()
    ts = [threading.Thread(target=use) for _ in range(5)]
    for t in ts:
        t.start()
        t.join()
    use()       # this thread registers and prunes the ended ones
    ended = {t.ident for t in ts} - {threading.get_ident()}
    assert not ended & set(fast._scratch_bufs)
    fast.release_scratch()
    assert fast._scratch_bufs == {}


def test_conv_backward_rejects_a_raw_column_array(monkeypatch):
    monkeypatch.setattr(numpy_chwn, "ENABLED", False)   # the (N, C, H, W) path's columns
    x = np.ones((2, 1, 4, 4))
    W = np.ones((1, 1, 3, 3))
    y, ctx = conv.conv2d_forward(x, W, None)
    with pytest.raises(TypeError, match="ctx must be the ConvContext that conv2d_forward"):
        conv.conv2d_backward(np.ones_like(y), ctx.cols[0], W, x.shape)


def test_affine_holds_blas_alone_and_in_an_mlp_pass(threads, monkeypatch, blas3):
    """A book-style loop over a net's layers must not wake BLAS's threads in its affine
    layers, and neither must an MLP's pass: its GEMMs are split over xpnet's threads."""
    threads(2)
    ones = [1] * len(blas3)
    seen = []
    real_plan = parallel.plan

    def spy(n, *a, **k):
        seen.append(blas_counts())
        return real_plan(n, *a, **k)
    monkeypatch.setattr(parallel, "plan", spy)
    layer = layers.Affine(np.ones((6, 3)), np.zeros(3))
    layer.forward(np.ones((4, 6)))
    layer.backward(np.ones((4, 3)))
    assert seen == [ones, ones]
    net = MultiLayerNet(6, [5], 3, dtype="float64", seed=0)
    net.gradient(np.ones((4, 6)), np.array([0, 1, 2, 0]))
    assert seen[2:] and all(c == ones for c in seen[2:])
    assert blas_counts() == blas3


def test_set_num_threads_follows_the_environments_cap(monkeypatch):
    """One rule for both: more than 4 threads per usable core is capped there, with a
    warning (set_num_threads(2**64) was accepted)."""
    monkeypatch.setitem(parallel._state, "threads", 1)
    cap = 4 * parallel._usable_cores()
    with pytest.warns(UserWarning, match=r"set_num_threads\(18446744073709551616\) is more "
                      r"than 4 threads per CPU core .*; using %d" % cap):
        assert parallel.set_num_threads(2 ** 64) == 1
    assert parallel._state["threads"] == cap
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel.set_num_threads(cap)                  # up to the cap: silently
