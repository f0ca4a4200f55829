"""``cupy.cuda`` of the stand-in: devices, streams, events, a memory pool, the runtime.

There is no device: work runs at once on the host, so streams and events only
keep CuPy's interface (synchronize, record, elapsed_time). The device count is
`DEVICE_COUNT` (2, so ``gpu:1`` can be placed); the current device is per thread.
"""
import threading
import time

DEVICE_COUNT = 2

_local = threading.local()


def _stack():
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = [0]
    return s


class CUDARuntimeError(RuntimeError):
    pass


class Device:
    """``cupy.cuda.Device(id)``; a context manager that makes it current."""

    def __init__(self, device=None):
        if device is None:
            device = _stack()[-1]
        if isinstance(device, Device):
            device = device.id
        device = int(device)
        if not 0 <= device < DEVICE_COUNT:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal (%d of the "
                                   "stand-in's %d)" % (device, DEVICE_COUNT))
        self.id = device

    def __enter__(self):
        _stack().append(self.id)
        return self

    def __exit__(self, *exc):
        _stack().pop()

    def use(self):
        _stack()[0] = self.id

    def synchronize(self):
        pass

    @property
    def compute_capability(self):
        return "90"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("cupy_standin.Device", self.id))

    def __int__(self):
        return self.id

    def __repr__(self):
        return "<CUDA Device %d (CuPy stand-in)>" % self.id


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.ptr = 0 if null else id(self)

    def synchronize(self):
        pass

    def use(self):
        _local.stream = self
        return self

    def __enter__(self):
        self._prev = get_current_stream()
        _local.stream = self
        return self

    def __exit__(self, *exc):
        _local.stream = self._prev

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event


Stream.null = Stream(null=True)


def get_current_stream(device_id=None):
    return getattr(_local, "stream", Stream.null)


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


def get_elapsed_time(start, end):
    """Milliseconds between two recorded events."""
    return (end.t - start.t) * 1e3


class MemoryPool:
    """Bytes of live stand-in arrays (`used_bytes`) and the most ever held since the
    last `free_all_blocks` (`total_bytes`, as CuPy's pool keeps freed blocks)."""

    def __init__(self):
        self._used = self._total = 0
        self._lock = threading.Lock()

    def _alloc(self, n):
        with self._lock:
            self._used += n
            self._total = max(self._total, self._used)

    def _free(self, n):
        with self._lock:
            self._used -= n

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._total

    def free_bytes(self):
        return self._total - self._used

    def free_all_blocks(self, stream=None):
        with self._lock:
            self._total = self._used

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


pool = MemoryPool()


class _Runtime:
    CUDARuntimeError = CUDARuntimeError

    @staticmethod
    def getDeviceCount():
        return DEVICE_COUNT

    @staticmethod
    def runtimeGetVersion():
        return 12000

    @staticmethod
    def driverGetVersion():
        return 12000

    @staticmethod
    def getDevice():
        return _stack()[-1]

    @staticmethod
    def setDevice(i):
        Device(i).use()

    @staticmethod
    def getDeviceProperties(i):
        Device(i)
        return {"name": b"CuPy stand-in (host CPU)", "totalGlobalMem": 8 << 30,
                "multiProcessorCount": 1, "major": 9, "minor": 0}

    @staticmethod
    def memGetInfo():
        return (8 << 30, 8 << 30)

    @staticmethod
    def deviceSynchronize():
        pass


runtime = _Runtime()


def is_available():
    return True
