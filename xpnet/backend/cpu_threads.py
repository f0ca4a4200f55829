"""CPU threads for xpnet's layers: a batch split over threads, BLAS held at one.

What it is for. On the CPU the heavy layers (convolution, pooling, affine) cut their
batch into one slice per thread and run the slices at once; NumPy releases the GIL in
its copies, ufuncs and BLAS calls, so the threads really run in parallel. While they
do, BLAS is held to one thread: two levels of threading on the same cores would
fight, and BLAS alone leaves the im2col copies, pooling and transposes (half the time
of a convolution) on one core.

BLAS is found, and its thread count read and set, through threadpoolctl (what
scikit-learn uses; it knows OpenBLAS, MKL, BLIS, FlexiBLAS). Every BLAS library it
reports is held, NumPy's first; OpenMP runtimes are left alone.

The thread count comes from ``XPNET_NUM_THREADS``, else from NumPy's BLAS's own count
(``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` or the core count) capped by the cores,
and can be changed with `set_num_threads`. ``XPNET_NUM_THREADS`` above 4 threads per
usable core is capped there, with one warning. With one thread, or no BLAS whose count
threadpoolctl can set (then `info()` says why), everything runs serially, as before.
Results do not depend on timing, only on the thread count: slices are fixed ranges
and their partial sums are added in a fixed order.

What it must never do: leave BLAS at a count other than the one it found (every hold
restores it, after errors and in a forked child too); scan the loaded libraries on
each hold (a hold is entered a few times per training step: they are looked for
once); let a slice's error or Ctrl-C out before every slice has stopped writing.
"""
import contextlib
import os
import threading
import warnings

import numpy   # loads NumPy's BLAS before threadpoolctl looks for it

try:
    import threadpoolctl
except ImportError as e:    # a dependency, but an old install should still import xpnet
    threadpoolctl = None
    _NO_THREADPOOLCTL = "threadpoolctl is not installed (%s): pip install threadpoolctl" % e

__all__ = ["get_num_threads", "set_num_threads", "info", "plan", "run", "split",
           "blas_single_threaded", "blas_held",
           "blas_is_single_threaded", "blas_threads_preferred", "blas_threads_preferred_here"]

_lock = threading.Lock()
_local = threading.local()
_state = {"threads": None, "idle": [], "made": 0, "min_work": None}
# libs: threadpoolctl's controllers of the BLAS libraries, NumPy's first. "shared"
# ones have one count for the process, "per_thread" ones (MKL, OpenMP-threaded
# OpenBLAS) one per calling thread.
_blas = {"tried": False, "libs": [], "shared": [], "per_thread": [], "reason": ""}
_blas_hold = {"count": 0, "saved": None}


# ---------------------------------------------------------------- BLAS threads

def _numpys_own(lib):
    """True for the BLAS shipped inside NumPy's wheel (numpy.libs, numpy/.dylibs)."""
    d = os.path.realpath(os.path.dirname(numpy.__file__))
    return os.path.realpath(lib.filepath or "").startswith((d + os.sep, d + ".libs" + os.sep))


def _scope(lib):
    """threadpoolctl's thread_limit_scope: "current_thread" when the library's limit
    applies to the calling thread only."""
    try:    # threadpoolctl >= 3.8 measures it (once, here: it spawns a thread)
        return lib.info(debugging_info=True).get("thread_limit_scope", "process")
    except Exception:       # older ones can't tell: a process-wide count is the usual
        return "process"


def _describe(lib):
    return "%s%s (%s)" % (lib.internal_api, " " + lib.version if lib.version else "",
                          os.path.basename(lib.filepath or "?"))


def _discover():
    """The new contents of `_blas`."""
    none = {"libs": [], "shared": [], "per_thread": []}
    if threadpoolctl is None:
        return dict(none, reason=_NO_THREADPOOLCTL)
    found = threadpoolctl.ThreadpoolController().lib_controllers
    blas = [lib for lib in found if lib.user_api == "blas"]
    libs = [lib for lib in blas if lib.num_threads is not None]
    if not libs:
        if blas:
            why = "threadpoolctl can't read the thread count of " + ", ".join(map(_describe, blas))
        else:
            why = ("threadpoolctl %s found no BLAS library it can control among the loaded "
                   "libraries (NumPy %s's may be one it doesn't know, e.g. Apple Accelerate%s)"
                   % (threadpoolctl.__version__, numpy.__version__,
                      "; it found " + ", ".join(map(_describe, found)) if found else ""))
        return dict(none, reason=why)
    libs.sort(key=lambda lib: not _numpys_own(lib))     # stable: then in load order
    local = [lib for lib in libs if _scope(lib) == "current_thread"]
    return {"libs": libs, "per_thread": local,
            "shared": [lib for lib in libs if lib not in local], "reason": ""}


