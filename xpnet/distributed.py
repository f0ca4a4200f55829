"""`xpnet.distributed`: data-parallel training on several processes, hosts and GPUs.

The ChainerMN / Horovod design on proven engines: MPI (through mpi4py) starts and
connects the processes (``mpiexec -n 4 xpnet train ...``), and NCCL
(``cupy.cuda.nccl``) moves gradients between GPUs. Every rank holds the whole net,
computes the gradient of its slice of each global batch, and one all-reduce per
step averages the gradients before every rank takes the same optimizer step::

    comm = distributed.init()                    # rank, size, local_rank
    distributed.broadcast_params(net, comm)      # every rank starts from rank 0's weights
    opt = distributed.DistributedOptimizer(xpnet.Adam(), comm)
    lo, hi, share = distributed.batch_slice(0, 100, comm)    # my part of a global batch
    opt.update(net.params, net.gradient(x[lo:hi], t[lo:hi]), share=share)

`Trainer(..., comm=comm)` does all of this (docs/distributed.md). The host side of
MPI is NumPy buffers; device arrays cross to it through `asnumpy`/`to_device`, or,
for CuPy arrays with NCCL, stay on the GPU (the one place outside xpnet/backend/ that
asks which library an array is: NCCL takes CuPy pointers).

It must never do networking of its own (MPI and NCCL move every byte), never
import mpi4py before `init` is called (``import xpnet`` stays MPI-free), and never
let a rank wait forever: every collective runs under a deadline
(``XPNET_DIST_TIMEOUT``, default 300 s), after which the whole job is aborted, and
an uncaught exception on any rank aborts the job after printing it.
"""
import contextlib
import math
import os
import sys
import threading
import time
import warnings

import numpy

from . import backend
from . import layers as L
from .backend import asnumpy, device_of, dtype_name, namespace, to_device

__all__ = ["DistributedError", "DistributedWarning", "Communicator", "init", "world",
           "launched_size", "broadcast_params", "DistributedOptimizer", "average_buffers",
           "SyncBatchNormalization", "sync_batchnorm", "shard", "batch_slice", "accuracy",
           "root_first", "check_batch", "agree_seed", "rank_seed", "fork_rank_stream",
           "device_for_rank", "INSTALL_HINT", "DEFAULT_TIMEOUT"]

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


# ---------------------------------------------------------------------- slices and checks

def shard(n, comm):
    """``(lo, hi)``: this rank's contiguous part of ``range(n)``; parts differ by at most 1."""
    base, extra = divmod(int(n), comm.size)
    lo = comm.rank * base + min(comm.rank, extra)
    return lo, lo + base + (1 if comm.rank < extra else 0)


def batch_slice(lo, hi, comm):
    """``(lo, hi, share)``: this rank's rows of the global batch ``[lo, hi)`` and its
    share of the batch (rows / global rows), the weight of its gradient in the average."""
    a, b = shard(hi - lo, comm)
    return lo + a, lo + b, (b - a) / float(hi - lo)


def root_first(comm, fn, what="rank 0's preparation", timeout=3600.0):
    """``fn()`` on rank 0 first, then on the other ranks (a download or a cache fill
    happens once). If rank 0 raises, it never reaches the barrier, and its error
    ends the job (the abort hook or the caller)."""
    if comm is None or comm.size == 1:
        return fn()
    if comm.rank != 0:
        comm.barrier("waiting for " + what, timeout)
        return fn()
    result = fn()
    comm.barrier(what, timeout)
    return result


def check_batch(batch_size, train_size, drop_last, comm, name="mini_batch_size"):
    """ValueError unless every global batch splits over the ranks with rows for each:
    the world size must divide the batch, and a last, smaller batch must still have a
    row per rank."""
    size = comm.size
    if batch_size % size:
        lower = batch_size - batch_size % size
        raise ValueError(
            "%s=%d is the global batch, split over the %d ranks, so it must be a multiple of "
            "%d; use %s%d" % (name, batch_size, size, size,
                              "%d or " % lower if lower else "", lower + size))
    last = train_size % batch_size
    if last and not drop_last and last < size:
        raise ValueError(
            "the last batch of each epoch has %d sample%s (%d %% %d), fewer than the %d "
            "ranks; drop it (drop_last=True) or choose another %s"
            % (last, "" if last == 1 else "s", train_size, batch_size, size, name))


