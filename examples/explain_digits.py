"""Look inside a trained SimpleConvNet: filters, feature maps, Grad-CAM, saliency, occlusion.

Chapter 7.6 of the book asks what a CNN looks at. This script trains the book's
SimpleConvNet (30 filters 5x5, weight init std 0.01, Adam lr 0.001, batch 100) on the
embedded MNIST sample, then draws every figure of `xpnet.explain` and `xpnet.viz`:

- the first-layer filters before and after training (noise turns into edge detectors);
- the feature maps of every layer for one test digit;
- Grad-CAM, saliency, SmoothGrad and occlusion maps over --images test digits;
- the test digits that excite one channel (--channel) of the ReLU after it most.

It checks the maps by numbers on --eval-images test digits:
- pointing: how often a map's peak lies on the digit (pixels > 0.3, dilated by 2),
  next to a random map and to the centre pixel (MNIST digits are centred);
- deletion: how much the predicted class's probability drops when the top 15% of
  pixels by each map are set to 0, next to a random 15%.

    python examples/explain_digits.py [--quick] [--epochs 10] [--device gpu] [--out DIR]
"""
import numpy as np

from _common import (add_trainer_options, load_data, make_parser, out_path, positive_float,
                     positive_int, save_results, setup, subset, train_with_trainer)
import xpnet
import xpnet.datasets
from xpnet import explain, viz
from xpnet.functions import softmax

NAME = "explain_digits"
METHODS = ("gradcam", "gradcam_relu", "saliency", "smoothgrad", "occlusion")


def predict_probs(net, x, batch=500):
    return np.concatenate([xpnet.asnumpy(softmax(net.predict(x[i:i + batch])))
                           for i in range(0, len(x), batch)])


def all_maps(net, x, args, batch=100):
    """Host (N, 28, 28) maps of every method, computed in batches; "gradcam_relu" is
    Grad-CAM at the ReLU after the convolution instead of the convolution itself."""
    out = {m: [] for m in METHODS}
    relu = explain.activation_layer(net)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        out["gradcam"].append(xpnet.asnumpy(explain.grad_cam(net, xb)))
        out["gradcam_relu"].append(xpnet.asnumpy(explain.grad_cam(net, xb, layer=relu)))
        out["saliency"].append(xpnet.asnumpy(explain.saliency(net, xb)))
        out["smoothgrad"].append(xpnet.asnumpy(explain.saliency(
            net, xb, smooth=args.smooth, noise=args.noise, seed=args.seed)))
        out["occlusion"].append(xpnet.asnumpy(explain.occlusion(net, xb, args.window,
                                                                 args.stride)))
    return {m: np.concatenate(v) for m, v in out.items()}


def deletion_drop(net, x, maps, p0, target, frac=0.15):
    """Mean drop of p(target) when the top `frac` pixels of each map are set to 0."""
    n = len(x)
    k = int(round(frac * x[0].size))
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")[:, :k]
    blank = x.reshape(n, -1).copy()
    np.put_along_axis(blank, order, 0.0, axis=1)
    p1 = predict_probs(net, blank.reshape(x.shape))
    return float((p0[np.arange(n), target] - p1[np.arange(n), target]).mean())


