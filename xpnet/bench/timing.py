"""How the bench measures: timing statistics, the interleaved (ABBA) timing loop,
and memory readings (process peak RSS, NumPy's traced peak).

Everything here works on plain callables (a `Case` per framework): it must
never import a network, an array library or PyTorch.
"""
import math
import sys
import time
import tracemalloc

try:
    import resource   # POSIX only
except ImportError:
    resource = None

__all__ = ["Case", "measure", "summary", "quantile", "HostMemory", "traced_peak",
           "AUTO_TARGET_S", "AUTO_MIN", "AUTO_MAX"]

# Auto repeats: about this much measured time per framework and row, within bounds.
AUTO_TARGET_S, AUTO_MIN, AUTO_MAX = 1.5, 5, 200


# ---------------------------------------------------------------------------
# Statistics

def quantile(sorted_vals, q):
    """Linear-interpolation quantile of an already sorted list."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summary(times_s, batch):
    """Median, min, quartiles and IQR in ms, and images per second at the median."""
    a = sorted(times_s)
    med = quantile(a, 0.5)
    q1, q3 = quantile(a, 0.25), quantile(a, 0.75)
    return {
        "ms": med * 1e3, "ms_min": a[0] * 1e3, "ms_q1": q1 * 1e3, "ms_q3": q3 * 1e3,
        "ms_iqr": (q3 - q1) * 1e3, "n": len(a),
        "images_per_s": batch / med if med > 0 else float("inf"),
    }


# ---------------------------------------------------------------------------
# Memory

def _proc_status_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class HostMemory:
    """Peak resident memory of this process over a stretch of code.

    On Linux the peak (VmHWM) is reset by writing 5 to /proc/self/clear_refs, so
    each measured block gets its own peak. Elsewhere the lifetime peak
    (``ru_maxrss``) is all there is."""

    def __init__(self):
        self.method = "VmHWM (reset per block)" if self._reset() else "ru_maxrss (process lifetime)"

    @staticmethod
    def _reset():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return _proc_status_kb("VmHWM") is not None

    def start(self):
        """Reset the peak (where possible); returns the resident bytes now."""
        if self.method.startswith("VmHWM"):
            self._reset()
        return self.current_bytes()

    @staticmethod
    def current_bytes():
        kb = _proc_status_kb("VmRSS")
        return None if kb is None else kb * 1024

    def peak_bytes(self):
        if self.method.startswith("VmHWM"):
            kb = _proc_status_kb("VmHWM")
            if kb is not None:
                return kb * 1024
        if resource is None:
            return None
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024   # bytes on macOS, KiB on Linux


def traced_peak(work):
    """Peak bytes NumPy held while `work()` ran, above what was held before
    (tracemalloc sees NumPy's data buffers). Untimed: tracing slows Python."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - base)


# ---------------------------------------------------------------------------
# The timing loop

def _no_memory():
    return {"peak_bytes": None, "peak_kind": None}


class Case:
    """One framework's side of a row: a `step` to time and how to read its memory."""

    def __init__(self, framework, step, sync, mem_reset=None, mem_read=None):
        self.framework = framework
        self.step = step
        self.sync = sync
        self.mem_reset = mem_reset or (lambda: None)
        self.mem_read = mem_read or _no_memory
        self.times = []
        self.host_peak = None    # highest process peak RSS over its timed blocks


def measure(cases, warmup, repeats, host_mem):
    """Warm up every case, then time `repeats` steps of each in interleaved blocks
    (ABBA order, so machine noise hits every framework alike). ``repeats=None``
    picks AUTO_MIN..AUTO_MAX from the slowest warm-up step. Returns the repeats."""
    for c in cases:
        c.mem_reset()
    probe = {}
    for c in cases:
        for _ in range(warmup):
            c.sync()
            t0 = time.perf_counter()
            c.step()
            c.sync()
            probe[c.framework] = time.perf_counter() - t0
    if repeats is None:
        if probe:
            est = max(probe.values())
            repeats = int(min(AUTO_MAX, max(AUTO_MIN, AUTO_TARGET_S // max(est, 1e-9))))
        else:
            repeats = 10
    block = max(1, min(5, -(-repeats // 4)))
    done, b = 0, 0
    while done < repeats:
        n = min(block, repeats - done)
        order = cases if b % 2 == 0 else cases[::-1]
        for c in order:
            for other in cases:
                other.sync()
            host_mem.start()
            for _ in range(n):
                t0 = time.perf_counter()
                c.step()
                c.sync()
                c.times.append(time.perf_counter() - t0)
            peak = host_mem.peak_bytes()
            if peak is not None:
                c.host_peak = peak if c.host_peak is None else max(c.host_peak, peak)
        done += n
        b += 1
    return repeats
