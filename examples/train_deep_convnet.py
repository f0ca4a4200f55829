"""Train DeepConvNet, report test accuracy and show the misclassified images (book ch. 8).

The book's ``train_deepnet.py`` + ``misclassified_mnist.py``: DeepConvNet (six 3x3
conv layers with He init, three max pools, affine 50 - Dropout 0.5 - affine 10 - Dropout
0.5), Adam lr 0.001, batch 100, 20 epochs (about 99.4% on MNIST in the book). Prints
the test accuracy, the most frequent confusions, and draws a grid of misclassified
test images labelled "predicted (true)". Parameters go to ``deep_convnet_params.npz``.

This is slow on a CPU (several minutes per epoch on 60,000 images): use a GPU
(``--device gpu``) or ``--train-size``/``--epochs`` for a short run.

    python examples/train_deep_convnet.py [--quick] [--epochs 20] [--device gpu]
"""
import collections

import numpy as np

from _common import (add_trainer_options, load_data, make_parser, out_path, positive_int,
                     train_with_trainer,
                     pyplot, save_figure, save_results, setup, subset)
import xpnet
import xpnet.datasets

NAME = "train_deep_convnet"


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    add_trainer_options(p)
    p.add_argument("--show", type=positive_int("--show"), default=20,
                   help="misclassified images drawn")
    args, dev = setup(p, argv, quick=dict(epochs=1, train_size=200, eval_size=100, test_size=200))

    (x_train, t_train), (x_test, t_test) = load_data(args, flatten=False)
    names = xpnet.datasets.class_names(args.dataset_used)
    x_train, t_train = subset(x_train, t_train, args.train_size)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    xd_test = xpnet.to_device(x_test, dev)
    net = xpnet.DeepConvNet(seed=args.seed, device=dev)
    ne = min(args.eval_size, len(x_train), len(x_test))
    print("DeepConvNet, %d training images, Adam lr %g, batch %d, %d epochs"
          % (len(x_train), args.lr, args.batch_size, args.epochs))
    # The book trains this net with its Trainer; xpnet's adds checkpoints and --resume.
    trainer, history, losses = train_with_trainer(net, args, x_train, t_train, x_test, t_test, ne)
    train_acc, test_acc = trainer.train_acc_list, trainer.test_acc_list
    params_path = net.save_params(out_path(args, "deep_convnet_params.npz"),
                                  {"dataset": args.dataset_used, "epochs": args.epochs})
    print("saved %s" % params_path)

    # predictions for the whole test set, in batches, back on the host
    pred = np.concatenate([xpnet.asnumpy(net.predict(xd_test[i:i + 100]).argmax(axis=1))
                           for i in range(0, len(x_test), 100)])
    wrong = np.flatnonzero(pred != t_test)
    acc = 1.0 - len(wrong) / len(x_test)
    print("test accuracy %.4f (%d test images, %d misclassified)"
          % (acc, len(x_test), len(wrong)))
    pairs = collections.Counter(zip(t_test[wrong].tolist(), pred[wrong].tolist()))
    top = pairs.most_common(5)
    if top:
        print("most frequent confusions (true -> predicted):")
        for (a, b), n in top:
            print("  %-12s -> %-12s %d" % (names[a], names[b], n))
    figures = {"test_accuracy": acc, "trainer_test_accuracy": history["final_test_acc"],
               "test_size": int(len(x_test)), "misclassified": len(wrong),
               "epochs": args.epochs, "train_size": len(x_train), "train_acc": train_acc,
               "test_acc": test_acc, "loss": losses, "params_file": params_path,
               "confusions": [{"true": names[a], "predicted": names[b], "count": n}
                              for (a, b), n in top]}

    plt = pyplot()
    if plt is not None:
        show = wrong[:args.show]
        cols = 5
        rows = max(1, -(-len(show) // cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows + 0.6),
                                 squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, i in zip(axes.ravel(), show):
            ax.imshow(x_test[i].reshape(28, 28), cmap="gray_r", interpolation="nearest")
            ax.set_title("%s\n(%s)" % (names[pred[i]], names[t_test[i]]), fontsize=8)
        fig.suptitle("DeepConvNet on %s: test accuracy %.4f, %d misclassified; "
                     "predicted (true)" % (args.dataset_used, acc, len(wrong)), fontsize=10)
        fig.tight_layout()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