def agree_seed(seed, comm):
    """The run's seed on every rank: the one given (it must be the same everywhere), or
    one rank 0 draws."""
    if seed is None:
        mine = int(backend.host_rng().integers(2 ** 62)) if comm.rank == 0 else None
        return comm.bcast_object(mine, what="agreeing on a seed")
    seeds = comm.allgather_object(seed, "agreeing on a seed")
    if any(s != seeds[0] for s in seeds):
        raise ValueError("seed differs between the ranks (%s); give every rank the same seed"
                         % ", ".join("rank %d: %r" % rs for rs in enumerate(seeds)))
    return seed


def rank_seed(seed, rank):
    """An int seed for `rank`'s own random stream (dropout masks), derived from the run's
    `seed`: different on every rank, the same on every run."""
    words = numpy.random.SeedSequence([int(seed) % 2 ** 63, int(rank), 0x78706E]).generate_state(2)
    return (int(words[0]) << 31) ^ int(words[1])      # < 2**63: every library takes it


def fork_rank_stream(comm, seed=None):
    """Seed xpnet's generators (dropout masks) for this rank: from `seed`, or, when None,
    from a number drawn from the host generator (equal on every rank after a resume)."""
    if seed is None:
        seed = int(backend.host_rng().integers(2 ** 62))
    backend.seed(rank_seed(seed, comm.rank))


def device_for_rank(device, comm, gpu_count=None):
    """The device this rank uses: a GPU device becomes GPU ``local_rank`` (one per rank);
    anything else is unchanged. DistributedError when this host has fewer GPUs than
    ranks. `gpu_count` overrides the count (tests)."""
    if getattr(device, "type", None) != "cuda":
        return device
    n = _gpu_count(device) if gpu_count is None else int(gpu_count)
    if n < comm.local_size:
        raise DistributedError(
            "%d ranks run on this host but it has %d GPU%s: each rank needs its own GPU "
            "(gpu:local_rank). Start at most %d rank%s per host (mpiexec -ppn %d) or train "
            "on the CPU" % (comm.local_size, n, "" if n == 1 else "s", n, "" if n == 1 else "s",
                            max(n, 1)))
    return backend.Device(device.kind, comm.local_rank, device.reference, type=device.type)


def _gpu_count(device):
    if device.library == "cupy":
        return int(device.xp.cuda.runtime.getDeviceCount())
    if device.library == "torch":
        return int(device.xp.cuda.device_count())
    return 0


# ---------------------------------------------------------------------- parameters

def _state_arrays(net, buffers=True):
    """``[(name, array)]`` of the net's parameters (and buffers), in a fixed order."""
    named = list(net.params.items())
    if buffers:
        named += sorted((getattr(net, "buffers", None) or {}).items())
    return [(k, a) for k, a in named if a is not None]


def _host_dtype(arrays):
    return numpy.dtype(dtype_name(arrays[0].dtype))


def _pack(arrays, dtype, out=None):
    """One flat host buffer holding `arrays` one after another (one transfer for device
    arrays: they are joined where they live first)."""
    n = sum(math.prod(a.shape) for a in arrays)
    if out is None:
        out = numpy.empty(n, dtype=dtype)
    if all(isinstance(a, numpy.ndarray) for a in arrays):
        numpy.concatenate([a.reshape(-1) for a in arrays], out=out[:n], casting="same_kind")
    else:
        xp = namespace(*arrays)
        out[:n] = asnumpy(xp.concat([xp.reshape(a, (-1,)) for a in arrays]))
    return out


def _unpack_into(arrays, flat):
    """Copy the host buffer `flat` back into `arrays`, in place, on their device."""
    dev = device_of(arrays[0])
    moved = to_device(flat, dev)
    xp = namespace(moved)
    o = 0
    for a in arrays:
        n = math.prod(a.shape)
        a[...] = xp.astype(xp.reshape(moved[o:o + n], tuple(a.shape)), a.dtype, copy=False)
        o += n


def broadcast_params(net, comm, root=0):
    """Copy rank `root`'s parameters and buffers (BatchNorm's running statistics) into
    every rank's net, in place: one broadcast of one flat buffer."""
    named = _state_arrays(net)
    arrays = [a for _, a in named]
    names = comm.allgather_object([(k, tuple(a.shape)) for k, a in named],
                                  "comparing the nets before broadcasting them")
    if any(n != names[root] for n in names):
        raise DistributedError("broadcast_params: the ranks hold different nets (%s)"
                               % "; ".join("rank %d: %d arrays" % (r, len(n))
                                           for r, n in enumerate(names)))
    buf = _pack(arrays, _host_dtype(arrays)) if comm.rank == root else \
        numpy.empty(sum(math.prod(a.shape) for a in arrays), dtype=_host_dtype(arrays))
    comm.bcast(buf, root, "broadcasting the parameters")
    if comm.rank != root:
        _unpack_into(arrays, buf)


