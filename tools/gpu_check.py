"""GPU smoke check: the CUDA kernels against the reference kernels, float64 gradients of
the nets on the GPU against the CPU, a quick step timing and a per-layer profile.

    python tools/gpu_check.py [--time] [--profile]
"""
import sys
import time

import numpy as np

import xpnet
from xpnet.backend import cuda_kernels, load_library, reference


def close(a, b, tol=1e-5):
    a, b = xpnet.asnumpy(a).astype(np.float64), xpnet.asnumpy(b).astype(np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
    assert err < tol, err
    return err


def kernels(cp):
    rng = np.random.default_rng(0)
    geos = [((2, 3, 7, 9), (3, 2), 1, 0), ((1, 4, 10, 8), (3, 3), 2, 1), ((3, 5, 11, 12), (5, 3), 3, 2),
            ((2, 33, 6, 6), (2, 2), 2, 0), ((4, 1, 28, 28), (5, 5), 1, 2)]
    worst = 0
    for shape, (kh, kw), s, p in geos:
        st, pd = (s, s), (p, p)
        x = rng.standard_normal(shape)
        xg = cp.asarray(x)
        c0 = reference.im2col(x, kh, kw, st, pd)
        worst = max(worst, close(cuda_kernels.im2col(xg, kh, kw, st, pd), c0, 1e-12))
        worst = max(worst, close(cuda_kernels.col2im(cp.asarray(c0), shape, kh, kw, st, pd),
                                 reference.col2im(c0, shape, kh, kw, st, pd), 1e-12))
        W = rng.standard_normal((4, shape[1], kh, kw))
        b = rng.standard_normal(4)
        y0, k0 = reference.conv2d_forward(x, W, b, st, pd)
        y1, k1 = cuda_kernels.conv2d_forward(xg, cp.asarray(W), cp.asarray(b), st, pd, {})
        worst = max(worst, close(y1, y0, 1e-12))
        dy = rng.standard_normal(y0.shape)
        for g1, g0 in zip(cuda_kernels.conv2d_backward(cp.asarray(dy), k1, cp.asarray(W), shape,
                                                       st, pd, True, {}),
                          reference.conv2d_backward(dy, k0, W, shape, st, pd, True)):
            worst = max(worst, close(g1, g0, 1e-11))
        if 2 * p <= min(kh, kw):
            y0, a0 = reference.max_pool_forward(x, kh, kw, st, pd)
            y1, a1 = cuda_kernels.max_pool_forward(xg, kh, kw, st, pd)
            worst = max(worst, close(y1, y0, 1e-12))
            dy = rng.standard_normal(y0.shape)
            worst = max(worst, close(
                cuda_kernels.max_pool_backward(cp.asarray(dy), a1, shape, kh, kw, st, pd),
                reference.max_pool_backward(dy, a0, shape, kh, kw, st, pd), 1e-12))
            worst = max(worst, close(cuda_kernels.avg_pool_forward(xg, kh, kw, st, pd),
                                     reference.avg_pool_forward(x, kh, kw, st, pd), 1e-12))
            worst = max(worst, close(
                cuda_kernels.avg_pool_backward(cp.asarray(dy), shape, kh, kw, st, pd),
                reference.avg_pool_backward(dy, shape, kh, kw, st, pd), 1e-12))
    print("CUDA kernels vs reference: worst rel err %.2e" % worst)
    rng = np.random.default_rng(1)
    for cls, kw, shape in [(xpnet.SimpleConvNet, {}, (8, 1, 28, 28)),
                           (xpnet.DeepConvNet, dict(dropout_ratio=0.0), (8, 1, 28, 28)),
                           (xpnet.MultiLayerNetExtend, dict(input_size=784, hidden_size_list=[50, 50],
                                                            output_size=10, use_batchnorm=True),
                            (8, 784))]:
        x = rng.random(shape)
        t = rng.integers(0, 10, shape[0])
        g0 = cls(dtype="float64", device="cpu", seed=3, **kw).gradient(x, t)
        for dev in ("gpu", "cupy-reference"):
            g1 = cls(dtype="float64", device=dev, seed=3, **kw).gradient(x, t)
            e = max(close(g1[k], g0[k], 1e-9) for k in g0)
            print("%s float64 gradients %s vs cpu: %.2e" % (cls.__name__, dev, e))


def timing(cp, reps=50):
    rng = np.random.default_rng(0)
    for name in ("SimpleConvNet", "DeepConvNet"):
        for bs in (100, 1000):
            net = getattr(xpnet, name)(device="gpu", seed=0)
            opt = xpnet.Adam(lr=1e-3)
            xs = [cp.asarray(rng.random((bs, 1, 28, 28), dtype=np.float32)) for _ in range(4)]
            ts = [cp.asarray(rng.integers(0, 10, bs)) for _ in range(4)]
            for i in range(5):
                opt.update(net.params, net.gradient(xs[i % 4], ts[i % 4]))
            cp.cuda.get_current_stream().synchronize()
            a = time.perf_counter()
            for i in range(reps):
                opt.update(net.params, net.gradient(xs[i % 4], ts[i % 4]))
            cp.cuda.get_current_stream().synchronize()
            ms = (time.perf_counter() - a) / reps * 1e3
            print("%s b%d xpnet %.2f ms/step" % (name, bs, ms))


def profile(cp, name="DeepConvNet", bs=100, reps=30):
    """Per-layer forward/backward time (synchronised after each layer, so only the shares count)."""
    rng = np.random.default_rng(0)
    net = getattr(xpnet, name)(device="gpu", seed=0)
    x = cp.asarray(rng.random((bs, 1, 28, 28), dtype=np.float32))
    t = cp.asarray(rng.integers(0, 10, bs))
    opt = xpnet.Adam(lr=1e-3)
    fw = {}
    bw = {}
    sync = cp.cuda.get_current_stream().synchronize
    for r in range(reps + 3):
        h = x
        for i, layer in enumerate(net.layers):
            sync(); a = time.perf_counter()
            h = layer.forward(h, True)
            sync(); fw[i] = fw.get(i, 0) + (time.perf_counter() - a if r >= 3 else 0)
        sync(); a = time.perf_counter()
        net.last_layer.forward(h, t)
        d = net.last_layer.backward()
        sync(); lt = time.perf_counter() - a
        for i in reversed(range(len(net.layers))):
            sync(); a = time.perf_counter()
            d = net.layers[i].backward(d)
            sync(); bw[i] = bw.get(i, 0) + (time.perf_counter() - a if r >= 3 else 0)
        sync(); a = time.perf_counter()
        opt.update(net.params, net.grads)
        sync(); ot = time.perf_counter() - a
    for i, layer in enumerate(net.layers):
        print("  %-28s fwd %.3f ms  bwd %.3f ms" % (repr(layer)[:28], fw[i] / reps * 1e3, bw[i] / reps * 1e3))
    print("  loss fwd+bwd %.3f ms, adam %.3f ms" % (lt * 1e3, ot * 1e3))


if __name__ == "__main__":
    xpnet.set_device("gpu")
    cp = load_library("cupy")
    print("cupy", cp.__version__, "numpy", np.__version__)
    kernels(cp)
    if "--time" in sys.argv:
        timing(cp)
    if "--profile" in sys.argv:
        profile(cp, "DeepConvNet")
        profile(cp, "SimpleConvNet")
