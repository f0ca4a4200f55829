"""With and without Batch Normalization, over a range of initial weight scales (book ch. 6.3).

The book's ``batch_norm_test.py``: 1,000 training images, MultiLayerNetExtend
784-100x5-10 (ReLU) with and without BatchNorm, SGD lr 0.01, batch 100, 20 epochs, for
16 weight scales from 1 down to 1e-4 (log spaced). The training accuracy after every
epoch is recorded; BatchNorm learns fast at nearly every scale, the plain net only near
the right one. Batches are drawn with replacement as in the book (10 per epoch).

    python examples/batch_norm_compare.py [--quick] [--scales 16] [--device gpu]
"""
import math

import numpy as np

from _common import (Batches, load_data, make_parser, positive_float, positive_int, pyplot,
                     save_figure, save_results, setup, subset)
import xpnet

NAME = "batch_norm_compare"


def train(args, dev, w, use_bn, x_train, t_train, x_test, t_test):
    net = xpnet.MultiLayerNetExtend(784, [100] * 5, 10, weight_init_std=float(w),
                                    use_batchnorm=use_bn, seed=args.seed, device=dev)
    opt = xpnet.SGD(lr=args.lr)
    data = Batches(x_train, t_train, dev, seed=args.seed)
    iters_per_epoch = max(1, len(x_train) // args.batch_size)
    # A plain net started at a large scale can overflow float32 and diverge: that is
    # part of the result (reported as "diverged"), not an error worth a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        accs = [net.accuracy(data.x, data.t)]
        for _ in range(args.epochs):
            for _ in range(iters_per_epoch):
                x, t = data.sample(args.batch_size)
                opt.update(net.params, net.gradient(x, t))
            accs.append(net.accuracy(data.x, data.t))
        loss = float(net.loss(data.x, data.t))
        return accs, net.accuracy(x_test, t_test), loss


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--train-size", type=positive_int("--train-size"), default=1000)
    p.add_argument("--epochs", type=positive_int("--epochs"), default=20)
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=100)
    p.add_argument("--lr", type=positive_float("--lr"), default=0.01)
    p.add_argument("--scales", type=positive_int("--scales"), default=16,
                   help="how many weight scales, log spaced from 1 to 1e-4")
    p.add_argument("--test-size", type=positive_int("--test-size"), default=None)
    args, dev = setup(p, argv, quick=dict(train_size=200, epochs=2, scales=3, test_size=500))

    (x_train, t_train), (x_test, t_test) = load_data(args)
    x_train, t_train = subset(x_train, t_train, args.train_size)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    x_test, t_test = xpnet.to_device(x_test, dev), xpnet.to_device(t_test, dev)
    scales = np.logspace(0, -4, num=args.scales)
    print("MultiLayerNetExtend 784-100x5-10, %d training images, SGD lr %g, batch %d, "
          "%d epochs" % (len(x_train), args.lr, args.batch_size, args.epochs))
    print("%-10s %-24s %-24s" % ("w scale", "train acc (no BN / BN)", "test acc (no BN / BN)"))
    results = []
    for w in scales:
        plain = train(args, dev, w, False, x_train, t_train, x_test, t_test)
        bn = train(args, dev, w, True, x_train, t_train, x_test, t_test)
        results.append({"weight_scale": float(w),
                        "plain": {"train_acc": plain[0], "test_acc": plain[1],
                                  "final_loss": plain[2]},
                        "batchnorm": {"train_acc": bn[0], "test_acc": bn[1],
                                      "final_loss": bn[2]}})
        div = [n for n, r in (("no BN", plain), ("BN", bn)) if not math.isfinite(r[2])]
        print("%-10.3g %-24s %-24s%s" % (w, "%.3f / %.3f" % (plain[0][-1], bn[0][-1]),
                                         "%.3f / %.3f" % (plain[1], bn[1]),
                                         " (diverged: %s)" % ", ".join(div) if div else ""))
    wins = sum(r["batchnorm"]["train_acc"][-1] > r["plain"]["train_acc"][-1] for r in results)
    mean_plain = float(np.mean([r["plain"]["train_acc"][-1] for r in results]))
    mean_bn = float(np.mean([r["batchnorm"]["train_acc"][-1] for r in results]))
    print("BatchNorm ahead at %d of %d scales; mean final train accuracy %.3f without, %.3f with"
          % (wins, len(results), mean_plain, mean_bn))
    figures = {"epochs": args.epochs, "train_size": len(x_train), "bn_wins": wins,
               "mean_final_train_acc_plain": mean_plain, "mean_final_train_acc_bn": mean_bn,
               "scales": results}

    plt = pyplot()
    if plt is not None:
        cols = min(4, len(results))
        rows = math.ceil(len(results) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False,
                                 sharex=True, sharey=True)
        for ax in axes.ravel()[len(results):]:
            ax.axis("off")
        for ax, r in zip(axes.ravel(), results):
            ax.plot(r["batchnorm"]["train_acc"], label="Batch Normalization")
            ax.plot(r["plain"]["train_acc"], "--", label="Normal (without BN)")
            ax.set_title("W: %.3g" % r["weight_scale"], fontsize=9)
            ax.set_ylim(0, 1)
        axes[0, 0].legend(fontsize=7, loc="lower right")
        fig.supxlabel("epochs")
        fig.supylabel("training accuracy")
        fig.tight_layout()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
