"""Initial weight scale: std 0.01, Xavier and He with sigmoid and with ReLU (book ch. 6.2).

Part 1, the book's ``weight_init_activation_histogram.py``: 1,000 random inputs (100
features) go through 5 fully connected layers of 100 units; the histogram of each
layer's activations shows whether they vanish, saturate or stay spread out.
Part 2, the book's ``weight_init_compare.py``: MultiLayerNet 784-100x4-10 trained with
SGD (lr 0.01, batch 128) for 2,000 iterations from each of the six initializations;
prints the final training loss and test accuracy.

Xavier is the book's sqrt(1/n_in); He is sqrt(2/n_in).

    python examples/weight_init_compare.py [--quick] [--device gpu] [--out DIR]
"""
import numpy as np

from _common import (Batches, load_data, make_parser, positive_float, positive_int, pyplot,
                     save_figure, save_results, setup, smooth, subset)
import xpnet

NAME = "weight_init_compare"
INITS = (("std=0.01", 0.01), ("Xavier", "xavier"), ("He", "he"))
ACTIVATIONS = ("sigmoid", "relu")


def activation_stats(act, init, n, layers, width, seed, dev):
    """Run random data through `layers` (Affine, activation) pairs; per layer: values,
    mean, std and the fraction of 'dead' units (|sigmoid-0.5|>0.49 saturated, ReLU 0)."""
    net = xpnet.MultiLayerNet(width, [width] * layers, 10, activation=act,
                              weight_init_std=init, seed=seed, device=dev)
    x = xpnet.to_device(np.random.default_rng(seed).standard_normal((n, width))
                        .astype(np.float32), dev)
    out = []
    for layer in net.layers:
        x = layer.forward(x, False)
        if not isinstance(layer, xpnet.Affine):
            a = xpnet.asnumpy(x).ravel()
            if act == "sigmoid":
                dead = np.mean(np.abs(a - 0.5) > 0.49)
            else:
                dead = np.mean(a == 0)
            out.append({"values": a, "mean": float(a.mean()), "std": float(a.std()),
                        "dead_fraction": float(dead)})
    return out


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--iters", type=positive_int("--iters"), default=2000)
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=128)
    p.add_argument("--lr", type=positive_float("--lr"), default=0.01)
    p.add_argument("--samples", type=positive_int("--samples"), default=1000,
                   help="random inputs for the activation histograms")
    p.add_argument("--test-size", type=positive_int("--test-size"), default=None)
    args, dev = setup(p, argv, quick=dict(iters=20, samples=200, test_size=500))

    # -- part 1: activation histograms
    print("\nactivations of 5 layers x 100 units, %d random inputs" % args.samples)
    print("std = spread of the activations; dead = sigmoid within 0.01 of 0 or 1, ReLU == 0")
    print("%-8s %-9s " % ("act", "init") + " ".join("  layer%d std/dead " % (i + 1)
                                                     for i in range(5)))
    hist = {}
    for act in ACTIVATIONS:
        for label, init in INITS:
            st = activation_stats(act, init, args.samples, 5, 100, args.seed, dev)
            hist[(act, label)] = st
            print("%-8s %-9s " % (act, label) + " ".join(
                "  %7.4f / %5.1f%%  " % (s["std"], 100 * s["dead_fraction"]) for s in st))

    # -- part 2: training from each init
    (x_train, t_train), (x_test, t_test) = load_data(args)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    x_test, t_test = xpnet.to_device(x_test, dev), xpnet.to_device(t_test, dev)
    print("\ntraining MultiLayerNet 784-100x4-10, SGD lr %g, batch %d, %d iterations"
          % (args.lr, args.batch_size, args.iters))
    runs = {}
    for act in ACTIVATIONS:
        for label, init in INITS:
            net = xpnet.MultiLayerNet(784, [100] * 4, 10, activation=act, weight_init_std=init,
                                      seed=args.seed, device=dev)
            opt = xpnet.SGD(lr=args.lr)
            data = Batches(x_train, t_train, dev, seed=args.seed)
            losses = []
            for _ in range(args.iters):
                x, t = data.sample(args.batch_size)
                opt.update(net.params, net.gradient(x, t))
                losses.append(float(net.last_loss))
            runs[(act, label)] = (losses, net.accuracy(x_test, t_test))

    tail = max(1, min(100, args.iters // 10))
    print("\nafter %d iterations (loss: mean of the last %d):" % (args.iters, tail))
    figures = {"iters": args.iters, "samples": args.samples, "runs": {}}
    for (act, label), (losses, acc) in runs.items():
        fl = float(np.mean(losses[-tail:]))
        print("  %-8s %-9s final loss %.4f  test accuracy %.4f" % (act, label, fl, acc))
        figures["runs"]["%s/%s" % (act, label)] = {
            "final_loss": fl, "test_accuracy": acc, "loss": losses,
            "activation_std": [s["std"] for s in hist[(act, label)]],
            "activation_mean": [s["mean"] for s in hist[(act, label)]],
            "dead_fraction": [s["dead_fraction"] for s in hist[(act, label)]]}

    plt = pyplot()
    if plt is not None:
        rows = [(a, l) for a in ACTIVATIONS for l, _ in INITS]
        fig, axes = plt.subplots(len(rows), 5, figsize=(13, 2.1 * len(rows)), sharey="row")
        for r, key in enumerate(rows):
            # one x range per row, so shrinking activations show up as shrinking bars
            hi = 1.0 if key[0] == "sigmoid" else max(
                1e-6, max(float(np.percentile(s["values"], 99.5)) for s in hist[key]))
            for c, s in enumerate(hist[key]):
                ax = axes[r, c]
                v = s["values"]
                if key[0] == "relu":
                    v = v[v > 0]    # the ~50% exact zeros would dwarf the rest
                ax.hist(v, bins=30, range=(0, hi))
                if r == 0:
                    ax.set_title("layer %d" % (c + 1))
                if c == 0:
                    ax.set_ylabel("%s\n%s" % key, fontsize=9)
                ax.tick_params(labelsize=7)
        fig.suptitle("Activation histograms (5 layers x 100 units; ReLU zeros left out)")
        fig.tight_layout()
        save_figure(fig, args, NAME + "_hist.png")

        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, act in zip(axes, ACTIVATIONS):
            for label, _ in INITS:
                ax.plot(smooth(runs[(act, label)][0]), label="%s (test acc %.3f)"
                        % (label, runs[(act, label)][1]))
            ax.set_title("%s, SGD lr %g" % (act, args.lr))
            ax.set_xlabel("iterations")
            ax.legend()
        axes[0].set_ylabel("training loss (smoothed)")
        axes[0].set_ylim(0, 2.5)
        fig.tight_layout()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
