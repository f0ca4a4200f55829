"""Which rows, seeds and device each rank gets: its part of a data set or batch, the
checks that a batch splits over the ranks, one run seed agreed by all and a dropout
stream per rank, GPU ``local_rank`` per rank, and accuracy counted over the ranks."""
import numpy

from .. import backend
from .launch import DistributedError


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
    """The device this rank uses: the same kind of device with index ``local_rank``
    (`Device.for_rank`: ``gpu:r``, ``torch:cuda:r``, ``array-api-strict:device{r+1}``);
    the host CPU is shared. DistributedError when this host has fewer such devices than
    ranks. `gpu_count` overrides the count of GPUs (tests)."""
    if isinstance(device, backend.Device) and device.backend.is_gpu(device):
        n = _gpu_count(device) if gpu_count is None else int(gpu_count)
        if n < comm.local_size:
            raise DistributedError(
                "%d ranks run on this host but it has %d GPU%s: each rank needs its own GPU "
                "(gpu:local_rank). Start at most %d rank%s per host (mpiexec -ppn %d) or "
                "train on the CPU" % (comm.local_size, n, "" if n == 1 else "s", n,
                                      "" if n == 1 else "s", max(n, 1)))
        if gpu_count is not None:       # a pretended count: the library isn't asked
            return backend.Device(device.kind, comm.local_rank, device.reference,
                                  type=device.type)
    try:
        return device.for_rank(comm.local_rank)
    except backend.DeviceError as e:
        raise DistributedError("rank %d of %d on this host: %s"
                               % (comm.local_rank, comm.local_size, e)) from None


def _gpu_count(device):
    return int(device.backend.device_count(device.type))


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
