"""`xpnet explain`: what a trained net looks at (Grad-CAM, saliency, occlusion, feature
maps), drawn for the first images of a data set split; see docs/explain.md."""
import argparse
import json
import os

import numpy as np

from .. import backend
from .common import (DATASETS, DEVICE_HELP, THREADS_HELP, CLIError, chosen_device,
                     dataset_of, device_arg,
                     load_data, lower, nonneg_int, params_file, positive_float, positive_int,
                     say, set_threads)

EXPLAIN_METHODS = ("gradcam", "saliency", "occlusion", "maps")


def _explain_target(text):
    """An argparse type: 'pred', 'true' or a class index."""
    if text.lower() in ("pred", "true"):
        return text.lower()
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError("expected 'pred', 'true' or a class index >= 0, "
                                         "got %r" % text)
    return v


def add_parser(sub):
    x = sub.add_parser("explain", help="what a trained net looks at: Grad-CAM, saliency, "
                       "occlusion, feature maps",
                       description="Draw what a trained network looks at for the first "
                       "--images images of a data set split, and write the PNGs and a JSON of "
                       "what was drawn (METHOD.json) to --out. See docs/explain.md.")
    x.add_argument("params", metavar="RUN_OR_PARAMS",
                   help="a run folder written by xpnet train (it holds params.npz), or a "
                   "parameter file")
    x.add_argument("--method", type=lower, choices=EXPLAIN_METHODS, default="gradcam",
                   help="gradcam (default), saliency, occlusion, or maps (feature maps of "
                   "every layer, top-activating images of --channel, filters before/after)")
    x.add_argument("--images", type=positive_int, default=16, metavar="N",
                   help="explain the first N images of the split (default 16)")
    x.add_argument("--layer", default=None, metavar="NAME",
                   help="layer by name, such as Relu2 (gradcam: default the last convolution; "
                   "maps: default every layer). A wrong name lists the valid ones")
    x.add_argument("--target", type=_explain_target, default="pred",
                   help="class to explain: pred (the predicted class, default), true (the "
                   "label) or a class index")
    x.add_argument("--smooth", type=nonneg_int, default=0, metavar="N",
                   help="saliency: SmoothGrad over N noisy copies (default 0: plain gradient)")
    x.add_argument("--noise", type=positive_float, default=0.15,
                   help="saliency: SmoothGrad noise, a fraction of each image's value range "
                   "(default 0.15)")
    x.add_argument("--window", type=positive_int, default=7,
                   help="occlusion: square window in pixels (default 7)")
    x.add_argument("--stride", type=positive_int, default=3,
                   help="occlusion: window step in pixels (default 3)")
    x.add_argument("--channel", type=nonneg_int, default=0,
                   help="maps: the channel of --layer (default: the activation after the last "
                   "convolution) whose top-activating images are drawn (default 0)")
    x.add_argument("--top", type=positive_int, default=9, metavar="K",
                   help="maps: how many top-activating images (default 9)")
    x.add_argument("--search", type=positive_int, default=1000, metavar="N",
                   help="maps: search the first N images of the split for them (default 1000)")
    x.add_argument("--dataset", type=lower, choices=DATASETS, default=None,
                   help="default: the data set recorded in the parameter file")
    x.add_argument("--split", choices=("test", "train"), default="test")
    x.add_argument("--seed", type=nonneg_int, default=0, help="SmoothGrad noise seed (default 0)")
    x.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    x.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help=THREADS_HELP)
    x.add_argument("--data-dir", default=None)
    x.add_argument("--no-download", action="store_true")
    x.add_argument("--out", default=None,
                   help="directory for the PNGs and METHOD.json (default: explain/ beside "
                   "PARAMS)")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_explain)


