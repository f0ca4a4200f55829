"""Moving a net's arrays between the ranks: `broadcast_params` (rank 0's weights
everywhere), `average_buffers` (BatchNorm statistics) and `DistributedOptimizer` (one
all-reduce of the gradients per step, through MPI or NCCL). Arrays are packed into one
host buffer; what comes back is stored as new arrays, rebound in the net (as
`load_state_dict` does), so immutable array libraries work too."""
import math
import time

import numpy

from .. import backend
from ..backend import asnumpy, device_of, dtype_name, namespace, to_device
from ..sync_batchnorm import SyncBatchNormalization
from .launch import _NCCL_TYPES, DistributedError

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


def _unpack(flat, like):
    """New arrays shaped, typed and placed as `like`, from the host buffer `flat`."""
    dev = device_of(like[0])
    moved = to_device(flat, dev)
    xp = namespace(moved)
    out, o = [], 0
    for a in like:
        n = math.prod(a.shape)
        out.append(xp.astype(xp.reshape(moved[o:o + n], tuple(a.shape)), a.dtype))
        o += n
    return out


def _store(net, named):
    """Rebind the net's parameters and buffers to the arrays of ``{name: array}``.
    xpnet's nets rebind through `load_state_dict` (which checks each array); a net of
    the book's own classes, whose layers hold its NumPy arrays themselves, is written in
    place, as before."""
    if hasattr(net, "load_state_dict"):
        net.load_state_dict(named, strict=False)
        return
    bufs = getattr(net, "buffers", None) or {}
    for k, a in named.items():
        target = net.params[k] if k in net.params else bufs[k]
        target[...] = a


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
        _store(net, dict(zip([k for k, _ in named], _unpack(buf, arrays))))


def average_buffers(net, comm):
    """Average the running statistics of the net's BatchNorm layers over the ranks (one
    all-reduce), so evaluation and checkpoints see one set. Synchronized BatchNorm
    layers already agree and are left alone. Returns how many arrays were averaged."""
    layers = getattr(net, "layers", None)
    if layers is None:
        places = [(None, k) for k in sorted(getattr(net, "buffers", None) or {})]
        arrays = [net.buffers[k] for _, k in places]
    else:
        places = [(layer.buffers, k) for layer in layers
                  if not isinstance(layer, SyncBatchNormalization)
                  for k in sorted(layer.buffers) if layer.buffers[k] is not None]
        arrays = [d[k] for d, k in places]
    if not arrays or comm.size == 1:
        return 0
    buf = _pack(arrays, _host_dtype(arrays))
    comm.allreduce(buf, "averaging BatchNorm's running statistics")
    buf *= 1.0 / comm.size          # the host buffer: MPI's, never the net's arrays
    new = _unpack(buf, arrays)
    if layers is None:
        _store(net, {k: a for (_, k), a in zip(places, new)})
    else:
        for (d, k), a in zip(places, new):
            d[k] = a                # rebound in the layer, as BatchNorm itself does
    return len(arrays)



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
        if dev.backend.nccl and self.comm.size > 1:
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
        flat = to_device(buf[:n], dev)          # the host buffer itself on the host
        xp = namespace(flat)
        averaged, o = {}, 0
        for k, shape, size in zip(keys, shapes, sizes):
            averaged[k] = xp.reshape(flat[o:o + size], shape)
            o += size
        return averaged, sums

    def _nccl_allreduce(self, nc, dev, keys, shapes, sizes, n, grads, share, extras):
        # CuPy arrays, NCCL on this rank's GPU: the buffer never leaves the device.
        cp = dev.backend.load()
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