def average_buffers(net, comm):
    """Average the running statistics of the net's BatchNorm layers over the ranks (one
    all-reduce), so evaluation and checkpoints see one set. Synchronized BatchNorm
    layers already agree and are left alone. Returns how many arrays were averaged."""
    layers = getattr(net, "layers", None)
    if layers is None:
        arrays = [a for _, a in sorted((getattr(net, "buffers", None) or {}).items())]
    else:
        arrays = [a for layer in layers if not isinstance(layer, SyncBatchNormalization)
                  for _, a in sorted(layer.buffers.items()) if a is not None]
    if not arrays or comm.size == 1:
        return 0
    buf = _pack(arrays, _host_dtype(arrays))
    comm.allreduce(buf, "averaging BatchNorm's running statistics")
    buf *= 1.0 / comm.size
    _unpack_into(arrays, buf)
    return len(arrays)


def accuracy(net, x, t, comm, batch_size=100, measure=None):
    """The fraction of `x` the net classifies right, each rank evaluating its own part
    (`shard`) and the counts summed: the same number on every rank, and as one
    process computes it. `measure(x, t, batch_size)` gives a part's fraction (default:
    ``net.accuracy``)."""
    if measure is None:
        measure = lambda xs, ts, bs: net.accuracy(xs, ts, batch_size=bs)   # noqa: E731
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("accuracy: empty input")
    lo, hi = shard(n, comm)
    correct = 0
    if hi > lo:
        correct = round(measure(x[lo:hi, ...], t[lo:hi, ...], batch_size) * (hi - lo))
    total = comm.allreduce(numpy.array([float(correct)]), "summing the accuracy counts")
    return float(total[0]) / n


# ---------------------------------------------------------------------- the optimizer

