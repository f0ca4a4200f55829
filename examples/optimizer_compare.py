"""SGD, Momentum, AdaGrad and Adam training the same 5-layer net (book ch. 6.1).

The book's ``optimizer_compare_mnist.py``: MultiLayerNet 784-100-100-100-100-10 (ReLU, He
init), mini-batches of 128 drawn with replacement, 2,000 iterations per optimizer, the
same initial weights for all four. Prints the loss every 100 iterations, then the final
(smoothed) training loss and test accuracy per optimizer; plots the loss curves.

    python examples/optimizer_compare.py [--quick] [--device gpu] [--out DIR]
"""
import numpy as np

from _common import (Batches, load_data, make_parser, positive_float, positive_int, pyplot,
                     save_figure, save_results, setup, smooth, subset)
import xpnet

NAME = "optimizer_compare"


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--iters", type=positive_int("--iters"), default=2000)
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=128)
    p.add_argument("--hidden", type=positive_int("--hidden"), nargs="+", default=[100] * 4,
                   help="hidden layer sizes")
    p.add_argument("--lr-sgd", type=positive_float("--lr-sgd"), default=0.01)
    p.add_argument("--lr-adam", type=positive_float("--lr-adam"), default=0.001)
    p.add_argument("--test-size", type=positive_int("--test-size"), default=None,
                   help="test images for the final accuracy (default: all)")
    args, dev = setup(p, argv, quick=dict(iters=30, test_size=500))

    (x_train, t_train), (x_test, t_test) = load_data(args)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    x_test, t_test = xpnet.to_device(x_test, dev), xpnet.to_device(t_test, dev)

    optimizers = {
        "SGD": lambda: xpnet.SGD(lr=args.lr_sgd),
        "Momentum": lambda: xpnet.Momentum(lr=args.lr_sgd),
        "AdaGrad": lambda: xpnet.AdaGrad(lr=args.lr_sgd),
        "Adam": lambda: xpnet.Adam(lr=args.lr_adam),
    }
    print("net: MultiLayerNet 784-%s-10, batch %d, %d iterations per optimizer"
          % ("-".join(map(str, args.hidden)), args.batch_size, args.iters))
    nets, opts, losses, data = {}, {}, {}, {}
    for k, make in optimizers.items():
        # seed=: every optimizer starts from the same weights
        nets[k] = xpnet.MultiLayerNet(784, args.hidden, 10, weight_init_std="relu",
                                      seed=args.seed, device=dev)
        opts[k] = make()
        losses[k] = []
        data[k] = Batches(x_train, t_train, dev, seed=args.seed)   # same batches for all

    every = max(1, min(100, args.iters // 5))
    for i in range(args.iters):
        for k in optimizers:
            x, t = data[k].sample(args.batch_size)
            grads = nets[k].gradient(x, t)
            opts[k].update(nets[k].params, grads)
            losses[k].append(float(nets[k].last_loss))
        if i % every == 0 or i == args.iters - 1:
            print("iteration %5d  " % i + "  ".join("%s %.4f" % (k, losses[k][-1])
                                                   for k in optimizers))

    tail = max(1, min(100, args.iters // 10))
    figures = {}
    print("\nfinal training loss (mean of the last %d iterations) and test accuracy:" % tail)
    for k in optimizers:
        fl = float(np.mean(losses[k][-tail:]))
        acc = nets[k].accuracy(x_test, t_test)
        figures[k] = {"final_loss": fl, "test_accuracy": acc, "loss": losses[k]}
        print("  %-8s final loss %.4f  test accuracy %.4f" % (k, fl, acc))
    best = min(optimizers, key=lambda k: figures[k]["final_loss"])
    print("lowest final loss: %s" % best)
    summary = {"best": best, "iters": args.iters, "batch_size": args.batch_size,
               "test_size": int(len(x_test)), "optimizers": figures}

    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        markers = {"SGD": "o", "Momentum": "x", "AdaGrad": "s", "Adam": "D"}
        for k in optimizers:
            y = smooth(losses[k])
            ax.plot(np.arange(len(y)), y, marker=markers[k], markevery=max(1, len(y) // 20),
                    label=k)
        ax.set_xlabel("iterations")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_ylim(0, max(1.0, min(2.5, max(max(smooth(v)) for v in losses.values()))))
        ax.set_title("Optimizers on %s (batch %d)" % (args.dataset_used, args.batch_size))
        ax.legend()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, summary)


if __name__ == "__main__":
    main()
