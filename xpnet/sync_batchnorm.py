"""`SyncBatchNormalization`: BatchNormalization over the global batch of data-parallel
ranks. Its running statistics are updated by BatchNormalization's own rule
(`layers.running_stats`, through `update_running_stats`), so the two can't drift apart.
It talks to the other ranks through the communicator it is given (`xpnet.distributed`);
it imports no MPI itself."""
import math

from . import backend
from . import layers as L
from .backend import asnumpy, device_of, host_zeros, to_device

__all__ = ["SyncBatchNormalization", "sync_batchnorm"]


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
        mine = host_zeros(1 + 2 * D)
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
        self.update_running_stats(mean_x, var_x, n)     # BatchNormalization's own rule
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
        sums = host_zeros(2 * D)
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
    mean = host_zeros(D)
    sq = host_zeros(D)
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
