"""The trainer's step object: how one optimizer step, an evaluation and a save are
done in this process. `make` picks one, so the loop reads like the book's:

- `LocalStep`: ``grads = net.gradient(x, t); optimizer.update(net.params, grads)``;
- `DistributedStep`: data-parallel over an `xpnet.distributed` communicator (each
  rank its rows of the global batch, one all-reduce per step, rank 0 writes);
- `CompiledStep`: `xpnet.compile_step(net, optimizer)`, a step whose state lives
  in the compiled function until `settle` writes it back.

Every step object has the same methods; the loop never asks which one it has.
This module runs steps; it must never read or write files or keep the history.
"""
from .. import distributed

__all__ = ["LocalStep", "DistributedStep", "CompiledStep", "make"]


class LocalStep:
    """One process, the book's step."""

    writes = True       # this process writes the checkpoints, history and logs
    where = ""          # added to the start line ("(rank 0 of 4)")
    has_grads = True    # `last_grads` can be read (for histograms)

    def __init__(self, net, optimizer):
        self.net, self.optimizer = net, optimizer
        self._keeps_loss = hasattr(net, "last_loss")   # else the book's second pass
        self.last_grads = None

    # -- set-up, in the trainer's order
    def agree(self, seed, batch_size, train_size, drop_last):
        """The seed every process uses (checks that the batches can be split)."""
        return seed

    def fork_streams(self, seed=None):
        """After the streams are seeded or restored (dropout masks per process)."""

    def begin(self):
        """After any resume, before the first step."""

    def reset(self):
        """The net's parameters were replaced from outside (a checkpoint, the best epoch)."""

    # -- the step
    def rows(self, lo, hi):
        """``(lo, hi, share)``: the rows of the global batch ``lo:hi`` this process takes."""
        return lo, hi, None

    def __call__(self, x, t, share=None, stop=False):
        """One update on ``(x, t)``; returns the loss (a number or a 0-d array)."""
        net = self.net
        grads = net.gradient(x, t)
        loss = net.last_loss if self._keeps_loss else net.loss(x, t)
        self.optimizer.update(net.params, grads)
        self.last_grads = grads
        return loss

    def stop_agreed(self, requested):
        """Whether to stop after this step, given this process's Ctrl-C request."""
        return requested

    # -- around the steps
    def settle(self):
        """Make the net's arrays the ones to evaluate and save (before either)."""

    def accuracy(self, measure, x, t, batch_size):
        return measure(x, t, batch_size)

    def share(self, value, what):
        """`value` from the writing process (the path of a checkpoint it wrote)."""
        return value


class DistributedStep(LocalStep):
    """Data-parallel over `comm`: every rank runs the loop, rank 0 writes."""

    def __init__(self, net, optimizer, comm, requested):
        super().__init__(net, optimizer)
        self.comm, self._requested = comm, requested
        self.writes = comm.rank == 0
        self.where = " (rank 0 of %d)" % comm.size
        self._dist = distributed.DistributedOptimizer(optimizer, comm)
        self._agreed = False

    def agree(self, seed, batch_size, train_size, drop_last):
        distributed.check_batch(batch_size, train_size, drop_last, self.comm)
        return distributed.agree_seed(seed, self.comm)

    def fork_streams(self, seed=None):
        distributed.fork_rank_stream(self.comm, seed)

    def begin(self):
        distributed.broadcast_params(self.net, self.comm)

    def rows(self, lo, hi):
        return distributed.batch_slice(lo, hi, self.comm)

    def __call__(self, x, t, share=None, stop=False):
        net = self.net
        grads = net.gradient(x, t)
        loss = net.last_loss if self._keeps_loss else net.loss(x, t)
        # one all-reduce: the gradients, the global loss, the ranks' stop requests
        loss, agreed = self._dist.update(net.params, grads, share,
                                         (loss, float(self._requested())))
        self._agreed = agreed > 0
        self.last_grads = grads
        return loss

    def stop_agreed(self, requested):
        return self._agreed     # all ranks stop after the same step

    def settle(self):
        distributed.average_buffers(self.net, self.comm)   # one set of BatchNorm statistics

    def accuracy(self, measure, x, t, batch_size):
        return distributed.accuracy(self.net, x, t, self.comm, batch_size, measure=measure)

    def share(self, value, what):
        return self.comm.bcast_object(value, what=what)


class CompiledStep(LocalStep):
    """`xpnet.compile_step(net, optimizer)`: ``step(x, t) -> loss``, ``step.sync()``
    writes parameters, optimizer state and BatchNorm statistics back. Built at the
    first step (after any resume), rebuilt after the net's arrays are replaced."""

    has_grads = False

    def __init__(self, net, optimizer):
        super().__init__(net, optimizer)
        import xpnet
        self._compile = getattr(xpnet, "compile_step", None)
        if self._compile is None:
            try:
                from ..compile import compile_step as found
            except ImportError:
                found = None
            self._compile = found
        if self._compile is None:
            raise RuntimeError("Trainer: compile=True needs xpnet.compile_step, which this "
                               "xpnet does not have; train without compile")
        self._fn = None

    def reset(self):
        self._fn = None

    def __call__(self, x, t, share=None, stop=False):
        if self._fn is None:
            self._fn = self._compile(self.net, self.optimizer)
        return self._fn(x, t)

    def settle(self):
        if self._fn is not None:
            self._fn.sync()


def make(net, optimizer, comm=None, compile=False, requested=None):
    """The step object for a trainer: distributed with a `comm`, compiled on request."""
    if comm is not None:
        if compile:
            raise ValueError("Trainer: compile=True can't be combined with comm= (the "
                             "compiled step runs in one process)")
        return DistributedStep(net, optimizer, comm, requested)
    return CompiledStep(net, optimizer) if compile else LocalStep(net, optimizer)
