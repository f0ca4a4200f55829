"""MPI set-up for `xpnet.distributed`: the launcher's environment, `init` (once per
process) and the `Communicator`, whose every collective runs under a watchdog deadline
(``XPNET_DIST_TIMEOUT``, default 300 s) that aborts the whole job when a peer has died
or hangs. mpi4py is imported here only, by `init`."""
import contextlib
import math
import os
import sys
import threading
import time
import warnings

import numpy

from .. import backend

INSTALL_HINT = 'pip install -e ".[mpi]" (mpi4py and the MPICH wheel) from the xpnet checkout'
DEFAULT_TIMEOUT = 300.0     # seconds a rank waits in one collective before aborting the job
EXIT_TIMEOUT = 124          # as timeout(1): a collective ran past its deadline

# Set by the launchers in every process they start (MPICH/Intel MPI's hydra and Slurm's
# PMI-2: PMI_SIZE; Open MPI: OMPI_COMM_WORLD_SIZE; MVAPICH: MV2_COMM_WORLD_SIZE).
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_PMIX_VARS = ("PMIX_RANK",)      # PMIx (Open MPI 5, srun --mpi=pmix) names no size

_NCCL_TYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32",
               "float64": "NCCL_FLOAT64"}

_world = None


class DistributedError(RuntimeError):
    """Distributed training can't start or go on (MPI missing, a bad setup, a dead rank)."""


class DistributedWarning(UserWarning):
    """Something works, but not the fast way (NCCL unusable: MPI with host staging)."""


# ---------------------------------------------------------------------- the world

def launched_size(environ=None):
    """The number of processes the MPI launcher started, from its environment
    variables: an int, 0 when a launcher is seen but names no size (PMIx), None when
    this process was not started by an MPI launcher. Nothing is imported."""
    env = os.environ if environ is None else environ
    for var in _SIZE_VARS:
        v = env.get(var, "").strip()
        if v:
            try:
                return max(int(v), 0)
            except ValueError:
                return 0
    if any(env.get(var) for var in _PMIX_VARS):
        return 0
    return None


def _load_mpi():
    try:   # by name, here only: importing mpi4py starts MPI (see the module's rule)
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError("distributed training needs mpi4py and an MPI library, and "
                               "mpi4py can't be imported (%s); install them with: %s"
                               % (e, INSTALL_HINT)) from None
    except Exception as e:   # mpi4py present but its MPI library missing or broken
        raise DistributedError("mpi4py could not start MPI (%s: %s); install a working MPI "
                               "with: %s" % (type(e).__name__, e, INSTALL_HINT)) from None
    return MPI


