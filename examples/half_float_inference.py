"""Inference in float16: does a net trained in float32 lose accuracy? (book ch. 8.3.4)

The book's ``half_float_network.py`` casts a trained DeepConvNet's parameters and the
inputs to float16 and finds the same test accuracy. Here the net is loaded from a
parameter file (``--params``, e.g. the ``simple_convnet_params.npz`` or
``deep_convnet_params.npz`` the training examples write) or, without one, trained for a
short while; then ``net.astype('float16')`` casts it and the test set is run through
both. Prints both accuracies, how many predictions agree, the largest score difference,
the dtype each layer computes in, and the time per 1,000 images.

On a CPU, NumPy has no fast float16 matrix product, so float16 is correct but many
times slower; the memory and speed gains are a GPU matter.

    python examples/half_float_inference.py [--quick] [--params FILE] [--device gpu]
"""
import os
import time

import numpy as np

from _common import (Batches, load_data, make_parser, positive_float, positive_int, pyplot,
                     save_figure, save_results, setup, subset)
import xpnet

NAME = "half_float_inference"
NETS = {"simple": lambda dev, seed: xpnet.SimpleConvNet(seed=seed, device=dev),
        "deep": lambda dev, seed: xpnet.DeepConvNet(seed=seed, device=dev),
        "mlp": lambda dev, seed: xpnet.MultiLayerNet(784, [100] * 4, 10, seed=seed,
                                                     device=dev)}


def scores(net, x, batch=100):
    """Class scores for all of `x` (device array), as float64 on the host, and the seconds."""
    xpnet.synchronize()
    t0 = time.perf_counter()
    out = [net.predict(x[i:i + batch]) for i in range(0, len(x), batch)]
    out = np.concatenate([xpnet.asnumpy(o) for o in out])
    return out.astype(np.float64), time.perf_counter() - t0


def layer_dtypes(net, x):
    """(layer name, output dtype) for one forward pass."""
    out = []
    x = x.astype(net.dtype)    # net.predict does this cast itself
    for layer in net.layers:
        x = layer.forward(x, False)
        out.append((type(layer).__name__, str(x.dtype)))
    return out


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--params", default=None,
                   help="an xpnet parameter file (.npz) to load instead of training")
    p.add_argument("--net", choices=sorted(NETS), default="simple",
                   help="net trained when no --params is given")
    p.add_argument("--epochs", type=positive_int("--epochs"), default=1)
    p.add_argument("--train-size", type=positive_int("--train-size"), default=None)
    p.add_argument("--lr", type=positive_float("--lr"), default=0.001)
    p.add_argument("--test-size", type=positive_int("--test-size"), default=None,
                   help="test images compared (default: all)")
    args, dev = setup(p, argv, quick=dict(train_size=300, test_size=200))

    if args.params:
        if not os.path.exists(args.params):
            p.error("--params: no such file: %s" % args.params)
        try:
            net = xpnet.load_net(args.params, device=dev, dtype="float32")
        except ValueError as e:
            p.error("--params: %s" % e)
        source = "loaded from %s" % args.params
    else:
        net = NETS[args.net](dev, args.seed)
        source = "trained here"
    conv = "input_dim" in net.config
    (x_train, t_train), (x_test, t_test) = load_data(args, flatten=not conv)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    if not args.params:
        x_train, t_train = subset(x_train, t_train, args.train_size)
        opt = xpnet.Adam(lr=args.lr)
        data = Batches(x_train, t_train, dev, seed=args.seed)
        for epoch in range(args.epochs):
            for x, t in data.epoch(100):
                opt.update(net.params, net.gradient(x, t))
        source += " (%d epoch(s) on %d images)" % (args.epochs, len(x_train))
    print("net: %s, %s" % (net.config.get("type"), source))

    xd = xpnet.to_device(x_test, dev)
    s32, sec32 = scores(net, xd)
    net.astype("float16")
    s16, sec16 = scores(net, xd)
    dtypes = layer_dtypes(net, xd[:10])
    p32, p16 = s32.argmax(axis=1), s16.argmax(axis=1)
    acc32, acc16 = float(np.mean(p32 == t_test)), float(np.mean(p16 == t_test))
    agree = float(np.mean(p32 == p16))
    finite = np.isfinite(s16).all(axis=1)
    diff = np.abs(s16 - s32)[finite]
    max_diff = float(diff.max()) if diff.size else float("nan")
    rel = max_diff / float(np.abs(s32).max())
    not16 = [(n, d) for n, d in dtypes if d != "float16"]

    n = len(x_test)
    print("float32 test accuracy %.4f" % acc32)
    print("float16 test accuracy %.4f" % acc16)
    print("predictions agreeing: %.4f (%d of %d differ)" % (agree, int(np.sum(p32 != p16)), n))
    print("largest score difference %.4g (%.2g of the largest score); %d non-finite rows"
          % (max_diff, rel, int(np.sum(~finite))))
    print("float16 layer outputs: %s" % ("all float16" if not not16 else
                                         "NOT float16 in " + ", ".join("%s (%s)" % x
                                                                       for x in not16)))
    print("time per 1000 images: float32 %.3f s, float16 %.3f s (%s)"
          % (sec32 * 1000 / n, sec16 * 1000 / n, xpnet.current_device()))
    figures = {"net": net.config.get("type"), "source": source, "test_size": n,
               "float32_accuracy": acc32, "float16_accuracy": acc16, "agreement": agree,
               "max_score_diff": max_diff, "relative_max_diff": rel,
               "nonfinite_rows": int(np.sum(~finite)), "layer_dtypes": dtypes,
               "seconds_per_1000": {"float32": sec32 * 1000 / n, "float16": sec16 * 1000 / n}}

    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        ax = axes[0]
        ax.bar(["float32", "float16"], [acc32, acc16], color=["C0", "C1"])
        for i, a in enumerate((acc32, acc16)):
            ax.text(i, a, "%.4f" % a, ha="center", va="bottom")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy")
        ax.set_title("%s, %d test images" % (net.config.get("type"), n))
        ax = axes[1]
        ax.hist(diff.ravel(), bins=50, log=True)
        ax.set_xlabel("|float16 score - float32 score|")
        ax.set_title("score differences (agreement %.4f)" % agree)
        fig.tight_layout()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
