"""Batch-parallel CPU work: the images of a batch split over threads.

On the CPU the heavy layers (convolution, pooling, affine) cut their batch into
one slice per thread and run the slices at once; NumPy releases the GIL in its
copies, ufuncs and BLAS calls, so the threads really run in parallel. While they
do, BLAS is held to one thread: two levels of threading on the same cores would
fight, and BLAS alone leaves the im2col copies, pooling and transposes (half the
time of a convolution) on one core.

The thread count comes from ``XPNET_NUM_THREADS``, else from the BLAS library's
own count (``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` or the core count), and
can be changed with `set_num_threads`. With one thread, or a BLAS whose thread
count can't be set (then `info()` says why), everything runs serially, as before.
Results do not depend on timing, only on the thread count: slices are fixed
ranges and their partial sums are added in a fixed order.
"""
import contextlib
import ctypes
import os
import threading

import numpy   # NumPy loads the BLAS it was built with

__all__ = ["get_num_threads", "set_num_threads", "info", "plan", "run", "split",
           "blas_single_threaded", "blas_held",
           "blas_is_single_threaded", "blas_threads_preferred", "blas_threads_preferred_here"]

_lock = threading.Lock()
_local = threading.local()
_state = {"threads": None, "idle": [], "made": 0, "min_work": None}
_blas = {"tried": False, "get": None, "set": None, "name": None, "libs": [], "reason": ""}
_blas_hold = {"count": 0, "saved": None}


# ---------------------------------------------------------------- BLAS threads

_GET_NAMES = ("openblas_get_num_threads", "openblas_get_num_threads64_",
              "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
              "MKL_Get_Max_Threads")
_SET_NAMES = ("openblas_set_num_threads", "openblas_set_num_threads64_",
              "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
              "MKL_Set_Num_Threads")


