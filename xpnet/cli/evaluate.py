"""`xpnet eval`: accuracy, per-class accuracy and confusion matrix of a saved network;
writes misclassified.png, confusion.png and eval.json."""
import json
import os
import time

import numpy as np

from .. import backend
from .common import (DATASETS, DEVICE_HELP, THREADS_HELP, CLIError, chosen_device,
                     dataset_of, device_arg,
                     file_meta, load_data, lower, nonneg_int, params_path, positive_int, say,
                     set_threads)


def add_parser(sub):
    e = sub.add_parser("eval", help="evaluate a parameter file",
                       description="Accuracy, per-class accuracy and confusion matrix of a saved "
                       "network; writes misclassified.png, confusion.png and eval.json.")
    e.add_argument("params", help="parameter file (.npz) written by xpnet train or save_params")
    e.add_argument("--dataset", type=lower, choices=DATASETS, default=None,
                   help="default: the data set recorded in the parameter file")
    e.add_argument("--split", choices=("test", "train"), default="test")
    e.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="evaluate the first N images only")
    e.add_argument("--batch-size", type=positive_int, default=500)
    e.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    e.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help=THREADS_HELP)
    e.add_argument("--data-dir", default=None)
    e.add_argument("--no-download", action="store_true")
    e.add_argument("--out", default=None,
                   help="directory for the PNGs and eval.json (default: beside PARAMS)")
    e.add_argument("--max-images", type=nonneg_int, default=100,
                   help="misclassified images to draw (default 100)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)


def _predict(net, x, batch_size):
    from ..backend import asnumpy
    out = []
    for i in range(0, len(x), batch_size):
        out.append(asnumpy(net.xp.argmax(net.predict(x[i:i + batch_size]), axis=1)))
    return np.concatenate(out)


def cmd_eval(args):
    from .. import datasets, viz
    from ..nets import load_net

    set_threads(args)
    device = chosen_device(args)
    path = params_path(args.params)
    meta = file_meta(path)
    try:
        net = load_net(path, device=device)
    except (OSError, ValueError, backend.DeviceError) as e:
        raise CLIError(str(e)) from None
    name = dataset_of(args, meta, args.params)
    flatten = "input_dim" not in net.config
    name, train, test = load_data(args, name, flatten)
    x, t = train if args.split == "train" else test
    if args.limit:
        x, t = x[:args.limit], t[:args.limit]
    t0 = time.perf_counter()
    y = _predict(net, x, args.batch_size)
    secs = time.perf_counter() - t0
    classes = datasets.class_names(name)
    cm = viz.confusion_matrix(t, y, n_classes=len(classes))
    acc = float(np.trace(cm)) / len(t)
    per_class = {c: (float(cm[i, i]) / cm[i].sum() if cm[i].sum() else None)
                 for i, c in enumerate(classes)}
    say(args, "%s on %s (%s, %d images, %.1f s): accuracy %.4f"
        % (type(net).__name__, name, args.split, len(t), secs, acc))
    say(args, "per-class accuracy:")
    for c, a in per_class.items():
        say(args, "  %-12s %s" % (c, "-" if a is None else "%.4f" % a))
    say(args, "confusion matrix (rows: true, columns: predicted):")
    width = max(5, len(str(cm.max())) + 1)
    short = [c[:width - 1] for c in classes]
    say(args, " " * 13 + "".join("%*s" % (width, s) for s in short))
    for i, c in enumerate(classes):
        say(args, "  %-11s" % c[:11] + "".join("%*d" % (width, v) for v in cm[i]))

    out = args.out or os.path.dirname(os.path.abspath(args.params))
    os.makedirs(out, exist_ok=True)
    result = {"params": os.path.abspath(args.params), "dataset": name, "split": args.split,
              "n": int(len(t)), "accuracy": acc, "per_class_accuracy": per_class,
              "confusion_matrix": cm.tolist(), "classes": classes}
    from ..serialization import atomic_write_bytes
    written = [os.path.join(out, "eval.json")]
    atomic_write_bytes(written[0], (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    ok, why = viz.have_matplotlib()
    if not ok:
        say(args, "plots skipped: %s" % why)
    else:
        written.append(os.path.join(out, "confusion.png"))
        viz.plot_confusion_matrix(cm, classes, written[-1],
                                  title="%s, %s split" % (name, args.split))
        if args.max_images and (y != t).any():
            written.append(os.path.join(out, "misclassified.png"))
            viz.plot_misclassified(x, t, y, classes, written[-1], max_images=args.max_images)
    say(args, "wrote:\n  " + "\n  ".join(written))
    return 0