def _timeout_from_env():
    text = os.environ.get("XPNET_DIST_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not (v > 0 and math.isfinite(v)):
        raise DistributedError("XPNET_DIST_TIMEOUT must be a number of seconds > 0, got %r"
                               % text)
    return v


def init(timeout=None, abort_on_error=True):
    """Start MPI (once per process) and return the `Communicator` of ``MPI.COMM_WORLD``.

    `timeout`: seconds one collective may wait for the other ranks before the job is
    aborted (default ``XPNET_DIST_TIMEOUT``, else 300). With `abort_on_error`, an
    uncaught exception on any rank prints its traceback, then aborts every rank
    (``MPI_Abort``) instead of leaving the others waiting. Raises `DistributedError`
    naming the extra to install when mpi4py is missing."""
    global _world
    if _world is not None:
        return _world
    seconds = _timeout_from_env() if timeout is None else float(timeout)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise DistributedError("init: timeout must be a number of seconds > 0, got %r"
                               % (timeout,))
    MPI = _load_mpi()
    _world = Communicator(MPI.COMM_WORLD, MPI, seconds)
    if abort_on_error and _world.size > 1:
        _install_abort_hook(_world)
    return _world


def world():
    """The `Communicator` that `init` made, or None before it."""
    return _world


def _install_abort_hook(comm):
    """An uncaught exception on one rank ends the whole job, its traceback first."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        try:
            sys.stderr.write("xpnet distributed: rank %d of %d raised %s; aborting the job\n"
                             % (comm.rank, comm.size, kind.__name__))
            previous(kind, value, tb)
        finally:
            comm.abort(130 if issubclass(kind, KeyboardInterrupt) else 1)

    sys.excepthook = hook


class _Deadline:
    """A watchdog thread: a collective still waiting `limit` seconds after it began
    aborts the job (a peer died or hangs). One tuple is swapped per collective, so
    the thread never sees half of an update."""

    def __init__(self, comm, seconds):
        self.comm, self.seconds = comm, seconds
        self._current = None        # (what, started, limit) while a collective runs
        self._thread = None

    def begin(self, what, seconds=None):
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="xpnet-deadline",
                                            daemon=True)
            self._thread.start()
        self._current = (what, time.monotonic(), seconds or self.seconds)

    def end(self):
        self._current = None

    @contextlib.contextmanager
    def watch(self, what, seconds=None):
        """``with deadline.watch("an all-reduce"): ...``: the collective under the watchdog."""
        self.begin(what, seconds)
        try:
            yield
        finally:
            self.end()

    def _watch(self):
        tick = max(0.05, min(1.0, self.seconds / 10.0))
        while True:
            time.sleep(tick)
            cur = self._current
            if cur is not None and time.monotonic() - cur[1] > cur[2]:
                what, _, limit = cur
                sys.stderr.write(
                    "xpnet distributed: rank %d of %d waited more than %g s in %s; another "
                    "rank has probably died or hangs. Aborting the job (raise "
                    "XPNET_DIST_TIMEOUT if a rank legitimately needs longer)\n"
                    % (self.comm.rank, self.comm.size, limit, what))
                self.comm.abort(EXIT_TIMEOUT)
                return


class Communicator:
    """``MPI.COMM_WORLD`` with xpnet's needs: `rank`, `size`, `local_rank` and
    `local_size` (the processes on this host, from a shared-memory split), `nodes`,
    collectives on host NumPy buffers under a deadline, and the NCCL communicator
    of this rank's GPU when one is wanted."""

    def __init__(self, mpi_comm, MPI, timeout=DEFAULT_TIMEOUT):
        self.mpi, self._MPI = mpi_comm, MPI
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        local = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.timeout = float(timeout)
        self._deadline = _Deadline(self, self.timeout)
        self.nodes = int(self.allreduce(numpy.array([float(self.local_rank == 0)]))[0])
        self._nccl = {}             # device id -> NCCL communicator, or the reason why not

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return ("Communicator(rank=%d, size=%d, local_rank=%d, local_size=%d, nodes=%d)"
                % (self.rank, self.size, self.local_rank, self.local_size, self.nodes))

    # Each collective: the deadline starts, MPI runs (mpi4py lets go of the GIL, so the
    # watchdog can run), the deadline ends.
    def allreduce(self, buf, what="an all-reduce"):
        """Sum the host NumPy array `buf` over all ranks, in place; returns it."""
        with self._deadline.watch(what):
            self.mpi.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return buf

    def allgather(self, buf, what="an all-gather"):
        """Every rank's host NumPy array `buf` (same shape everywhere), stacked by rank."""
        out = numpy.empty((self.size,) + tuple(buf.shape), dtype=buf.dtype)
        with self._deadline.watch(what):
            self.mpi.Allgather(numpy.ascontiguousarray(buf), out)
        return out

    def bcast(self, buf, root=0, what="a broadcast"):
        """Rank `root`'s host NumPy array `buf` into every rank's `buf`, in place."""
        with self._deadline.watch(what):
            self.mpi.Bcast(buf, root=root)
        return buf

    def bcast_object(self, obj, root=0, what="a broadcast"):
        """Rank `root`'s Python object (small, picklable), returned on every rank."""
        with self._deadline.watch(what):
            return self.mpi.bcast(obj, root=root)

    def allgather_object(self, obj, what="an all-gather"):
        """A list of every rank's small picklable `obj`, by rank."""
        with self._deadline.watch(what):
            return self.mpi.allgather(obj)

    def barrier(self, what="a barrier", timeout=None):
        with self._deadline.watch(what, timeout):
            self.mpi.Barrier()

    def abort(self, code=1):
        """End every rank of the job now (``MPI_Abort``), after flushing this one's output.
        If the MPI library does not end this process within 10 s, it exits by itself."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:       # a closed or broken stream must not stop the abort
                pass
        threading.Thread(target=_exit_later, args=(10.0, code), daemon=True).start()
        self.mpi.Abort(code)
        os._exit(code)

    # -- NCCL
    def nccl(self, device_id):
        """``(communicator, None)`` for NCCL on GPU `device_id`, or ``(None, reason)``.
        Collective: every rank asks at the same step (the first gradient all-reduce).
        Every rank agrees: if NCCL fails anywhere, every rank uses MPI."""
        if device_id in self._nccl:
            return self._nccl[device_id]
        nc, why = None, _nccl_problem()
        reasons = self.allgather_object(why, "the NCCL availability check")
        bad = [(r, w) for r, w in enumerate(reasons) if w]
        if not bad:
            cp = backend.load_library("cupy")
            nccl = cp.cuda.nccl
            try:
                uid = nccl.get_unique_id() if self.rank == 0 else None
            except Exception as e:
                uid = e
            uid = self.bcast_object(uid, what="sending the NCCL unique id")
            if isinstance(uid, Exception):
                why = "rank 0 could not make an NCCL unique id (%s)" % uid
            else:
                self._deadline.begin("the NCCL communicator's set-up")
                try:
                    with cp.cuda.Device(device_id):
                        nc = nccl.NcclCommunicator(self.size, uid, self.rank)
                except Exception as e:
                    why = "NCCL could not set up a communicator (%s: %s)" % (type(e).__name__, e)
                finally:
                    self._deadline.end()
            reasons = self.allgather_object(why, "the NCCL set-up check")
            bad = [(r, w) for r, w in enumerate(reasons) if w]
        if bad:
            if nc is not None:
                nc.destroy()
                nc = None
            r, w = bad[0]
            why = "rank %d: %s" % (r, w)
            if self.rank == 0:
                warnings.warn("xpnet distributed: gradients go through MPI with host staging, "
                              "not NCCL, because %s" % why, DistributedWarning, stacklevel=3)
        self._nccl[device_id] = (nc, why if bad else None)
        return self._nccl[device_id]


def _exit_later(seconds, code):
    time.sleep(seconds)
    os._exit(code)


def _nccl_problem():
    """Why NCCL can't be used in this process ('' when it can)."""
    try:
        cp = backend.load_library("cupy")
        nccl = cp.cuda.nccl
    except Exception as e:
        return "CuPy's NCCL module can't be imported (%s)" % e
    if not getattr(nccl, "available", True):
        return ("CuPy finds no NCCL library (pip install nvidia-nccl-cu12, or "
                "nvidia-nccl-cu13 for CUDA 13)")
    return ""
