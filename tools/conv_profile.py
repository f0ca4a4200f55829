"""Where a DeepConvNet training step spends its time on the CPU, per layer and per
kernel, for xpnet and (operator totals) for PyTorch.

    PYTHONPATH=. python tools/conv_profile.py [--batch 100] [--repeats 7] [--torch]
    PYTHONPATH=. python tools/conv_profile.py --gflops [--repeats 20]   # vs PyTorch, GFLOP/s

Per-layer rows are wall-clock medians of each layer's forward and backward inside a
training step (xpnet's CPU threads on). The kernel breakdown (im2col, GEMMs, ...)
times the fast path's helpers with xpnet held at one thread, so each time belongs to
one kernel; quote its shares, not its absolute times. Run on a quiet machine.
"""
import argparse
import collections
import functools
import statistics
import sys
import time

import numpy as np

from xpnet import registry
from xpnet.backend import cpu_threads, numpy_chwn, numpy_columns, numpy_fast


def _median_ms(ts):
    return statistics.median(ts) * 1e3


def layer_profile(net, x, t, repeats):
    fwd = collections.defaultdict(list)
    bwd = collections.defaultdict(list)
    names = ["%02d %s" % (i, type(l).__name__) for i, l in enumerate(net.layers)]
    for _ in range(repeats + 1):
        with net._cpu_threads():
            h = x
            for n, layer in zip(names, net.layers):
                t0 = time.perf_counter()
                h = layer.forward(h, True)
                fwd[n].append(time.perf_counter() - t0)
            net.last_layer.forward(h, t)
            d = net.last_layer.backward(1)
            for n, layer in zip(reversed(names), reversed(net.layers)):
                t0 = time.perf_counter()
                d = layer.backward(d)
                bwd[n].append(time.perf_counter() - t0)
    rows = [(n, _median_ms(fwd[n][1:]), _median_ms(bwd[n][1:])) for n in names]
    return rows


_HELPERS = ["im2col_cnhw", "_im2col_numpy", "_gemm_per_image", "_weight_grad", "col2im_cnhw"]
_CHWN = ["_im2col", "_gemm", "_weight_grad"]   # the batch-innermost convolution's parts
_METHODS = ["relu_forward", "relu_backward", "max_pool_forward", "max_pool_backward",
            "affine_forward", "affine_backward"]


def kernel_profile(net, x, t, repeats):
    """Self time of the fast path's helpers (one thread), in ms per step."""
    acc = collections.defaultdict(float)
    stack = []
    saved = {}

    def wrap(name, fn):
        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                inner = stack.pop()
                dt = time.perf_counter() - t0
                acc[name] += dt - inner
                if stack:
                    stack[-1] += dt
        return timed

    # a helper is wrapped where it lives and where numpy_fast calls it by name
    owners = ([(numpy_columns, n) for n in _HELPERS]
              + [(numpy_fast, n) for n in _HELPERS if n in vars(numpy_fast)]
              + [(numpy_chwn, n) for n in _CHWN]
              + [(numpy_fast.NumpyKernels, n) for n in _METHODS])
    for owner, name in owners:
        saved[owner, name] = vars(owner)[name]
        label = "chwn" + name if owner is numpy_chwn else name
        setattr(owner, name, wrap(label, saved[owner, name]))
    old = cpu_threads.get_num_threads()
    cpu_threads.set_num_threads(1)
    try:
        net.gradient(x, t)
        acc.clear()
        t0 = time.perf_counter()
        for _ in range(repeats):
            net.gradient(x, t)
        total = (time.perf_counter() - t0) / repeats * 1e3
    finally:
        cpu_threads.set_num_threads(old)
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)
    return total, {k: v / repeats * 1e3 for k, v in acc.items()}


