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
where the device's class says its arrays all-reduce by NCCL (`Backend.nccl`: CuPy's),
stay on the GPU.

It must never do networking of its own (MPI and NCCL move every byte), never
import mpi4py before `init` is called (``import xpnet`` stays MPI-free), and never
let a rank wait forever: every collective runs under a deadline
(``XPNET_DIST_TIMEOUT``, default 300 s), after which the whole job is aborted, and
an uncaught exception on any rank aborts the job after printing it.

Its parts: `launch` (MPI set-up, the `Communicator` and its watchdog), `sharding`
(rows, seeds and devices per rank), `optimizer` (moving arrays between the ranks,
`DistributedOptimizer`); `SyncBatchNormalization` lives in `xpnet.sync_batchnorm`,
beside the layers, and is named here too.
"""
from ..sync_batchnorm import SyncBatchNormalization, sync_batchnorm
from .launch import (DEFAULT_TIMEOUT, INSTALL_HINT, Communicator, DistributedError,
                     DistributedWarning, init, launched_size, world)
from .optimizer import DistributedOptimizer, average_buffers, broadcast_params
from .sharding import (accuracy, agree_seed, batch_slice, check_batch, device_for_rank,
                       fork_rank_stream, rank_seed, root_first, shard)

__all__ = ["DistributedError", "DistributedWarning", "Communicator", "init", "world",
           "launched_size", "broadcast_params", "DistributedOptimizer", "average_buffers",
           "SyncBatchNormalization", "sync_batchnorm", "shard", "batch_slice", "accuracy",
           "root_first", "check_batch", "agree_seed", "rank_seed", "fork_rank_stream",
           "device_for_rank", "INSTALL_HINT", "DEFAULT_TIMEOUT"]
