"""Overfitting on 300 images, and what weight decay and Dropout do about it (book ch. 6.4).

The book's ``overfit_weight_decay.py`` and ``overfit_dropout.py``: a 7-layer net
(MultiLayerNetExtend 784-100x6-10, ReLU, He init) trained on only 300 images with SGD
(lr 0.01, batch 100) for 201 epochs, three ways: no regularization, weight decay
lambda=0.1, Dropout ratio 0.2. Train and test accuracy are measured after every epoch;
the gap between them is the overfitting.

    python examples/overfit_regularization.py [--quick] [--epochs 201] [--device gpu]
"""
import numpy as np

from _common import (Batches, load_data, make_parser, positive_float, positive_int, pyplot,
                     save_figure, save_results, setup, subset)
import xpnet

NAME = "overfit_regularization"


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--train-size", type=positive_int("--train-size"), default=300)
    p.add_argument("--epochs", type=positive_int("--epochs"), default=201)
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=100)
    p.add_argument("--lr", type=positive_float("--lr"), default=0.01)
    p.add_argument("--weight-decay", type=positive_float("--weight-decay"), default=0.1)
    p.add_argument("--dropout", type=positive_float("--dropout"), default=0.2)
    p.add_argument("--test-size", type=positive_int("--test-size"), default=None,
                   help="test images evaluated after every epoch (default: all)")
    args, dev = setup(p, argv, quick=dict(epochs=3, test_size=500))
    if not args.dropout < 1:
        p.error("--dropout must be in (0, 1), got %r" % args.dropout)

    (x_train, t_train), (x_test, t_test) = load_data(args)
    x_train, t_train = subset(x_train, t_train, args.train_size)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    x_test, t_test = xpnet.to_device(x_test, dev), xpnet.to_device(t_test, dev)
    configs = {
        "none": {},
        "weight decay %g" % args.weight_decay: {"weight_decay_lambda": args.weight_decay},
        "dropout %g" % args.dropout: {"use_dropout": True, "dropout_ration": args.dropout},
    }
    iters_per_epoch = max(1, len(x_train) // args.batch_size)
    print("MultiLayerNetExtend 784-100x6-10, %d training / %d test images, SGD lr %g, "
          "batch %d, %d epochs" % (len(x_train), len(x_test), args.lr, args.batch_size,
                                    args.epochs))
    curves = {}
    for name, kw in configs.items():
        net = xpnet.MultiLayerNetExtend(784, [100] * 6, 10, seed=args.seed, device=dev, **kw)
        opt = xpnet.SGD(lr=args.lr)
        data = Batches(x_train, t_train, dev, seed=args.seed)
        tr, te = [], []
        for epoch in range(args.epochs):
            for _ in range(iters_per_epoch):
                x, t = data.sample(args.batch_size)
                opt.update(net.params, net.gradient(x, t))
            tr.append(net.accuracy(data.x, data.t))
            te.append(net.accuracy(x_test, t_test))
            if epoch % max(1, args.epochs // 5) == 0 or epoch == args.epochs - 1:
                print("  %-18s epoch %3d  train acc %.4f  test acc %.4f" % (name, epoch,
                                                                          tr[-1], te[-1]))
        curves[name] = (tr, te)

    print("\nafter %d epochs:" % args.epochs)
    figures = {"epochs": args.epochs, "train_size": len(x_train), "test_size": int(len(x_test)),
               "runs": {}}
    for name, (tr, te) in curves.items():
        gap = tr[-1] - te[-1]
        print("  %-18s train acc %.4f  test acc %.4f  gap %.4f" % (name, tr[-1], te[-1], gap))
        figures["runs"][name] = {"train_acc": tr, "test_acc": te, "final_train_acc": tr[-1],
                                 "final_test_acc": te[-1], "gap": gap}

    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), sharey=True)
        for ax, (name, (tr, te)) in zip(axes, curves.items()):
            ep = np.arange(len(tr))
            ax.plot(ep, tr, marker="o", markevery=max(1, len(ep) // 10), label="train")
            ax.plot(ep, te, marker="s", markevery=max(1, len(ep) // 10), label="test")
            ax.set_title("%s (gap %.2f)" % (name, tr[-1] - te[-1]))
            ax.set_xlabel("epochs")
            ax.set_ylim(0, 1.0)
            ax.legend(loc="lower right")
        axes[0].set_ylabel("accuracy")
        fig.suptitle("%d training images, %s" % (len(x_train), args.dataset_used))
        fig.tight_layout()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