def cmd_explain(args):
    from .. import datasets, explain, viz
    from ..functions import softmax
    from ..nets import load_net
    from ..serialization import atomic_write_bytes, read_meta

    if args.method == "occlusion" and args.stride > args.window:
        raise CLIError("--stride %d is larger than --window %d: the pixels between windows "
                       "would be hidden by none, so their map values would be undefined; pass "
                       "--stride %d or less" % (args.stride, args.window, args.window))
    set_threads(args)
    device = chosen_device(args)
    path = params_file(args.params)
    ok, why = viz.have_matplotlib()
    if not ok:
        raise CLIError("explain draws figures: %s" % why)
    try:
        meta = read_meta(path)
        net = load_net(path, device=device)
        layer = None if args.layer is None else \
            explain.layer_names(net)[explain.find_layer(net, args.layer, "--layer")]
    except (FileNotFoundError, ValueError, TypeError, backend.DeviceError) as e:
        raise CLIError(str(e)) from None
    name = dataset_of(args, meta, path)
    name, train, test = load_data(args, name, "input_dim" not in net.config)
    x, t = train if args.split == "train" else test
    xs, ts = x[:args.images], t[:args.images]
    classes = datasets.class_names(name)
    probs = backend.asnumpy(softmax(net.predict(xs)))
    pred = probs.argmax(axis=1)
    target = {"pred": None, "true": [int(v) for v in ts]}.get(args.target, args.target)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), "explain")
    os.makedirs(out, exist_ok=True)
    doc = {"params": os.path.abspath(path), "out": os.path.abspath(out), "dataset": name,
           "split": args.split, "method": args.method, "device": str(net.device), "layer": layer,
           "target": args.target, "layers": explain.layer_names(net), "files": []}

    def png(stem):
        doc["files"].append(stem + ".png")
        return os.path.join(out, stem + ".png")

    try:
        if args.method == "maps":
            _explain_maps(args, net, path, x, xs, layer, doc, png)
        else:
            if args.method == "gradcam":
                doc["layer"] = layer = layer or explain.default_cam_layer(net)
                maps = explain.grad_cam(net, xs, target, layer)
                label, what = "Grad-CAM (relative)", "Grad-CAM at %s" % layer
            elif args.method == "saliency":
                maps = explain.saliency(net, xs, target, smooth=args.smooth, noise=args.noise,
                                        seed=args.seed)
                doc.update(smooth=args.smooth, noise=args.noise, seed=args.seed)
                label = "|gradient| (relative)"
                what = "SmoothGrad (%d samples)" % args.smooth if args.smooth else "saliency"
            else:
                maps = explain.occlusion(net, xs, args.window, args.stride, target)
                doc.update(window=args.window, stride=args.stride)
                label, what = "drop in probability", "occlusion %dx%d, stride %d" % (
                    args.window, args.window, args.stride)
            m = backend.asnumpy(maps)
            tgt = pred if target is None else np.broadcast_to(np.asarray(target), pred.shape)
            doc["images"] = [{"index": i, "label": int(ts[i]), "predicted": int(pred[i]),
                              "p_predicted": float(probs[i, pred[i]]), "target": int(tgt[i]),
                              "p_target": float(probs[i, tgt[i]]),
                              "peak": [int(v) for v in np.unravel_index(
                                  int(np.argmax(m[i])), m.shape[1:])] if m.ndim == 3 else
                              int(np.argmax(m[i]))}
                             for i in range(len(xs))]
            titles = ["%s\u2192%s %.2f" % (classes[int(ts[i])][:5], classes[int(pred[i])][:5],
                                           probs[i, pred[i]]) for i in range(len(xs))]
            viz.plot_heatmaps(xs, m, titles, path=png(args.method), label=label,
                              title="%s, %s (true\u2192predicted, probability)" % (what, name))
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    written = [os.path.join(out, f) for f in doc["files"]]
    written.append(os.path.join(out, args.method + ".json"))
    atomic_write_bytes(written[-1], (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    say(args, "wrote:\n  " + "\n  ".join(written))
    return 0


def _explain_maps(args, net, path, x, xs, layer, doc, png):
    """--method maps: feature maps of the first image, the top-activating images of
    --channel, and the first-layer filters before/after training when the run kept them."""
    from .. import explain, viz
    from ..serialization import load_arrays
    names = explain.layer_names(net)
    maps = explain.feature_maps(net, xs[:1], layer)
    viz.plot_feature_maps(maps, png("feature_maps"), image=xs[0],
                          title="feature maps of image 0, strongest channels first")
    doc["feature_maps"] = {k: list(v.shape[1:]) for k, v in maps.items()}
    top_layer = layer
    if top_layer is None:   # a conv net's last activation map, else the first layer's units
        try:
            top_layer = explain.activation_layer(net)
        except ValueError:
            top_layer = names[0]
    idx, scores = explain.top_activating(net, x[:args.search], top_layer, args.channel,
                                         k=args.top)
    act = explain.feature_maps(net, x[idx], top_layer)[top_layer]
    viz.plot_top_activating(x[idx], scores, png("top_activating"),
                            maps=act[:, args.channel, ...] if act.ndim == 4 else None,
                            layer=top_layer, channel=args.channel)
    doc["top_activating"] = {"layer": top_layer, "channel": args.channel,
                             "searched": int(min(args.search, len(x))), "indices": idx,
                             "scores": scores}
    init = os.path.join(os.path.dirname(os.path.abspath(path)), "filters_init.npz")
    W = net.params.get("W1")
    if W is not None and W.ndim == 4 and os.path.exists(init):
        before = load_arrays(init)[0]["W1"]
        viz.plot_filters_before_after(before, W, png("filters_before_after"))
        doc["filters_before_after"] = init
    else:
        doc["filters_before_after"] = None
        say(args, "filters before/after skipped: no filters_init.npz beside %s (xpnet train "
            "writes it for conv nets)" % path)