def main(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    add_trainer_options(p)
    p.set_defaults(dataset="mnist-sample", epochs=10)
    p.add_argument("--images", type=positive_int("--images"), default=16,
                   help="test digits drawn in the map figures")
    p.add_argument("--eval-images", type=positive_int("--eval-images"), default=500,
                   help="test digits for the pointing and deletion numbers")
    p.add_argument("--smooth", type=positive_int("--smooth"), default=20,
                   help="SmoothGrad samples")
    p.add_argument("--noise", type=positive_float("--noise"), default=0.15,
                   help="SmoothGrad noise, a fraction of each image's value range")
    p.add_argument("--window", type=positive_int("--window"), default=7,
                   help="occlusion window (pixels)")
    p.add_argument("--stride", type=positive_int("--stride"), default=3,
                   help="occlusion stride (pixels)")
    p.add_argument("--channel", type=int, default=0,
                   help="channel of the ReLU after the convolution whose top-activating "
                        "digits are drawn")
    args, dev = setup(p, argv, quick=dict(epochs=1, train_size=1000, eval_size=200,
                                          images=8, eval_images=100, smooth=4))

    (x_train, t_train), (x_test, t_test) = load_data(args, flatten=False)
    names = xpnet.datasets.class_names(args.dataset_used)
    x_train, t_train = subset(x_train, t_train, args.train_size)
    x_test, t_test = subset(x_test, t_test, args.test_size)
    net = xpnet.SimpleConvNet(seed=args.seed, device=dev)        # the book's settings
    w_before = xpnet.asnumpy(net.params["W1"]).copy()
    if not 0 <= args.channel < w_before.shape[0]:
        p.error("--channel must be in 0..%d (the net has %d filters), got %d"
                % (w_before.shape[0] - 1, w_before.shape[0], args.channel))
    print("SimpleConvNet, %d training images, Adam lr %g, batch %d, %d epochs"
          % (len(x_train), args.lr, args.batch_size, args.epochs))
    ne = min(args.eval_size, len(x_train), len(x_test))
    trainer, history, losses = train_with_trainer(net, args, x_train, t_train, x_test, t_test,
                                                  ne)
    probs = predict_probs(net, x_test)
    pred = probs.argmax(axis=1)
    acc = float((pred == t_test).mean())
    print("test accuracy %.4f (%d test images)" % (acc, len(x_test)))
    print("layers: %s" % ", ".join(explain.layer_names(net)))
    cam_layer = explain.default_cam_layer(net)

    # ---- numbers: pointing and deletion on the first --eval-images test digits
    ne = min(args.eval_images, len(x_test))
    xe, pe, te = x_test[:ne], probs[:ne], pred[:ne]
    maps = all_maps(net, xe, args)
    mask = xpnet.asnumpy(explain.stroke_mask(xe))
    rng = np.random.default_rng(args.seed)
    random_maps = rng.random(mask.shape)
    pointing = {m: float(explain.pointing_hits(maps[m], mask).mean()) for m in METHODS}
    pointing["random"] = float(explain.pointing_hits(random_maps, mask).mean())
    pointing["centre"] = float(mask[:, 14, 14].mean())
    deletion = {m: deletion_drop(net, xe, maps[m], pe, te) for m in METHODS}
    deletion["random"] = float(np.mean([deletion_drop(net, xe, rng.random(mask.shape), pe, te)
                                        for _ in range(3)]))
    print("on %d test digits (the digit: pixels > 0.3 dilated by 2, %.0f%% of the image)"
          % (ne, 100 * mask.mean()))
    print("  pointing: how often the map's peak lies on the digit")
    print("  deletion: mean drop of p(predicted) when its top 15% pixels are set to 0")
    print("  %-12s %9s %9s" % ("map", "pointing", "deletion"))
    for k, v in pointing.items():
        print("  %-12s %9.3f %9s" % (k, v, "%.3f" % deletion[k] if k in deletion else "-"))
    figures = {"test_accuracy": acc, "test_size": int(len(x_test)), "epochs": args.epochs,
               "train_size": len(x_train), "test_acc": trainer.test_acc_list, "loss": losses,
               "layers": explain.layer_names(net), "cam_layer": cam_layer,
               "eval_images": ne, "stroke_fraction": float(mask.mean()),
               "pointing": pointing, "deletion": deletion,
               "w1_std_before": float(w_before.std()),
               "w1_std_after": float(xpnet.asnumpy(net.params["W1"]).std()), "files": []}

    ok, why = viz.have_matplotlib()
    if not ok:
        print("no PNG is written: %s" % why)
        save_results(args, NAME, figures)
        return

    def png(name):
        figures["files"].append(name)
        return out_path(args, name)

    n = min(args.images, ne)
    xs = x_test[:n]
    titles = ["%s\u2192%s %.2f" % (names[t_test[i]][:5], names[pred[i]][:5], probs[i, pred[i]])
              for i in range(n)]
    path = png(NAME + ".png")
    viz.plot_heatmaps(xs, maps["gradcam"][:n], titles, path=path, label="Grad-CAM (relative)",
                      title="Grad-CAM at %s (true\u2192predicted, probability)" % cam_layer)
    print("saved %s" % path)
    for m, label, title in (
            ("saliency", "|gradient| (relative)", "saliency: |d score / d pixel|"),
            ("smoothgrad", "|gradient| (relative)", "SmoothGrad, %d samples, noise %.2f"
             % (args.smooth, args.noise)),
            ("occlusion", "drop in probability", "occlusion, %dx%d window, stride %d"
             % (args.window, args.window, args.stride))):
        path = png("%s_%s.png" % (NAME, m))
        viz.plot_heatmaps(xs, maps[m][:n], titles, path=path, label=label, title=title)
        print("saved %s" % path)
    path = png(NAME + "_filters.png")
    viz.plot_filters_before_after(w_before, net.params["W1"], path=path, ncols=10,
                                  labels=("before training", "after %d epoch(s)" % args.epochs))
    print("saved %s" % path)
    path = png(NAME + "_feature_maps.png")
    viz.plot_feature_maps(explain.feature_maps(net, x_test[:1]), path=path, image=x_test[0],
                          title="feature maps of one test digit (strongest channels first)")
    print("saved %s" % path)
    act_layer = explain.activation_layer(net)
    idx, scores = explain.top_activating(net, x_test, act_layer, args.channel)
    act = xpnet.asnumpy(explain.feature_maps(net, x_test[idx], act_layer)[act_layer])
    path = png(NAME + "_top.png")
    viz.plot_top_activating(x_test[idx], scores, path=path, maps=act[:, args.channel],
                            layer=act_layer, channel=args.channel)
    print("saved %s" % path)
    figures["top_activating"] = {"layer": act_layer, "channel": args.channel, "indices": idx,
                                 "scores": scores}
    save_results(args, NAME, figures)


if __name__ == "__main__":
    main()
