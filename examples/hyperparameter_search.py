"""Random search for the learning rate and weight decay on a validation split (book ch. 6.5).

The book's ``hyperparameter_optimization.py``: 500 training images are shuffled and 20%
of them are held out as validation data (the test set is never looked at); each trial
draws lr = 10^U(-6, -2) and weight decay = 10^U(-8, -4), trains MultiLayerNet
784-100x6-10 with SGD (batch 100) for 50 epochs and records the validation accuracy.
Prints the best trials and plots their validation (solid) and training (dashed) curves
next to a map of every trial in the (lr, weight decay) plane.

    python examples/hyperparameter_search.py [--quick] [--trials 100] [--device gpu]
"""
import math

import numpy as np

from _common import (Batches, load_data, make_parser, positive_int, pyplot, save_figure,
                     save_results, setup)
import xpnet

NAME = "hyperparameter_search"


def log_range(s):
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise ValueError("expected two exponents LO,HI like -6,-2, got %r" % s) from None
    if not lo < hi:
        raise ValueError("expected LO < HI, got %r" % s)
    return lo, hi


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=positive_int("--trials"), default=100)
    p.add_argument("--epochs", type=positive_int("--epochs"), default=50)
    p.add_argument("--train-size", type=positive_int("--train-size"), default=500,
                   help="images used, validation split included")
    p.add_argument("--val-rate", type=float, default=0.2, help="fraction held out")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=100)
    p.add_argument("--lr-range", default="-6,-2", help="log10 range of the learning rate")
    p.add_argument("--wd-range", default="-8,-4", help="log10 range of the weight decay")
    p.add_argument("--top", type=positive_int("--top"), default=20, help="trials shown")
    args, dev = setup(p, argv, quick=dict(trials=4, epochs=2, top=4))
    if not 0 < args.val_rate < 1:
        p.error("--val-rate must be in (0, 1), got %r" % args.val_rate)
    try:
        lr_lo, lr_hi = log_range(args.lr_range)
    except ValueError as e:
        p.error("--lr-range: %s" % e)
    try:
        wd_lo, wd_hi = log_range(args.wd_range)
    except ValueError as e:
        p.error("--wd-range: %s" % e)

    (x_all, t_all), _ = load_data(args)     # the test split is deliberately unused
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(x_all))[:args.train_size]
    n_val = max(1, int(round(len(idx) * args.val_rate)))
    if n_val >= len(idx):
        p.error("--val-rate %g leaves no training images out of %d" % (args.val_rate, len(idx)))
    x_val, t_val = x_all[idx[:n_val]], t_all[idx[:n_val]]
    x_train, t_train = x_all[idx[n_val:]], t_all[idx[n_val:]]
    x_val, t_val = xpnet.to_device(x_val, dev), xpnet.to_device(t_val, dev)
    print("%d trials: %d training / %d validation images (from the training split), "
          "%d epochs, batch %d" % (args.trials, len(x_train), n_val, args.epochs,
                                   args.batch_size))
    print("lr = 10^U(%g, %g), weight decay = 10^U(%g, %g)" % (lr_lo, lr_hi, wd_lo, wd_hi))
    iters_per_epoch = max(1, len(x_train) // args.batch_size)
    trials = []
    for i in range(args.trials):
        lr = 10 ** rng.uniform(lr_lo, lr_hi)
        wd = 10 ** rng.uniform(wd_lo, wd_hi)
        net = xpnet.MultiLayerNet(784, [100] * 6, 10, weight_decay_lambda=wd,
                                  seed=args.seed + 1 + i, device=dev)
        opt = xpnet.SGD(lr=lr)
        data = Batches(x_train, t_train, dev, seed=args.seed + 1 + i)
        tr, va = [], []
        for _ in range(args.epochs):
            for _ in range(iters_per_epoch):
                x, t = data.sample(args.batch_size)
                opt.update(net.params, net.gradient(x, t))
            tr.append(net.accuracy(data.x, data.t))
            va.append(net.accuracy(x_val, t_val))
        trials.append({"lr": lr, "weight_decay": wd, "val_acc": va[-1], "train_acc": tr[-1],
                       "val_curve": va, "train_curve": tr})
        print("  trial %3d  val acc %.3f  lr %.3e  weight decay %.3e" % (i + 1, va[-1], lr, wd))

    ranked = sorted(trials, key=lambda r: r["val_acc"], reverse=True)
    top = ranked[:args.top]
    print("\n=========== best %d by validation accuracy ===========" % len(top))
    for k, r in enumerate(top):
        print("Best-%-3d val acc %.3f | lr %.3e, weight decay %.3e" % (k + 1, r["val_acc"],
                                                                      r["lr"], r["weight_decay"]))
    best5 = ranked[:min(5, len(ranked))]
    lr_span = (min(r["lr"] for r in best5), max(r["lr"] for r in best5))
    wd_span = (min(r["weight_decay"] for r in best5), max(r["weight_decay"] for r in best5))
    print("the best %d span lr %.2e..%.2e and weight decay %.2e..%.2e"
          % (len(best5), lr_span[0], lr_span[1], wd_span[0], wd_span[1]))
    figures = {"trials": args.trials, "epochs": args.epochs, "train_size": len(x_train),
               "val_size": n_val, "best": {k: ranked[0][k] for k in
                                           ("lr", "weight_decay", "val_acc", "train_acc")},
               "best5_lr_span": lr_span, "best5_wd_span": wd_span, "ranked": ranked}

    plt = pyplot()
    if plt is not None:
        cols = 5 if len(top) > 4 else len(top)
        rows = math.ceil(len(top) / cols)
        fig = plt.figure(figsize=(2.4 * cols + 5, max(3.5, 1.9 * rows)))
        gs = fig.add_gridspec(rows, cols + 2)
        for k, r in enumerate(top):
            ax = fig.add_subplot(gs[k // cols, k % cols])
            ax.plot(r["val_curve"])
            ax.plot(r["train_curve"], "--")
            ax.set_ylim(0, 1)
            ax.set_title("Best-%d (%.2f)" % (k + 1, r["val_acc"]), fontsize=8)
            ax.set_xticks([])
            if k % cols:
                ax.set_yticks([])
            ax.tick_params(labelsize=7)
        ax = fig.add_subplot(gs[:, cols:])
        sc = ax.scatter([r["lr"] for r in trials], [r["weight_decay"] for r in trials],
                        c=[r["val_acc"] for r in trials], cmap="viridis", vmin=0, vmax=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("weight decay")
        ax.set_title("all trials: validation accuracy", fontsize=9)
        fig.colorbar(sc, ax=ax)
        fig.tight_layout()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