def step_flops(net, x, t):
    """Multiply-add FLOPs (2 per MAC) of a training step: each conv/affine layer's
    forward GEMM, its weight gradient, and its input gradient (not for the first layer)."""
    net.gradient(x, t)
    fwd = 0
    total = 0
    for layer in net.layers:
        W = layer.params.get("W")
        if W is None:
            continue
        if hasattr(layer, "_c_oshape"):
            N, FN, OH, OW = layer._c_oshape
            f = 2 * N * OH * OW * int(np.prod(W.shape))
        else:
            f = 2 * layer._c_x.shape[0] * int(np.prod(W.shape))
        fwd += f
        total += f * (3 if layer.need_input_grad else 2)
    return fwd, total


def gemm_peak(repeats=5):
    """Best float32 GEMM GFLOP/s of NumPy at n = 1024 and 2048 (BLAS threads as set)."""
    out = {}
    for n in (1024, 2048):
        a = np.ones((n, n), np.float32)
        best = min(_timed(lambda: a @ a) for _ in range(repeats))
        out[n] = 2 * n ** 3 / best / 1e9
    return out


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def torch_profile(net, x, t, repeats):
    import torch
    from xpnet.torch_io import to_torch
    model = to_torch(net, torch.device("cpu"), torch)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    crit = torch.nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=True)
        crit(model(xt), tt).backward()
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def gflops_vs_torch(model, batch, repeats):
    """`xpnet bench --vs torch` on one training row, with each side's GFLOP/s against
    NumPy's GEMM peak measured in the same process."""
    from xpnet.bench import run_bench
    net = registry.bench_model(model).build(seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    _, flops = step_flops(net, x, rng.integers(0, 10, size=batch))
    peak = gemm_peak()
    row = run_bench(models=[model], batch_sizes=[batch], infer_batch=0, vs_torch=True,
                    repeats=repeats)[0]
    peak_after = gemm_peak()
    best = max(max(peak.values()), max(peak_after.values()))
    print("%s train b%d: %.3f GFLOP per step; NumPy GEMM peak %.0f GFLOP/s (best of n=1024, "
          "2048, before and after)" % (model, batch, flops / 1e9, best))
    for side in ("xpnet", "torch"):
        ms = row[side]["ms"]
        g = flops / (ms / 1e3) / 1e9
        print("  %-5s %8.1f ms  %6.1f GFLOP/s  %3.0f %% of peak" % (side, ms, g, 100 * g / best))
    print("  ratio x/t %.2f" % row["ratio"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="DeepConvNet")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--torch", action="store_true", help="also PyTorch's operator totals")
    p.add_argument("--gflops", action="store_true",
                   help="only: xpnet vs PyTorch step time and GFLOP/s against the GEMM peak")
    a = p.parse_args(argv)
    if a.gflops:
        gflops_vs_torch(a.model, a.batch, a.repeats)
        return 0
    net = registry.bench_model(a.model).build(seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((a.batch, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, size=a.batch)
    rows = layer_profile(net, x, t, a.repeats)
    tot = sum(f + b for _, f, b in rows)
    print("%s batch %d, per layer (median ms, xpnet threads %d)"
          % (a.model, a.batch, cpu_threads.get_num_threads()))
    print("%-22s %8s %8s %6s" % ("layer", "fwd", "bwd", "share"))
    for n, f, b in rows:
        print("%-22s %8.2f %8.2f %5.1f%%" % (n, f, b, 100 * (f + b) / tot))
    print("%-22s %8.2f %8.2f" % ("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    total, ks = kernel_profile(net, x, t, a.repeats)
    print("\nkernels, one thread: step %.1f ms" % total)
    for k, v in sorted(ks.items(), key=lambda kv: -kv[1]):
        print("%-22s %8.2f ms %5.1f%%" % (k, v, 100 * v / total))
    print("%-22s %8.2f ms" % ("(rest)", total - sum(ks.values())))
    fwd, total = step_flops(net, x, t)
    print("\nFLOPs: forward %.3f G, training step %.3f G; NumPy float32 GEMM peak: %s"
          % (fwd / 1e9, total / 1e9, ", ".join("n=%d %.0f GFLOP/s" % kv
                                               for kv in gemm_peak().items())))
    if a.torch:
        print(torch_profile(net, x, t, a.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
