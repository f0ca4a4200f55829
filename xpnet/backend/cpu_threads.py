"""CPU threads for xpnet's layers: one policy, a batch split over threads, BLAS held at one.

What it is for. On the CPU the heavy layers (convolution, pooling, affine) cut their
batch into one slice per thread and run the slices at once (`cpu_pool`); NumPy
releases the GIL in its copies, ufuncs and BLAS calls, so the threads really run in
parallel. While a net's pass runs, BLAS is held to one thread: two levels of threading
on the same cores fight, and BLAS's worker threads spin between the small GEMMs of a
pass (the book's chapter 5 MLP loop took 82-93 s with OpenBLAS threading on a loaded
2-core machine, 5.4 s held at one).

`policy()` is the one object that says how CPU work runs now: `ThreadPolicy(threads,
hold_blas)`. A net's pass enters ``policy().hold()``; kernels ask one question,
`blas_single_threaded()` (does a BLAS call now run on the calling thread alone?), and
split their GEMMs over xpnet's threads when it does, else leave the threading to BLAS.
Nothing else changes how a kernel behaves.

BLAS is found, and its thread count read and set, through threadpoolctl (what
scikit-learn uses; it knows OpenBLAS, MKL, BLIS, FlexiBLAS). Every BLAS library it
reports is held, NumPy's first; OpenMP runtimes are left alone.

The thread count comes from ``XPNET_NUM_THREADS``, else from NumPy's BLAS's own count
(``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` or the core count) capped by the cores,
and can be changed with `set_num_threads`. Both follow one rule: a count above 4
threads per usable core is capped there, with a warning. With one thread xpnet
leaves all threading to BLAS, as plain NumPy code does; with no BLAS whose count
threadpoolctl can set (then `info()` says why), everything runs serially.
Results do not depend on timing, only on the thread count: slices are fixed ranges
and their partial sums are added in a fixed order.

What it must never do: leave BLAS at a count other than the one it found (every hold
restores it, after errors and in a forked child too); scan the loaded libraries on
each hold (a hold is entered a few times per training step: they are looked for
once).
"""
import contextlib
import dataclasses
import os
import threading
import warnings

import numpy   # loads NumPy's BLAS before threadpoolctl looks for it

try:
    import threadpoolctl
except ImportError as e:    # a dependency, but an old install should still import xpnet
    threadpoolctl = None
    _NO_THREADPOOLCTL = "threadpoolctl is not installed (%s): pip install threadpoolctl" % e

__all__ = ["ThreadPolicy", "policy", "blas_single_threaded", "get_num_threads",
           "set_num_threads", "info", "plan", "run", "split"]

_lock = threading.Lock()
_local = threading.local()      # per calling thread: its part of a hold (per-thread BLAS)
_state = {"threads": None}
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


@dataclasses.dataclass(frozen=True)
class ThreadPolicy:
    """How CPU work runs: `threads` slices at once (1: serial), and, with `hold_blas`,
    BLAS at one thread while a pass runs. Immutable; `policy()` gives the current one."""

    threads: int
    hold_blas: bool

    def hold(self):
        """Context manager for a stretch of xpnet CPU work (a net's forward or backward):
        BLAS stays at one thread all through it, not just inside each threaded layer,
        because BLAS workers woken by one GEMM keep spinning on the cores for a while
        and slow what follows. Re-entrant, across threads too."""
        return _HOLD if self.hold_blas else contextlib.nullcontext()


def policy():
    """The current `ThreadPolicy`: xpnet's thread count, and BLAS held at one thread
    whenever xpnet threads (more than one thread)."""
    n = get_num_threads()
    return ThreadPolicy(n, n > 1)


def blas_single_threaded():
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

_THREADS_PER_CORE = 4       # the most threads xpnet uses per usable core
_env_capped = []            # a capped XPNET_NUM_THREADS was warned about (once per process)


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _capped(n, what, once=None):
    """`n` threads, capped at `_THREADS_PER_CORE` per usable core with a warning (the
    one rule for XPNET_NUM_THREADS and set_num_threads): a typo or a cluster's setting
    of thousands of threads helps nobody."""
    cap = _THREADS_PER_CORE * _usable_cores()
    if n <= cap:
        return n
    if once is None or not once:
        if once is not None:
            once.append(n)
        warnings.warn("%s is more than %d threads per CPU core this process may use "
                      "(%d cores); using %d" % (what, _THREADS_PER_CORE, _usable_cores(), cap),
                      UserWarning, stacklevel=4)
    return cap


def _default_threads():
    env = os.environ.get("XPNET_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError("XPNET_NUM_THREADS must be a positive integer, got %r" % env) from None
        if n < 1:
            raise ValueError("XPNET_NUM_THREADS must be a positive integer, got %r" % env)
        return _capped(n, "XPNET_NUM_THREADS=%d" % n, _env_capped)
    if not _find_blas():
        return 1
    return max(1, min(int(_blas_threads()), _usable_cores()))


def get_num_threads():
    """Threads the CPU layers split a batch over (1: serial)."""
    n = _state["threads"]
    if n is None:
        n = _state["threads"] = _default_threads()
    return n if _find_blas() else 1


def set_num_threads(n):
    """Set how many threads the CPU layers use (an int >= 1; 1 leaves all threading
    to BLAS, as plain NumPy code does; more than 4 per usable core is capped there, with
    a warning, as for XPNET_NUM_THREADS); returns the previous count."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("set_num_threads: expected an int >= 1, got %r" % (n,))
    prev = get_num_threads()
    _state["threads"] = _capped(n, "set_num_threads(%d)" % n)
    return prev


def info():
    """What the CPU threading uses, for `xpnet info` and bug reports."""
    ok = _find_blas()
    return {"threads": get_num_threads(),
            "blas": _describe(_blas["libs"][0]) if ok else None,
            "blas_also_held": [_describe(lib) for lib in _blas["libs"][1:]],
            "blas_threads": int(_blas_threads()) if ok else None,
            "disabled_because": "" if ok else _blas["reason"]}


def _after_fork_in_child():
    # Only the forking thread lives on: the other threads' holds are gone, and a lock
    # another thread held would stay locked. The child starts with BLAS's counts as
    # the holds found them, unheld.
    global _lock
    _lock = threading.Lock()
    if _blas_hold["count"]:
        _restore(_blas_hold["saved"] or ())
    if getattr(_local, "depth", 0):
        _restore(getattr(_local, "saved", None) or ())
    _blas_hold.update(count=0, saved=None)
    _local.depth, _local.saved = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

from .cpu_pool import plan, run, split  # noqa: E402  (the pool uses the hold above)