def _loaded_blas_paths():
    """Shared libraries in this process that look like NumPy's BLAS (Linux: from
    /proc/self/maps, so whatever NumPy actually loaded)."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.rsplit(None, 1)[-1] if "/" in line else ""
                base = os.path.basename(p).lower()
                if ("openblas" in base or base.startswith("libmkl_rt")) and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    if not paths:
        import glob
        d = os.path.dirname(numpy.__file__)
        for pat in ("../numpy.libs/*openblas*", ".dylibs/*openblas*", "../numpy/.libs/*openblas*"):
            paths.extend(sorted(glob.glob(os.path.join(d, pat))))
    return paths


def _numpy_first(paths):
    """NumPy's own copy first (a wheel keeps it in numpy.libs or numpy/.dylibs), then
    other BLAS libraries loaded in the process (SciPy's, a system one)."""
    d = os.path.realpath(os.path.dirname(numpy.__file__))
    own = (d + os.sep, d + ".libs" + os.sep)
    return sorted(paths, key=lambda p: not os.path.realpath(p).startswith(own))


def _find_blas():
    if _blas["tried"]:
        return _blas["set"] is not None
    with _lock:
        if _blas["tried"]:
            return _blas["set"] is not None
        reason = "no OpenBLAS or MKL library found among NumPy's loaded libraries"
        libs = []
        for path in _numpy_first(_loaded_blas_paths()):
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                reason = "could not open %s: %s" % (path, e)
                continue
            get = next((getattr(lib, n) for n in _GET_NAMES if hasattr(lib, n)), None)
            set_ = next((getattr(lib, n) for n in _SET_NAMES if hasattr(lib, n)), None)
            if get is None or set_ is None:
                reason = "%s has no get/set_num_threads" % os.path.basename(path)
                continue
            get.restype, get.argtypes = ctypes.c_int, []
            set_.restype, set_.argtypes = None, [ctypes.c_int]
            libs.append((os.path.basename(path), get, set_))
        if libs:
            # The first is NumPy's; the others are held too, in case the guess is wrong.
            _blas.update(get=libs[0][1], set=libs[0][2], name=libs[0][0], libs=libs)
        _blas["reason"] = "" if libs else reason
        _blas["tried"] = True
    return _blas["set"] is not None


class _SingleThreadedBlas:
    """Holds BLAS at one thread while xpnet computes (re-entrant, across threads
    too: the last one to leave restores the counts it found)."""

    def __enter__(self):
        with _lock:
            if _blas_hold["count"] == 0:
                _blas_hold["saved"] = [(set_, get()) for _, get, set_ in _blas["libs"]]
                for set_, n in _blas_hold["saved"]:
                    if n != 1:
                        set_(1)
            _blas_hold["count"] += 1

    def __exit__(self, *exc):
        with _lock:
            _blas_hold["count"] -= 1
            if _blas_hold["count"] == 0:
                for set_, n in _blas_hold["saved"] or ():
                    if n != 1:
                        set_(n)
                _blas_hold["saved"] = None
        return False


_HOLD = _SingleThreadedBlas()


def blas_single_threaded(active=True):
    """Context manager for a stretch of xpnet CPU work (a convnet's forward or
    backward): with xpnet's threads on, BLAS stays at one thread all through it,
    not just inside each parallel layer, because BLAS worker threads woken by one
    GEMM keep spinning on the cores for a while and slow the next layer's threads.
    Inside, GEMM layers split their batch over xpnet's threads instead."""
    if active and get_num_threads() > 1:
        return _HOLD
    return contextlib.nullcontext()


@contextlib.contextmanager
def blas_threads_preferred():
    """Context manager for a stretch of GEMM-only work (an MLP's pass): xpnet's GEMM
    layers call BLAS once and let it thread, instead of splitting the batch over
    xpnet's threads with BLAS held at one (what they do elsewhere, e.g. in a loop over
    a convnet's layers). Per calling thread."""
    prev = getattr(_local, "blas_preferred", False)
    _local.blas_preferred = True
    try:
        yield
    finally:
        _local.blas_preferred = prev


def blas_threads_preferred_here():
    """True inside `blas_threads_preferred` (in this thread) and no hold is active."""
    return getattr(_local, "blas_preferred", False) and _blas_hold["count"] == 0


def blas_held():
    """True while some thread holds BLAS at one thread (see `blas_single_threaded`)."""
    return _blas_hold["count"] > 0


def blas_is_single_threaded():
    """True when a BLAS call now runs on the calling thread alone (held, or BLAS set to
    one thread); False when BLAS may thread it, or its count is unknown."""
    return _blas_hold["count"] > 0 or (_find_blas() and _blas["get"]() == 1)


# ---------------------------------------------------------------- thread count

def _default_threads():
    env = os.environ.get("XPNET_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError("XPNET_NUM_THREADS must be a positive integer, got %r" % env) from None
        if n < 1:
            raise ValueError("XPNET_NUM_THREADS must be a positive integer, got %r" % env)
        return n
    if not _find_blas():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(int(_blas["get"]()), cores))


def get_num_threads():
    """Threads the CPU layers split a batch over (1: serial)."""
    n = _state["threads"]
    if n is None:
        n = _state["threads"] = _default_threads()
    return n if _find_blas() else 1


def set_num_threads(n):
    """Set how many threads the CPU layers use (an int >= 1; 1 leaves all threading
    to BLAS, as plain NumPy code does); returns the previous count."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("set_num_threads: expected an int >= 1, got %r" % (n,))
    prev = get_num_threads()
    _state["threads"] = n
    return prev


def info():
    """What the CPU threading uses, for `xpnet info` and bug reports."""
    ok = _find_blas()
    return {"threads": get_num_threads(), "blas": _blas["name"],
            "blas_also_held": [name for name, _, _ in _blas["libs"][1:]],
            "blas_threads": int(_blas["get"]()) if ok else None,
            "disabled_because": "" if ok else _blas["reason"]}


class _Worker:
    """One pool thread with a two-lock mailbox: the cheapest hand-off Python has
    (a ThreadPoolExecutor's queue and futures cost about twice the wake-up)."""

    def __init__(self, n):
        self.go = threading.Lock()
        self.done = threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.task = self.result = self.error = None
        self.released = False     # True from start() until wait() has collected the slice
        self.thread = threading.Thread(target=self._loop, name="xpnet-cpu-%d" % n, daemon=True)
        self.thread.start()

    def _loop(self):
        _local.worker = True
        while True:
            self.go.acquire()
            fn, args = self.task
            try:
                self.result, self.error = fn(*args), None
            except BaseException as e:
                self.result, self.error = None, e
            self.task = None
            self.done.release()

    def start(self, fn, *args):
        self.task = (fn, args)
        self.go.release()
        self.released = True

    def wait(self):
        """The slice's result (or its exception, returned as ``(None, exc)``); waits
        for the slice to finish even through Ctrl-C, so no thread writes into the
        layer's buffers after the interrupt is raised."""
        interrupted = None
        while True:
            try:
                self.done.acquire()
                break
            except KeyboardInterrupt as e:
                interrupted = e
        result, error = self.result, self.error
        self.result = self.error = None
        self.released = False
        return result, interrupted or error


def _take_workers(k):
    """Up to `k` idle workers, started as needed (fewer if other threads hold them)."""
    with _lock:
        idle = _state["idle"]
        while len(idle) < k and _state["made"] < _MAX_WORKERS:
            _state["made"] += 1
            idle.append(_Worker(_state["made"]))
        got, _state["idle"] = idle[:k], idle[k:]
    return got


def _give_back(workers):
    with _lock:
        _state["idle"].extend(workers)


_MAX_WORKERS = 255


def _after_fork_in_child():
    # The child has the workers' objects but not their threads, and only the forking thread.
    _state["idle"] = []
    _state["made"] = 0
    if _blas_hold["count"]:
        for set_, n in _blas_hold["saved"] or ():
            if n != 1:
                set_(n)
    _blas_hold["count"] = 0
    _blas_hold["saved"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- running

def split(n, parts):
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes
    differing by at most one."""
    q, r = divmod(n, parts)
    out, a = [], 0
    for i in range(parts):
        b = a + q + (i < r)
        out.append((a, b))
        a = b
    return out


def plan(n, work=None, min_work=1 << 16, xp=None):
    """Slices of ``range(n)`` to run at once: one per thread, fewer when `work`
    (e.g. FLOPs) would give a slice less than `min_work` (a thread hand-off costs
    tens of microseconds), one when threading is off, we already run in a worker,
    or `xp` is not NumPy (a GPU needs no CPU threads)."""
    if xp is not None and xp.__name__ != "numpy":
        return [(0, n)]
    parts = min(get_num_threads(), n)
    if _state["min_work"] is not None:      # tests: split even tiny arrays
        min_work = _state["min_work"]
    if work is not None:
        parts = min(parts, max(1, int(work) // max(1, int(min_work))))
    if parts <= 1 or getattr(_local, "worker", False):
        return [(0, n)]
    return split(n, parts)


def run(ranges, fn):
    """``[fn(i, start, stop) for i, (start, stop) in enumerate(ranges)]``, the slices
    at once on the pool's threads and the caller's, BLAS held to one thread
    meanwhile. A single slice runs in the caller with BLAS untouched. Every slice
    finishes before the first error, if any, is raised."""
    if len(ranges) <= 1 or getattr(_local, "worker", False):
        return [fn(i, a, b) for i, (a, b) in enumerate(ranges)]
    with _HOLD:
        workers = _take_workers(len(ranges) - 1)
        started, done, err = [], [], None
        try:
            for w, (i, (a, b)) in zip(workers, enumerate(ranges[1:], 1)):
                started.append(w)
                w.start(fn, i, a, b)
            results = [fn(0, *ranges[0])]
            # slices with no free worker (other threads hold them) run here too
            for i in range(len(workers) + 1, len(ranges)):
                results.append(fn(i, *ranges[i]))
        except BaseException as e:
            err = e
        finally:
            back = [w for w in workers if w not in started]
            for w in started:
                if w.released:
                    r, e = w.wait()
                    done.append(r)
                    err = err or e
                    back.append(w)
                # else Ctrl-C came inside start(): that worker is left out of the pool
            _give_back(back)
        if err is not None:
            raise err
        results[1:1] = done
    return results