class DistributedOptimizer:
    """`optimizer` with gradients averaged over the ranks before each step.

    ``update(params, grads, share=None, extras=())`` packs every gradient (times this
    rank's `share` of the global batch, default ``1/size``) into one flat buffer, sums
    it over the ranks with ONE all-reduce, and hands the sums (the global batch's
    gradient) to `optimizer`. A few numbers in `extras` (the trainer's loss and stop
    flag) ride along in the same buffer, weighted like the gradients; their weighted sums
    (the global batch's mean loss, say) are returned as Python floats.

    Host arrays (NumPy, torch:cpu, ...) are all-reduced by MPI. CuPy arrays go through
    NCCL when every rank can use it, else MPI with host staging (a RuntimeWarning on
    rank 0 says why, once). Anything else the optimizer has (state_dict, hyper-
    parameters, `t`) is the wrapped optimizer's. `stats` counts steps, bytes and the
    seconds spent in the all-reduce."""

    def __init__(self, optimizer, comm):
        if isinstance(optimizer, DistributedOptimizer):
            optimizer = optimizer.optimizer
        self.optimizer, self.comm = optimizer, comm
        self._layout = None         # (key, names, shapes, offsets, n, host buffer)
        self.stats = {"steps": 0, "bytes": 0, "allreduce_seconds": 0.0, "seconds": 0.0,
                      "transport": None}

    def __getattr__(self, name):    # state_dict, load_state_dict, lr, t, ...: the optimizer's
        if name in ("optimizer", "comm", "_layout", "stats"):
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self):
        return "DistributedOptimizer(%r, ranks=%d)" % (self.optimizer, self.comm.size)

    def _layout_for(self, params, grads, n_extras):
        keys = [k for k, p in params.items() if grads.get(k) is not None]
        if not keys:
            raise ValueError("DistributedOptimizer: no gradients to average")
        p0 = params[keys[0]]
        key = (tuple((k, tuple(params[k].shape)) for k in keys), dtype_name(p0.dtype), n_extras)
        if self._layout is not None and self._layout[0] == key:
            return self._layout
        # A new layout (the first step, or another net): every rank must pack the same.
        keys_everywhere = self.comm.allgather_object(key, "comparing the gradient layouts")
        if any(k != key for k in keys_everywhere):
            raise DistributedError("DistributedOptimizer: the ranks send different gradients "
                                   "(names, shapes or dtypes differ); every rank must train "
                                   "the same net")
        sizes = [math.prod(params[k].shape) for k in keys]
        n = sum(sizes)
        buf = numpy.empty(n + n_extras, dtype=numpy.dtype(key[1]))
        self._layout = (key, keys, [tuple(params[k].shape) for k in keys], sizes, n, buf)
        return self._layout

    def update(self, params, grads, share=None, extras=()):
        """Average `grads` and `extras` over the ranks (weighted by `share`), then step
        `params` in place; returns the averaged `extras` (a list of floats)."""
        t0 = time.perf_counter()
        share = 1.0 / self.comm.size if share is None else float(share)
        _, keys, shapes, sizes, n, buf = self._layout_for(params, grads, len(extras))
        self.stats["bytes"] = buf.nbytes
        dev = device_of(params[keys[0]])
        nc = None
        if dev.library == "cupy" and self.comm.size > 1:
            nc, why = self.comm.nccl(dev.id)
            self.stats["transport"] = "nccl" if nc is not None else "mpi (host staging): " + why
        else:
            self.stats["transport"] = "mpi"
        if nc is not None:
            averaged, sums = self._nccl_allreduce(nc, dev, keys, shapes, sizes, n, grads,
                                                  share, extras)
        else:
            averaged, sums = self._mpi_allreduce(buf, keys, shapes, sizes, n, grads, share,
                                                 extras, params, dev)
        self.optimizer.update(params, averaged)
        self.stats["steps"] += 1
        self.stats["seconds"] += time.perf_counter() - t0
        return sums

    def _mpi_allreduce(self, buf, keys, shapes, sizes, n, grads, share, extras, params, dev):
        _pack([grads[k] for k in keys], buf.dtype, out=buf)
        for i, e in enumerate(extras):
            buf[n + i] = float(e)
        if share != 1.0:
            buf *= share
        t0 = time.perf_counter()
        self.comm.allreduce(buf, "the gradient all-reduce")
        self.stats["allreduce_seconds"] += time.perf_counter() - t0
        sums = [float(v) for v in buf[n:]]
        flat = buf[:n] if dev.library == "numpy" else to_device(buf[:n], dev)
        xp = namespace(flat)
        averaged, o = {}, 0
        for k, shape, size in zip(keys, shapes, sizes):
            averaged[k] = xp.reshape(flat[o:o + size], shape)
            o += size
        return averaged, sums

    def _nccl_allreduce(self, nc, dev, keys, shapes, sizes, n, grads, share, extras):
        # CuPy arrays, NCCL on this rank's GPU: the buffer never leaves the device.
        cp = backend.load_library("cupy")
        nccl = cp.cuda.nccl
        with cp.cuda.Device(dev.id):
            xp = namespace(grads[keys[0]])
            dtype = grads[keys[0]].dtype
            parts = [xp.reshape(xp.astype(grads[k], dtype, copy=False), (-1,)) for k in keys]
            if extras:
                parts.append(xp.stack([xp.astype(xp.asarray(e), dtype) for e in extras]))
            flat = xp.concat(parts)
            if share != 1.0:
                flat = flat * share
            stream = cp.cuda.get_current_stream()
            t0 = time.perf_counter()
            nc.allReduce(flat.data.ptr, flat.data.ptr, flat.size,
                         getattr(nccl, _NCCL_TYPES[dtype_name(dtype)]), nccl.NCCL_SUM,
                         stream.ptr)
            # Wait here, under the deadline: a dead peer must not hang this rank forever.
            with self.comm._deadline.watch("the NCCL gradient all-reduce"):
                stream.synchronize()
            self.stats["allreduce_seconds"] += time.perf_counter() - t0
            sums = [float(v) for v in asnumpy(flat[n:])] if extras else []
            averaged, o = {}, 0
            for k, shape, size in zip(keys, shapes, sizes):
                averaged[k] = xp.reshape(flat[o:o + size], shape)
                o += size
        return averaged, sums


# ---------------------------------------------------------------------- synchronized BN

