"""Train SimpleConvNet and look at its first-layer filters before and after (book ch. 7).

The book's ``train_convnet.py`` + ``visualize_filter.py``: SimpleConvNet (conv 30 filters
5x5 - ReLU - max pool 2x2 - affine 100 - ReLU - affine 10), weight init std 0.01, Adam lr
0.001, batch 100, 20 epochs; train/test accuracy is checked on 1,000 images after every
epoch, the full test set at the end. The 30 filters of the first layer are drawn before
training (noise) and after (edge and blob detectors). The trained parameters are saved
as ``simple_convnet_params.npz`` (+ .json) in --out; ``half_float_inference.py --params``
can load them.

    python examples/train_simple_convnet.py [--quick] [--epochs 20] [--device gpu]
"""

import numpy as np

from _common import (add_trainer_options, load_data, make_parser, out_path, train_with_trainer,
                     pyplot, save_figure, save_results, setup, subset)
import xpnet

NAME = "train_simple_convnet"


def mosaic(W, cols=6, gap=1):
    """(FN, C, FH, FW) filters (first channel) -> one image, each tile scaled to [0, 1]."""
    W = np.asarray(W, dtype=np.float64)[:, 0]
    fn, fh, fw = W.shape
    rows = -(-fn // cols)
    img = np.full((rows * (fh + gap) - gap, cols * (fw + gap) - gap), np.nan)
    for i in range(fn):
        f = W[i]
        lo, hi = f.min(), f.max()
        f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
        r, c = divmod(i, cols)
        img[r * (fh + gap):r * (fh + gap) + fh, c * (fw + gap):c * (fw + gap) + fw] = f
    return img


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    add_trainer_options(p)
    args, dev = setup(p, argv, quick=dict(epochs=1, train_size=300, eval_size=200, test_size=500))

    (x_train, t_train), (x_test, t_test) = load_data(args, flatten=False)
    x_train, t_train = subset(x_train, t_train, args.train_size)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    net = xpnet.SimpleConvNet(input_dim=(1, 28, 28),
                              conv_param={"filter_num": 30, "filter_size": 5, "pad": 0,
                                          "stride": 1},
                              hidden_size=100, output_size=10, weight_init_std=0.01,
                              seed=args.seed, device=dev)
    w_before = xpnet.asnumpy(net.params["W1"]).copy()
    ne = min(args.eval_size, len(x_train), len(x_test))
    print("SimpleConvNet, %d training images, Adam lr %g, batch %d, %d epochs"
          % (len(x_train), args.lr, args.batch_size, args.epochs))
    # The book trains this net with its Trainer; xpnet's adds checkpoints and --resume.
    trainer, history, losses = train_with_trainer(net, args, x_train, t_train, x_test, t_test, ne)
    train_acc, test_acc = trainer.train_acc_list, trainer.test_acc_list
    final = history["final_test_acc"]
    print("test accuracy %.4f (%d test images)" % (final, len(x_test)))
    params_path = net.save_params(out_path(args, "simple_convnet_params.npz"),
                                  {"dataset": args.dataset_used, "epochs": args.epochs})
    print("saved %s" % params_path)
    w_after = xpnet.asnumpy(net.params["W1"])
    print("first-layer filters: std %.4f before, %.4f after training"
          % (w_before.std(), w_after.std()))
    figures = {"test_accuracy": final, "test_size": int(len(x_test)), "epochs": args.epochs,
               "train_size": len(x_train), "train_acc": train_acc, "test_acc": test_acc,
               "loss": losses, "params_file": params_path,
               "w1_std_before": float(w_before.std()), "w1_std_after": float(w_after.std())}

    plt = pyplot()
    if plt is not None:
        fig = plt.figure(figsize=(12, 4))
        gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1.1])
        for k, (w, title) in enumerate(((w_before, "filters before training"),
                                        (w_after, "after %d epoch(s)" % args.epochs))):
            ax = fig.add_subplot(gs[0, k])
            ax.imshow(mosaic(w), cmap="gray_r", interpolation="nearest")
            ax.set_title(title)
            ax.axis("off")
        ax = fig.add_subplot(gs[0, 2])
        ep = np.arange(1, len(train_acc) + 1)
        ax.plot(ep, train_acc, marker="o", label="train")
        ax.plot(ep, test_acc, marker="s", label="test")
        ax.set_xlabel("epochs")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title("test accuracy %.3f" % final)
        ax.legend(loc="lower right")
        fig.tight_layout()
        save_figure(fig, args, NAME + ".png")
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
