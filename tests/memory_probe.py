"""Memory measured for one call, for the tests' "a file of S bytes makes us allocate at
most M" checks.

`ru_maxrss` only ever grows, so in a test process that is already large a check on it
passes whatever happens. tracemalloc counts what Python and NumPy allocate (NumPy
reports its array buffers to it), from zero, for this call alone.
"""
import tracemalloc

MIB = 1 << 20


def peak_alloc_mib(fn, *args, **kwargs):
    """``(peak MiB allocated while fn(*args, **kwargs) ran, its result or the exception
    it raised)``."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        out = fn(*args, **kwargs)
    except Exception as e:        # the caller checks what was raised
        out = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        if not was_tracing:
            tracemalloc.stop()
    return (peak - base) / MIB, out