def _find_blas():
    """True if threadpoolctl found a BLAS whose count it can set. Looked for once: a
    library loaded later (another framework's) is not held."""
    if not _blas["tried"]:
        with _lock:
            if not _blas["tried"]:
                _blas.update(_discover())
                _blas["tried"] = True
    return bool(_blas["libs"])


# threadpoolctl >= 3.8 lets one thread at a time set a process-wide OpenBLAS count
# (the first to set it, until it gives control back); a hold may be left by another
# thread than the one that entered it, so each change gives control back at once.
_release = getattr(getattr(threadpoolctl, "OpenBLASController", None),
                   "clear_controlling_thread", None) or (lambda: None)


def _lower(libs):
    """Sets `libs` to one thread; returns ``[(lib, count it had)]`` for those changed."""
    saved = [(lib, n) for lib, n in ((lib, lib.get_num_threads()) for lib in libs)
             if n is not None and n > 1]
    for lib, _ in saved:
        lib.set_num_threads(1)
    if saved:
        _release()
    return saved


def _restore(saved):
    for lib, n in saved:
        lib.set_num_threads(n)
    if saved:
        _release()


class _SingleThreadedBlas:
    """Holds BLAS at one thread while xpnet computes. Re-entrant, across threads too:
    a process-wide count is lowered by the first thread in and restored, to what it
    was, by the last one out; a per-thread count by each thread for itself."""

    def __enter__(self):
        _find_blas()
        depth = getattr(_local, "depth", 0)
        if depth == 0 and _blas["per_thread"]:
            _local.saved = _lower(_blas["per_thread"])
        _local.depth = depth + 1
        with _lock:
            if _blas_hold["count"] == 0:
                _blas_hold["saved"] = _lower(_blas["shared"])
            _blas_hold["count"] += 1

    def __exit__(self, *exc):
        if not getattr(_local, "depth", 0):
            return False    # entered before a fork, in the parent: the child dropped it
        with _lock:
            _blas_hold["count"] -= 1
            if _blas_hold["count"] == 0:
                _restore(_blas_hold["saved"] or ())
                _blas_hold["saved"] = None
        _local.depth -= 1
        if _local.depth == 0 and _blas["per_thread"]:
            _restore(getattr(_local, "saved", None) or ())
            _local.saved = None
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
    if not _find_blas():
        return False
    # a per-thread count is lowered only in the holding threads and in the workers
    if _blas_hold["count"] and (getattr(_local, "depth", 0) or not _blas["per_thread"]):
        return True
    return all(lib.get_num_threads() == 1 for lib in _blas["libs"])


def _blas_threads():
    """NumPy's BLAS's count as it is outside xpnet's holds."""
    own = _blas["libs"][0]
    for saved in (_blas_hold["saved"], getattr(_local, "saved", None)):
        for lib, n in saved or ():
            if lib is own:
                return n
    return own.get_num_threads()


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
        cap = _ENV_THREADS_PER_CORE * _usable_cores()
        if n > cap:     # a typo or a cluster's setting: thousands of threads help nobody
            if not _env_capped:
                _env_capped.append(n)
                warnings.warn("XPNET_NUM_THREADS=%d is more than %d threads per CPU core this "
                              "process may use (%d cores); using %d"
                              % (n, _ENV_THREADS_PER_CORE, _usable_cores(), cap),
                              UserWarning, stacklevel=3)
            n = cap
        return n
    if not _find_blas():
        return 1
    return max(1, min(int(_blas_threads()), _usable_cores()))


_ENV_THREADS_PER_CORE = 4   # XPNET_NUM_THREADS is capped at this many per usable core
_env_capped = []            # a capped value was warned about (once per process)


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
    return {"threads": get_num_threads(),
            "blas": _describe(_blas["libs"][0]) if ok else None,
            "blas_also_held": [_describe(lib) for lib in _blas["libs"][1:]],
            "blas_threads": int(_blas_threads()) if ok else None,
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
        # A worker runs only slices, all inside a hold: a per-thread count it sets
        # stays for good and ends with the thread.
        _lower(_blas["per_thread"])
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
    # Only the forking thread lives on: the workers and the other threads' holds are
    # gone, and a lock another thread held would stay locked. The child starts with
    # BLAS's counts as the holds found them, unheld.
    global _lock
    _lock = threading.Lock()
    _state["idle"] = []
    _state["made"] = 0
    if _blas_hold["count"]:
        _restore(_blas_hold["saved"] or ())
    if getattr(_local, "depth", 0):
        _restore(getattr(_local, "saved", None) or ())
    _blas_hold.update(count=0, saved=None)
    _local.depth, _local.saved = 0, None


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
