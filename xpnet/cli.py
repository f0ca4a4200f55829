"""The ``xpnet`` command: ``train``, ``eval``, ``info`` and ``bench``.

    xpnet train                      # SimpleConvNet on MNIST (or the embedded sample)
    xpnet train --model deep_conv --dataset fashion-mnist --device gpu --epochs 10
    xpnet eval runs/simple_conv-mnist-sample/params.npz
    xpnet info

See docs/training.md. `main(argv)` returns the exit status (0 ok, 1 failure,
2 bad arguments, 130 interrupted).
"""
import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time

import numpy as np

from . import backend, registry
from .version import __version__
from .backend import cpu_threads as parallel
from .validate import arg_type, parse_float, parse_int

__all__ = ["main", "build_parser", "MODELS", "DATASETS"]

MODELS = registry.CLI_MODELS
DATASETS = ("mnist", "fashion-mnist", "mnist-sample")
# Epochs that keep a default SimpleConvNet run to a few minutes on 2 CPU cores
# (a 60k epoch is about 16 s of training there).
DEFAULT_EPOCHS = {"mnist-sample": 10, "mnist": 5, "fashion-mnist": 5}


class _CLIError(Exception):
    """A failure to report as one clear message (exit status 1)."""


# argparse types: bad values exit 2 with "argument --x: expected ..., got ..."
_positive_int = arg_type(parse_int)
_nonneg_int = arg_type(parse_int, allow_zero=True)
_positive_float = arg_type(parse_float)
_nonneg_float = arg_type(parse_float, allow_zero=True)


def _lower(s):
    return s.lower()


def _device(text):
    """An argparse type: the `Device` xpnet.get_device makes of `text` (any of
    backend.DEVICE_HELP); a name it rejects, or a device it can't use, exits 2."""
    try:
        return backend.get_device(text)
    except backend.DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_DEVICE_HELP = "%s (default: XPNET_DEVICE, else cpu)" % backend.DEVICE_HELP


def _lr_help():
    own = ["%s %g for %s" % (opt, lr, m.name) for m in registry.MODELS if m.cli
           for opt, lr in m.lr.items()]
    return "learning rate (default: %s%s)" % (
        ", ".join("%s %g" % kv for kv in registry.DEFAULT_LR.items()),
        "; " + ", ".join(own) if own else "")