class SyncBatchNormalization(L.BatchNormalization):
    """BatchNormalization whose training statistics are those of the global batch: the
    ranks' per-feature counts, means and squared deviations are gathered (one
    all-gather) and combined in rank order (Chan's parallel variance), so every rank
    normalizes with the same mean and variance as one process with the whole batch,
    and keeps the same running statistics. Backward sums the two per-feature terms of
    the input gradient over the ranks (one all-reduce). Evaluation is BatchNorm's.

    The statistics travel through host memory (small: 3 numbers per feature)."""

    def __init__(self, gamma, beta, comm, momentum=0.9, running_mean=None, running_var=None,
                 eps=1e-5):
        super().__init__(gamma, beta, momentum, running_mean, running_var, eps)
        self.comm = comm

    @classmethod
    def from_layer(cls, bn, comm):
        """A synchronized layer holding `bn`'s very dicts of parameters, gradients and
        buffers (so a net's parameter views keep working)."""
        new = cls.__new__(cls)
        L.Layer.__init__(new)
        new.params, new.grads, new.buffers = bn.params, bn.grads, bn.buffers
        new.momentum, new.eps, new.comm = bn.momentum, bn.eps, comm
        new.need_input_grad = bn.need_input_grad
        return new

    def forward(self, x, train_flg=True):
        if not train_flg:
            return super().forward(x, False)
        xp = self._check_input(x)
        x = self._match_dtype(x)
        axes, bshape = self._axes(x)
        m = math.prod(x.shape) // x.shape[1]
        mu = xp.mean(x, axis=axes, keepdims=True)
        xc = x - mu
        m2 = xp.sum(xc * xc, axis=axes)
        D = int(x.shape[1])
        mine = numpy.empty(1 + 2 * D)
        mine[0] = m
        mine[1:1 + D] = asnumpy(xp.reshape(mu, (-1,)))
        mine[1 + D:] = asnumpy(m2)
        rows = self.comm.allgather(mine, "synchronized BatchNorm's statistics")
        n, mean, sq = _combine(rows, D)
        if n < 2:
            raise ValueError("SyncBatchNormalization: training needs more than one value per "
                             "feature over all ranks, got %d" % n)
        dev = device_of(x)
        mean_x = xp.astype(to_device(mean, dev), x.dtype)
        var_x = xp.astype(to_device(sq / n, dev), x.dtype)
        xc = x - xp.reshape(mean_x, bshape)
        std = xp.sqrt(xp.reshape(var_x, bshape) + self.eps)
        xn = xc / std
        mo = self.momentum
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm *= mo
        rm += (1.0 - mo) * mean_x
        rv *= mo
        rv += (1.0 - mo) * (n / (n - 1.0)) * var_x
        self._c_cache = (xn, std, axes, bshape)
        self._c_counts = (m, n)
        g = xp.reshape(self.params["gamma"], bshape)
        b = xp.reshape(self.params["beta"], bshape)
        return g * xn + b

    def backward(self, dout):
        if getattr(self, "_c_cache", None) is None:
            raise RuntimeError("SyncBatchNormalization.backward needs a forward with "
                               "train_flg=True")
        xn, std, axes, bshape = self._c_cache
        m, n = self._c_counts
        self._check_dout(dout, xn.shape)
        xp = backend.namespace(dout)
        self.grads["beta"] = xp.sum(dout, axis=axes)
        self.grads["gamma"] = xp.sum(dout * xn, axis=axes)
        dxn = dout * xp.reshape(self.params["gamma"], bshape)
        # Each rank's dout is for its own mean loss, which weighs (m / n) in the global
        # one: the sums are weighted so, and the result is again per this rank's loss.
        D = int(xn.shape[1])
        w = m / float(n)
        sums = numpy.empty(2 * D)
        sums[:D] = asnumpy(xp.sum(dxn, axis=axes)) * w
        sums[D:] = asnumpy(xp.sum(dxn * xn, axis=axes)) * w
        self.comm.allreduce(sums, "synchronized BatchNorm's backward")
        g = xp.astype(to_device(sums / m, device_of(dout)), dout.dtype)
        dx = dxn - xp.reshape(g[:D], bshape)
        dx = dx - xn * xp.reshape(g[D:], bshape)
        return dx / std

    def __repr__(self):
        return "SyncBatchNormalization(%d, momentum=%g, ranks=%d)" % (
            self.params["gamma"].shape[0], self.momentum, self.comm.size)


def _combine(rows, D):
    """Global count, mean and sum of squared deviations from the ranks' ``[count,
    means, squared deviations]`` rows, combined in rank order (the same on every rank)."""
    n = 0.0
    mean = numpy.zeros(D)
    sq = numpy.zeros(D)
    for row in rows:
        m = row[0]
        if m == 0:
            continue
        mu, s = row[1:1 + D], row[1 + D:]
        total = n + m
        delta = mu - mean
        mean = mean + delta * (m / total)
        sq = sq + s + delta * delta * (n * m / total)
        n = total
    return int(n), mean, sq


def sync_batchnorm(net, comm):
    """Make every BatchNormalization layer of `net` synchronized over `comm`'s ranks
    (in place); returns how many were converted. Parameters, buffers and their names
    are unchanged, so checkpoints and parameter files are the same."""
    count = 0
    for i, layer in enumerate(net.layers):
        if isinstance(layer, L.BatchNormalization) and not isinstance(
                layer, SyncBatchNormalization):
            net.layers[i] = SyncBatchNormalization.from_layer(layer, comm)
            count += 1
    if count and hasattr(net, "_index_params"):
        net._index_params()     # the parameter names now point at the new layers
    return count
