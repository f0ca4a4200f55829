"""The pool of CPU threads that runs a layer's batch slices at once.

`plan` cuts ``range(n)`` into one slice per thread (fewer when there is little work),
`run` runs the slices on the pool's threads and the caller's, BLAS held at one thread
meanwhile. It must never let a slice's error or Ctrl-C out before every slice has
stopped writing, and never start threads inside a worker (nested calls run serially).
"""
import os
import threading

from . import cpu_threads as ct

__all__ = ["split", "plan", "run"]

_lock = threading.Lock()
_pool = {"idle": [], "made": 0, "min_work": None}     # min_work: tests split tiny arrays


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
        ct._local.worker = True
        # A worker runs only slices, all inside a hold: a per-thread count it sets
        # stays for good and ends with the thread.
        ct._lower(ct._blas["per_thread"])
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
        idle = _pool["idle"]
        while len(idle) < k and _pool["made"] < _MAX_WORKERS:
            _pool["made"] += 1
            idle.append(_Worker(_pool["made"]))
        got, _pool["idle"] = idle[:k], idle[k:]
    return got


def _give_back(workers):
    with _lock:
        _pool["idle"].extend(workers)




_MAX_WORKERS = 255


def _after_fork_in_child():
    # The workers are gone in the child, and a lock another thread held stays locked.
    global _lock
    _lock = threading.Lock()
    _pool["idle"] = []
    _pool["made"] = 0


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
    parts = min(ct.get_num_threads(), n)
    if _pool["min_work"] is not None:       # tests: split even tiny arrays
        min_work = _pool["min_work"]
    if work is not None:
        parts = min(parts, max(1, int(work) // max(1, int(min_work))))
    if parts <= 1 or getattr(ct._local, "worker", False):
        return [(0, n)]
    return split(n, parts)


def run(ranges, fn):
    """``[fn(i, start, stop) for i, (start, stop) in enumerate(ranges)]``, the slices
    at once on the pool's threads and the caller's, BLAS held to one thread
    meanwhile. A single slice runs in the caller with BLAS untouched. Every slice
    finishes before the first error, if any, is raised."""
    if len(ranges) <= 1 or getattr(ct._local, "worker", False):
        return [fn(i, a, b) for i, (a, b) in enumerate(ranges)]
    with ct._HOLD:
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