def build_parser(bench=None):
    """The argument parser; `bench` is the xpnet.bench module when the bench command runs."""
    p = argparse.ArgumentParser(
        prog="xpnet", description="Train and inspect the networks of 'Deep Learning from "
        "Scratch' on the CPU (NumPy) or a GPU (CuPy).")
    p.add_argument("--version", action="version", version="xpnet %s" % __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a network (default: SimpleConvNet on MNIST)",
                       description="Train a network and write its parameters, history, "
                       "checkpoints and plots to --out.")
    t.add_argument("--model", choices=MODELS, default=None,
                   help="network (default simple_conv)")
    t.add_argument("--dataset", type=_lower, choices=DATASETS, default=None,
                   help="data set (default: full MNIST if it is found or can be downloaded, "
                   "else the embedded 5,000-image sample)")
    t.add_argument("--epochs", type=_nonneg_int, default=None,
                   help="total epochs (default %s)" % ", ".join(
                       "%d on %s" % (v, k) for k, v in DEFAULT_EPOCHS.items()))
    t.add_argument("--batch-size", type=_positive_int, default=None, help="default 100")
    t.add_argument("--optimizer", type=_lower, choices=registry.OPTIMIZERS, default=None,
                   help="default adam")
    t.add_argument("--lr", type=_positive_float, default=None, help=_lr_help())
    t.add_argument("--weight-decay", type=_nonneg_float, default=None,
                   help="L2 weight decay lambda (default 0)")
    t.add_argument("--device", type=_device, default=None, help=_DEVICE_HELP)
    t.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="default float32")
    t.add_argument("--seed", type=int, default=None, help="default 0")
    t.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads (default: XPNET_NUM_THREADS, else the BLAS thread count)")
    t.add_argument("--out", default=None,
                   help="output directory (default runs/<model>-<dataset>)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="checkpoint file or directory; options not given are taken from it")
    t.add_argument("--data-dir", default=None, help="directory holding the data set files")
    t.add_argument("--no-download", action="store_true", help="never try to download data")
    t.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="use only the first N training and N test images (quick runs)")
    t.add_argument("--eval-samples", type=_positive_int, default=None, metavar="N",
                   help="per-epoch accuracy on the first N train/test images (default all; "
                   "the final test accuracy always uses the whole test set)")
    t.add_argument("--quiet", action="store_true", help="print nothing but errors")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a parameter file",
                       description="Accuracy, per-class accuracy and confusion matrix of a saved "
                       "network; writes misclassified.png, confusion.png and eval.json.")
    e.add_argument("params", help="parameter file (.npz) written by xpnet train or save_params")
    e.add_argument("--dataset", type=_lower, choices=DATASETS, default=None,
                   help="default: the data set recorded in the parameter file")
    e.add_argument("--split", choices=("test", "train"), default="test")
    e.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate the first N images only")
    e.add_argument("--batch-size", type=_positive_int, default=500)
    e.add_argument("--device", type=_device, default=None, help=_DEVICE_HELP)
    e.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads (default: XPNET_NUM_THREADS, else the BLAS thread count)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--no-download", action="store_true")
    e.add_argument("--out", default=None,
                   help="directory for the PNGs and eval.json (default: beside PARAMS)")
    e.add_argument("--max-images", type=_nonneg_int, default=100,
                   help="misclassified images to draw (default 100)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)

    i = sub.add_parser("info", help="versions, devices and where the data sets are",
                       description="Print versions, compute devices and data set locations.")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--data-dir", default=None)
    i.set_defaults(func=cmd_info)

    if bench is None:
        # Listed for --help; its options come from xpnet.bench, loaded only when used.
        b = sub.add_parser("bench", help="benchmarks (see xpnet.bench)", add_help=False)
        b.add_argument("rest", nargs=argparse.REMAINDER)
    else:
        b = sub.add_parser("bench", help="benchmarks (see xpnet.bench)",
                           description="Benchmarks, provided by xpnet.bench.")
        bench.add_arguments(b)
    b.set_defaults(func=cmd_bench)
    return p


def _command_of(argv):
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def main(argv=None):
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    bench = None
    if _command_of(argv) == "bench":
        bench = _load_bench()
        if isinstance(bench, str):
            print("xpnet bench: %s" % bench, file=sys.stderr)
            return 2
    try:
        parser = build_parser(bench)
    except Exception as e:  # a broken xpnet.bench.add_arguments
        print("xpnet bench: xpnet.bench.add_arguments failed: %s: %s"
              % (type(e).__name__, e), file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        parallel.get_num_threads()            # a bad XPNET_NUM_THREADS fails here, clearly
    except ValueError as e:
        print("xpnet %s: error: %s" % (args.command, e), file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except _CLIError as e:
        print("xpnet %s: error: %s" % (args.command, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        msg = str(e) or "interrupted"
        print("\nxpnet %s: %s" % (args.command, msg), file=sys.stderr)
        return 130


# ---------------------------------------------------------------------- bench

def _load_bench():
    """The xpnet.bench module, or a string saying why it can't be used."""
    try:   # by name: the bench is optional and stays out of the core's imports
        mod = importlib.import_module("xpnet.bench")
    except ImportError as e:
        return ("the benchmark module xpnet.bench can't be imported (%s: %s); it ships with "
                "xpnet's benchmark suite" % (type(e).__name__, e))
    missing = [f for f in ("add_arguments", "run_from_args") if not callable(getattr(mod, f, None))]
    if missing:
        return "xpnet.bench lacks %s, so the bench command is unavailable" % " and ".join(missing)
    return mod


def cmd_bench(args):
    bench = _load_bench()
    if isinstance(bench, str):
        print("xpnet bench: %s" % bench, file=sys.stderr)
        return 2
    return bench.run_from_args(args)


# ---------------------------------------------------------------------- data

def _say(args, msg):
    if not getattr(args, "quiet", False):
        print(msg)


def _load_data(args, name, flatten):
    """``(name_used, (x, t), (xt, tt))``; name None = MNIST, falling back to the sample."""
    from . import datasets
    kw = {"data_dir": args.data_dir, "download": not args.no_download}
    if name is None:
        try:
            train, test = datasets.load_mnist(flatten=flatten, timeout=10, **kw)
            name = "mnist"
            _say(args, "data: full MNIST (%d training / %d test images)"
                 % (len(train[0]), len(test[0])))
        except datasets.DatasetNotFoundError as e:
            first = str(e).splitlines()[0]
            _say(args, "data: full MNIST not available (%s)\n      using the embedded MNIST "
                 "sample instead: 4,000 training / 1,000 test digits (run `xpnet info` to see "
                 "where MNIST is looked for)" % first)
            train, test = datasets.load_mnist_sample(flatten=flatten)
            name = "mnist-sample"
    else:
        try:
            if name == "mnist-sample":
                train, test = datasets.load_mnist_sample(flatten=flatten)
            else:
                train, test = datasets.load(name, flatten=flatten, **kw)
        except datasets.DatasetNotFoundError as e:
            raise _CLIError(str(e)) from None
        _say(args, "data: %s (%d training / %d test images)" % (name, len(train[0]),
                                                               len(test[0])))
    return name, train, test


# ---------------------------------------------------------------------- train

def _build_model(model, weight_decay, dtype, device, seed):
    """`model` (a registry.Model) with its command-line settings."""
    kw = {"dtype": dtype, "device": device, "seed": seed}
    if model.weight_decay:
        return model.build(weight_decay_lambda=weight_decay, **kw)
    if weight_decay:
        able = [m.name for m in registry.MODELS if m.cli and m.weight_decay]
        raise _CLIError("--weight-decay is not supported by --model %s (the book's %s has no "
                        "regularisation); use %s" % (model.name, model.net, ", ".join(able)))
    return model.build(**kw)


_STORED = ("model", "dataset", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
           "dtype", "seed", "out", "limit", "eval_samples")


def _resume_defaults(args):
    """Fill options not given on the command line from the checkpoint's stored ones."""
    from .serialization import read_meta
    from .trainer import find_checkpoint
    try:
        path = find_checkpoint(args.resume)
        meta = read_meta(path)
    except (FileNotFoundError, ValueError) as e:
        raise _CLIError(str(e)) from None
    stored = (((meta.get("history") or {}).get("config") or {}).get("run_info") or {}).get("cli")
    if not stored:
        raise _CLIError("%s was not written by `xpnet train` (no stored options); resume it "
                        "from Python with Trainer(..., resume=%r)" % (path, path))
    for k in _STORED:
        if getattr(args, k) is None and stored.get(k) is not None:
            setattr(args, k, stored[k])
    return path


def _set_threads(args):
    if getattr(args, "threads", None):
        parallel.set_num_threads(args.threads)


def _current_device(args):
    """--device (resolved while parsing), else the default (XPNET_DEVICE)."""
    if args.device is not None:
        return args.device
    try:
        return backend.current_device()
    except backend.DeviceError as e:
        raise _CLIError(str(e)) from None


def cmd_train(args):
    from .trainer import Trainer, TrainingDivergedError

    _set_threads(args)
    resume_path = _resume_defaults(args) if args.resume else None
    args.model = args.model or "simple_conv"
    args.optimizer = args.optimizer or "adam"
    args.batch_size = args.batch_size or 100
    args.weight_decay = args.weight_decay or 0.0
    args.dtype = args.dtype or "float32"
    args.seed = 0 if args.seed is None else args.seed
    try:   # names stored in a checkpoint may be ones this version no longer offers
        model = registry.cli_model(args.model)
        if args.lr is None:
            args.lr = registry.default_lr(args.optimizer, model)
    except ValueError as e:
        raise _CLIError(str(e)) from None
    device = _current_device(args)

    name, (x, t), (xt, tt) = _load_data(args, args.dataset, model.flat_input)
    args.dataset = name
    if args.limit:
        x, t, xt, tt = x[:args.limit], t[:args.limit], xt[:args.limit], tt[:args.limit]
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[name]
    args.out = args.out or os.path.join("runs", "%s-%s" % (args.model, name))
    out = args.out
    os.makedirs(out, exist_ok=True)

    net = _build_model(model, args.weight_decay, args.dtype, device, args.seed)
    cli_opts = {k: getattr(args, k) for k in _STORED}
    _say(args, "model: %s (%s, %s)  optimizer: %s lr=%g  batch %d  epochs %d  seed %d"
         % (type(net).__name__, args.dtype, device.name, args.optimizer, args.lr,
            args.batch_size, args.epochs, args.seed))
    try:
        trainer = Trainer(net, x, t, xt, tt, epochs=args.epochs, mini_batch_size=args.batch_size,
                          optimizer=args.optimizer, optimizer_param={"lr": args.lr},
                          evaluate_sample_num_per_epoch=args.eval_samples,
                          verbose=not args.quiet, seed=args.seed,
                          checkpoint_dir=os.path.join(out, "checkpoints"),
                          history_path=os.path.join(out, "history.json"),
                          resume=resume_path, run_info={"cli": cli_opts, "dataset": name})
    except (ValueError, FileNotFoundError) as e:
        raise _CLIError(str(e)) from None
    try:
        history = trainer.train()
    except TrainingDivergedError as e:
        raise _CLIError(str(e)) from None
    except KeyboardInterrupt as e:
        path = trainer.interrupt_checkpoint
        if path:
            raise KeyboardInterrupt("stopped; checkpoint saved. Continue with:\n  xpnet train "
                                    "--resume %s" % path) from None
        raise KeyboardInterrupt(str(e) or "interrupted") from None

    written = [net.save_params(os.path.join(out, "params"), extra_meta={
        "dataset": name, "cli": cli_opts, "final_test_acc": history["final_test_acc"]})]
    written.append(os.path.join(out, "params.json"))
    written.append(os.path.join(out, "history.json"))
    written += _train_plots(args, net, history, out)
    _say(args, "wrote:\n  " + "\n  ".join(written))
    return 0


def _train_plots(args, net, history, out):
    from . import viz
    ok, why = viz.have_matplotlib()
    if not ok:
        _say(args, "plots skipped: %s" % why)
        return []
    paths = [os.path.join(out, "curves.png")]
    viz.plot_history(history, paths[0], title="%s on %s" % (type(net).__name__, args.dataset))
    W = net.params.get("W1")
    if W is not None and W.ndim == 4:
        paths.append(os.path.join(out, "filters.png"))
        viz.plot_filters(W, paths[-1], title="first-layer filters")
    return paths


# ---------------------------------------------------------------------- eval

def _predict(net, x, batch_size):
    from .backend import asnumpy
    out = []
    for i in range(0, len(x), batch_size):
        out.append(asnumpy(net.xp.argmax(net.predict(x[i:i + batch_size]), axis=1)))
    return np.concatenate(out)


def cmd_eval(args):
    from . import datasets, viz
    from .nets import load_net
    from .serialization import npz_path, read_meta

    _set_threads(args)
    device = _current_device(args)
    try:
        meta = read_meta(args.params if os.path.exists(args.params) else npz_path(args.params))
        net = load_net(args.params, device=device)
    except (FileNotFoundError, ValueError, backend.DeviceError) as e:
        raise _CLIError(str(e)) from None
    name = args.dataset or meta.get("dataset")
    if name is None:
        raise _CLIError("%s does not say which data set it was trained on; pass --dataset "
                        "(one of %s)" % (args.params, ", ".join(DATASETS)))
    flatten = "input_dim" not in net.config
    name, train, test = _load_data(args, name, flatten)
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
    _say(args, "%s on %s (%s, %d images, %.1f s): accuracy %.4f"
         % (type(net).__name__, name, args.split, len(t), secs, acc))
    _say(args, "per-class accuracy:")
    for c, a in per_class.items():
        _say(args, "  %-12s %s" % (c, "-" if a is None else "%.4f" % a))
    _say(args, "confusion matrix (rows: true, columns: predicted):")
    width = max(5, len(str(cm.max())) + 1)
    short = [c[:width - 1] for c in classes]
    _say(args, " " * 13 + "".join("%*s" % (width, s) for s in short))
    for i, c in enumerate(classes):
        _say(args, "  %-11s" % c[:11] + "".join("%*d" % (width, v) for v in cm[i]))

    out = args.out or os.path.dirname(os.path.abspath(args.params))
    os.makedirs(out, exist_ok=True)
    result = {"params": os.path.abspath(args.params), "dataset": name, "split": args.split,
              "n": int(len(t)), "accuracy": acc, "per_class_accuracy": per_class,
              "confusion_matrix": cm.tolist(), "classes": classes}
    from .serialization import atomic_write_bytes
    written = [os.path.join(out, "eval.json")]
    atomic_write_bytes(written[0], (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    ok, why = viz.have_matplotlib()
    if not ok:
        _say(args, "plots skipped: %s" % why)
    else:
        written.append(os.path.join(out, "confusion.png"))
        viz.plot_confusion_matrix(cm, classes, written[-1],
                                  title="%s, %s split" % (name, args.split))
        if args.max_images and (y != t).any():
            written.append(os.path.join(out, "misclassified.png"))
            viz.plot_misclassified(x, t, y, classes, written[-1], max_images=args.max_images)
    _say(args, "wrote:\n  " + "\n  ".join(written))
    return 0


# ---------------------------------------------------------------------- info

def _dist_version(module):
    """The installed version of the distribution that provides `module` (cupy comes
    as cupy-cuda12x, ...), from its metadata: nothing is imported."""
    try:
        dists = importlib.metadata.packages_distributions().get(module) or [module]
    except AttributeError:   # Python 3.9 has no packages_distributions
        dists = [module]
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def _info(data_dir=None):
    from . import datasets
    info = {"xpnet": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__, "cupy": None,
            "devices": [{"name": "cpu", "backend": "numpy", "available": True}],
            "xpnet_device_env": os.environ.get("XPNET_DEVICE"), "default_device": None,
            "optional": {}, "datasets": {}, "cpu_threads": parallel.info()}
    info["cupy"] = _dist_version("cupy")
    ok, why = backend.gpu_available()
    if ok:
        cp = backend.get_device("gpu").xp
        info["cupy"] = cp.__version__
        for i in range(cp.cuda.runtime.getDeviceCount()):
            try:
                name = cp.cuda.runtime.getDeviceProperties(i)["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
            except Exception:
                name = "?"
            info["devices"].append({"name": "gpu:%d" % i, "backend": "cupy", "available": True,
                                    "model": name})
    else:
        info["devices"].append({"name": "gpu", "backend": "cupy", "available": False,
                                "reason": why})
    try:
        info["default_device"] = backend.current_device().name
    except backend.DeviceError as e:
        info["default_device"] = "error: %s" % e
    info["device_names"] = backend.DEVICE_HELP
    for mod in ("matplotlib", "tqdm", "torch", "array_api_strict"):
        info["optional"][mod] = _dist_version(mod)
    for name in datasets.NAMES:
        try:
            loc = datasets.locate(name, data_dir)
        except Exception as e:  # a broken search path must not break `info`
            info["datasets"][name] = {"found": False, "error": "%s: %s" % (type(e).__name__, e)}
            continue
        info["datasets"][name] = {
            "found": bool(loc.get("found")), "dir": loc.get("dir"),
            "searched": [("%s (%s)" % (s["dir"], s["origin"])) for s in loc.get("search_path", [])],
            "cache_dir": None if loc.get("cache_dir") is None else str(loc["cache_dir"])}
    return info


def cmd_info(args):
    info = _info(args.data_dir)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print("xpnet %s  (Python %s, %s)" % (info["xpnet"], info["python"], info["platform"]))
    print("NumPy %s, CuPy %s" % (info["numpy"], info["cupy"] or "not installed"))
    print("devices:")
    for d in info["devices"]:
        if d["available"]:
            print("  %-6s %s%s" % (d["name"], d["backend"],
                                   "  (%s)" % d["model"] if d.get("model") else ""))
        else:
            print("  %-6s not available: %s" % (d["name"], d["reason"]))
    print("device names: %s" % info["device_names"])
    print("default device: %s (XPNET_DEVICE=%s)"
          % (info["default_device"], info["xpnet_device_env"] or "unset"))
    th = info["cpu_threads"]
    print("CPU threads: %d (XPNET_NUM_THREADS=%s; BLAS %s%s)"
          % (th["threads"], os.environ.get("XPNET_NUM_THREADS") or "unset",
             th["blas"] or "not found", ", %s threads" % th["blas_threads"]
             if th["blas_threads"] else ": " + th["disabled_because"]))
    print("optional: " + ", ".join("%s %s" % (k, v or "not installed")
                                   for k, v in info["optional"].items()))
    print("data sets:")
    for name, d in info["datasets"].items():
        if d.get("error"):
            print("  %-14s error: %s" % (name, d["error"]))
        elif d["found"]:
            print("  %-14s found in %s" % (name, d["dir"]))
        else:
            print("  %-14s not found; searched: %s%s"
                  % (name, "; ".join(d["searched"]) or "-",
                     "; downloads go to %s" % d["cache_dir"] if d.get("cache_dir") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
