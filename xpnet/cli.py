"""The ``xpnet`` command: ``train``, ``eval``, ``convert``, ``explain``, ``export``, ``info``, ``bench``.

    xpnet train                      # SimpleConvNet on MNIST (or the embedded sample)
    xpnet train --model deep_conv --dataset fashion-mnist --device gpu --epochs 10
    xpnet eval runs/simple_conv-mnist-sample/params.npz
    xpnet explain runs/simple_conv-mnist-sample --method gradcam --images 16
    xpnet export runs/simple_conv-mnist-sample --format onnx -o model.onnx
    xpnet convert deep_convnet_params.pkl deep_convnet.npz   # the book's pickles, safely
    xpnet info

See docs/training.md. `main(argv)` returns the exit status (0 ok, 1 failure,
2 bad arguments, 130 interrupted, 141 when stdout's reader went away, as in
``xpnet eval ... | head``). A failure is one line on stderr, never a traceback; for a
file, disk or memory error that xpnet did not foresee, ``XPNET_DEBUG=1`` shows the
traceback too. `xpnet train` holds an OS lock on ``--out`` while it runs.
"""
import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import select
import stat
import sys
import time
import warnings

import numpy as np

from . import backend, distributed, registry
from .version import __version__
from .backend import cpu_threads as parallel
from .trainer.folder import FolderInUseError, FolderLock
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

    x = sub.add_parser("export", help="write a trained network as an ONNX model",
                       description="Write a trained network as an ONNX model, for onnxruntime "
                       "and other ONNX runtimes (see docs/export.md). Needs the onnx extra: "
                       'pip install -e ".[onnx]".')
    x.add_argument("params", metavar="RUN_OR_PARAMS",
                   help="a run folder written by xpnet train (it holds params.npz), or a "
                   "parameter file")
    x.add_argument("--format", type=_export_format, default="onnx",
                   help="%s (default onnx)" % ", ".join(EXPORT_FORMATS))
    x.add_argument("-o", "--out", default=None, metavar="FILE",
                   help="output file (default: model.onnx beside the parameter file)")
    x.add_argument("--opset", type=_positive_int, default=None, metavar="N",
                   help="ONNX opset (default 17)")
    x.add_argument("--softmax", action="store_true",
                   help="end with a softmax: output 'probabilities' instead of 'logits'")
    x.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="default: the parameter file's (onnxruntime's CPU Conv is float32 only)")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("convert", help="turn one of the book's pickled parameter files into "
                       "an xpnet .npz",
                       description="Read a pickled parameter dict as the book saves it "
                       "(deep_convnet_params.pkl, params.pkl) with an unpickler that builds "
                       "NumPy arrays only, work out which ready net it fits, and write it as "
                       "an xpnet parameter file (.npz + .json, no pickle). The book's "
                       "test-time Dropout scaling is folded into the weights.")
    c.add_argument("src", metavar="OLD.pkl")
    c.add_argument("dst", metavar="NEW.npz")
    c.add_argument("--activation", choices=("relu", "sigmoid", "tanh"), default=None,
                   help="for fully connected nets: the activation they were trained with "
                   "(the file doesn't say; default relu; the book's ch03 weights: sigmoid)")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_convert)

    _add_explain_parser(sub)

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
    code = _run(argv)
    comm = distributed.world()
    if code and comm is not None and comm.size > 1:
        comm.abort(code)    # other ranks may wait in a collective: end the whole job
    return code


def _run(argv):
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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            parallel.get_num_threads()        # a bad XPNET_NUM_THREADS fails here, clearly
    except ValueError as e:
        print("xpnet %s: error: %s" % (args.command, e), file=sys.stderr)
        return 2
    for w in caught:                          # XPNET_NUM_THREADS capped: one line
        print("xpnet %s: warning: %s" % (args.command, w.message), file=sys.stderr)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()      # a reader gone (`| head`) shows here, not at exit
        return code
    except _CLIError as e:
        print("xpnet %s: error: %s" % (args.command, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        msg = str(e) or "interrupted"
        print("\nxpnet %s: %s" % (args.command, msg), file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if _stdout_broken():
            return _stdout_gone()
        return _unforeseen(args, e)         # another pipe (a socket, a child process)
    except (OSError, MemoryError, FolderInUseError) as e:
        return _unforeseen(args, e)


def _unforeseen(args, e):
    """A file, disk or memory error xpnet did not foresee: one line, or with
    XPNET_DEBUG=1 the traceback (re-raised with it)."""
    if os.environ.get("XPNET_DEBUG", "") not in ("", "0"):
        raise e
    print("xpnet %s: error: %s (XPNET_DEBUG=1 shows the traceback)"
          % (args.command, _one_line(e)), file=sys.stderr)
    return 1


def _one_line(e):
    """An OSError the way Unix tools put it (``path: reason``), a MemoryError as such."""
    if isinstance(e, MemoryError):
        return "out of memory%s" % (": %s" % e if str(e) else "")
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        names = e.filename if e.filename2 is None else "%s -> %s" % (e.filename, e.filename2)
        return "%s: %s" % (names, e.strerror)
    return str(e) or type(e).__name__


def _stdout_broken():
    """True when it is stdout's reader that went away, not some other pipe: polling a
    pipe whose reader has closed reports an error (POLLERR) on its write end."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):   # no fd (captured), no poll (Windows)
        return False


def _stdout_gone():
    """stdout's reader went away (``xpnet eval ... | head -3``): stop quietly with the
    status of a process killed by SIGPIPE (141), as Unix tools do."""
    try:   # whatever is still buffered is flushed at exit: let it go to /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return 141


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
    from .trainer import find_checkpoint
    try:
        path = find_checkpoint(args.resume)
    except OSError as e:
        raise _CLIError(str(e)) from None
    meta = _read_meta(path)
    stored = meta
    for key in ("history", "config", "run_info", "cli"):
        stored = stored.get(key) if isinstance(stored, dict) else None
    if not stored or not isinstance(stored, dict):
        raise _CLIError("%s was not written by `xpnet train` (no stored options); resume it "
                        "from Python with Trainer(..., resume=%r)" % (path, path))
    for k in _STORED:
        if getattr(args, k) is None and stored.get(k) is not None:
            setattr(args, k, stored[k])
    args.resume_done = (meta.get("epoch"), meta.get("pos_in_epoch"))
    return path


def _check_more_epochs(args, path):
    """--epochs is the total: refuse a resume that has nothing left to train."""
    done, pos = getattr(args, "resume_done", (None, None))
    if not isinstance(done, int) or not isinstance(args.epochs, int):
        return      # the Trainer checks the file itself
    pos = pos if isinstance(pos, int) else 0
    if done < args.epochs:
        return
    if done == args.epochs and not pos:
        raise _CLIError("%s has already trained %d epoch%s, the total asked for: nothing to do. "
                        "--epochs is the total, counted from the start; pass --epochs N with "
                        "N > %d to train further" % (path, done, "" if done == 1 else "s", done))
    raise _CLIError("--epochs %d is the total number of epochs, counted from the start, and %s "
                    "has already trained %d epoch%s%s; pass --epochs %d or more to train further"
                    % (args.epochs, path, done, "" if done == 1 else "s",
                       " and %d step%s of the next" % (pos, "" if pos == 1 else "s") if pos
                       else "", done + 1))


def _read_meta(path):
    """The JSON metadata of a parameter file or checkpoint, as a dict; a damaged or
    foreign file is one line naming it."""
    from .serialization import META_KEY, read_meta
    try:
        meta = read_meta(path)
    except UnicodeDecodeError:
        raise _CLIError("%s: its metadata (%s) is not UTF-8 text; the file is damaged or was "
                        "not written by xpnet" % (path, META_KEY)) from None
    except json.JSONDecodeError as e:
        raise _CLIError("%s: its metadata (%s) is not valid JSON (%s); the file is damaged or "
                        "was not written by xpnet" % (path, META_KEY, e)) from None
    except (OSError, ValueError) as e:
        msg = str(e)
        raise _CLIError(msg if path in msg else "%s: %s" % (path, msg)) from None
    if not isinstance(meta, dict):
        raise _CLIError("%s: its metadata (%s) must be a JSON object, got %s; the file is "
                        "damaged or was not written by xpnet"
                        % (path, META_KEY, type(meta).__name__)) from None
    return meta


def _params_path(p):
    """`p` (or `p`.npz) as a readable file, else a one-line reason: not found, a
    directory, a broken symbolic link or a loop of them, no permission."""
    from .serialization import npz_path
    for c in dict.fromkeys((p, npz_path(p))):
        try:
            st = os.stat(c)
        except FileNotFoundError:
            if os.path.islink(c):
                raise _CLIError("%s is a symbolic link to %s, which does not exist"
                                % (c, os.readlink(c))) from None
            continue
        except OSError as e:    # a symlink loop, a permission, a name too long
            raise _CLIError("%s can't be read: %s" % (c, e.strerror or e)) from None
        if stat.S_ISDIR(st.st_mode):
            inside = os.path.join(c, "params.npz")
            raise _CLIError("%s is a directory, not a parameter file%s"
                            % (c, "; did you mean %s?" % inside if os.path.isfile(inside)
                               else ""))
        return c
    raise _CLIError("parameter file not found: %s" % p)


def _claim_out(out):
    """Lock --out for this run (another `xpnet train` into it is refused, naming this
    one); stale temporaries of a killed run are removed."""
    try:
        return FolderLock(out, "--out").acquire()
    except (FolderInUseError, OSError) as e:
        raise _CLIError(str(e)) from None


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
    """`xpnet train`; the lock on --out is released however the run ends."""
    args.out_lock = None
    try:
        return _train(args)
    finally:
        if args.out_lock is not None:
            args.out_lock.release()


def _mpi_world(args):
    """The MPI world when an MPI launcher (mpiexec, srun) started this process as one of
    several, else None. Ranks other than 0 print nothing."""
    n = distributed.launched_size()
    if n is None or n == 1:
        return None
    try:
        comm = distributed.init()
    except distributed.DistributedError as e:
        raise _CLIError("this process was started by an MPI launcher%s, but %s"
                        % (" as one of %d" % n if n else "", e)) from None
    if comm.size == 1:
        return None
    if comm.rank != 0:
        args.quiet = True
    return comm


def _train(args):
    from .trainer import Trainer, TrainingDivergedError

    comm = _mpi_world(args)
    _set_threads(args)
    resume_path = _resume_defaults(args) if args.resume else None
    if resume_path is not None:
        _check_more_epochs(args, resume_path)
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
    try:
        device = device if comm is None else distributed.device_for_rank(device, comm)
    except distributed.DistributedError as e:
        raise _CLIError(str(e)) from None

    name, (x, t), (xt, tt) = distributed.root_first(   # a download happens once
        comm, lambda: _load_data(args, args.dataset, model.flat_input), "loading the data")
    args.dataset = name
    if args.limit:
        x, t, xt, tt = x[:args.limit], t[:args.limit], xt[:args.limit], tt[:args.limit]
    if comm is not None:
        try:
            distributed.check_batch(args.batch_size, len(x), False, comm, "--batch-size")
        except ValueError as e:
            raise _CLIError(str(e)) from None
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[name]
    args.out = args.out or os.path.join("runs", "%s-%s" % (args.model, name))
    out = args.out
    root = comm is None or comm.rank == 0      # rank 0 alone writes into --out
    args.out_lock = _claim_out(out) if root else None

    net = _build_model(model, args.weight_decay, args.dtype, device, args.seed)
    if comm is not None:        # BatchNorm over the global batch: results as one process's
        distributed.sync_batchnorm(net, comm)
    init_filters = _save_initial_filters(net, out, resume_path) if root else None
    cli_opts = {k: getattr(args, k) for k in _STORED}
    run_info = {"cli": cli_opts, "dataset": name}
    if comm is not None:
        run_info["ranks"] = comm.size
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
                          resume=resume_path, run_info=run_info, comm=comm)
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
    if not root:
        return 0

    written = [net.save_params(os.path.join(out, "params"), extra_meta={
        "dataset": name, "cli": cli_opts, "final_test_acc": history["final_test_acc"]})]
    written.append(os.path.join(out, "params.json"))
    written.append(os.path.join(out, "history.json"))
    written += [init_filters] if init_filters else []
    written += _train_plots(args, net, history, out)
    _say(args, "wrote:\n  " + "\n  ".join(written))
    return 0


def _save_initial_filters(net, out, resume_path):
    """``filters_init.npz``: a conv net's first-layer filters before training, so `xpnet
    explain --method maps` can draw them before/after. A resumed run keeps the file (its
    net is rebuilt from the same seed, so the filters would be the same)."""
    from .serialization import save_arrays
    W = net.params.get("W1")
    path = os.path.join(out, "filters_init.npz")
    if W is None or W.ndim != 4 or (resume_path and os.path.exists(path)):
        return None
    return save_arrays(path, {"W1": W}, {"what": "first-layer filters before training"})


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

    _set_threads(args)
    device = _current_device(args)
    path = _params_path(args.params)
    meta = _read_meta(path)
    try:
        net = load_net(path, device=device)
    except (OSError, ValueError, backend.DeviceError) as e:
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


# ---------------------------------------------------------------------- export

EXPORT_FORMATS = ("onnx",)


def _export_format(text):
    """An argparse type: a format `xpnet export` writes (exit 2 otherwise)."""
    if text.lower() not in EXPORT_FORMATS:
        raise argparse.ArgumentTypeError("unknown format %r; xpnet exports: %s"
                                         % (text, ", ".join(EXPORT_FORMATS)))
    return text.lower()


def _params_file(path):
    """The parameter file of a run folder or a parameter path (".npz" optional)."""
    from .serialization import npz_path
    if os.path.isdir(path):
        f = os.path.join(path, "params.npz")
        if not os.path.isfile(f):
            raise _CLIError("%s has no params.npz; pass a run folder written by `xpnet train` "
                            "or a parameter file" % path)
        return f
    for f in (path, npz_path(path)):
        if os.path.isfile(f):
            return f
    raise _CLIError("no run folder or parameter file at %s" % path)


def cmd_export(args):
    from . import datasets
    from . import onnx as onnx_export
    from .nets import load_net
    from .serialization import read_meta

    path = _params_file(args.params)
    try:
        opsets = onnx_export.supported_opsets()
    except ImportError as e:
        raise _CLIError(str(e)) from None
    if args.opset is not None and args.opset not in opsets:
        print("xpnet export: error: --opset must be from %d to %d (the installed onnx), got %d"
              % (opsets[0], opsets[-1], args.opset), file=sys.stderr)
        return 2
    try:
        meta = read_meta(path)
        net = load_net(path, device="cpu", dtype=args.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise _CLIError(str(e)) from None
    name, norm, extra = meta.get("dataset"), None, {}
    if name in DATASETS:   # xpnet's loaders all scale uint8 pixels to [0, 1]
        norm = {"dataset": name, "formula": "x = pixels / 255", "pixels": "uint8 0..255",
                "range": [0.0, 1.0]}
        extra["xpnet_classes"] = datasets.class_names(name)
    if meta.get("final_test_acc") is not None:
        extra["xpnet_final_test_acc"] = meta["final_test_acc"]
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), "model.onnx")
    try:
        model = onnx_export.to_onnx(net, opset=args.opset, softmax=args.softmax,
                                    input_normalization=norm, metadata=extra)
        onnx_export.write_model(model, out)
    except (ImportError, TypeError, ValueError) as e:   # OSError: main's one line
        raise _CLIError(str(e)) from None
    g = model.graph
    _say(args, "%s (%s) -> %s: ONNX opset %d, input %r %s %s, output %r %s"
         % (path, type(net).__name__, out, model.opset_import[0].version, g.input[0].name,
            net.config.get("dtype", ""), _onnx_shape(g.input[0]), g.output[0].name,
            _onnx_shape(g.output[0])))
    return 0


def cmd_convert(args):
    from . import book_params
    from .nets import build_net, config_for_shapes

    if not os.path.isfile(args.src):
        raise _CLIError("not a file: %s" % args.src)
    if not book_params.is_pickle(args.src):
        raise _CLIError("%s is not a pickle (an xpnet .npz needs no converting)" % args.src)
    try:
        arrays = book_params.load_book_params(args.src)
    except ValueError as e:
        raise _CLIError(str(e)) from None
    config = config_for_shapes({k: tuple(v.shape) for k, v in arrays.items()})
    if config is None:
        raise _CLIError("%s holds %s: no ready net of xpnet has exactly these parameters"
                        % (args.src, ", ".join("%s %s" % (k, tuple(v.shape))
                                               for k, v in arrays.items())))
    if args.activation:
        if config["type"] not in ("MultiLayerNet",):
            raise _CLIError("--activation is for fully connected nets; %s fits %s"
                            % (args.src, config["type"]))
        config["activation"] = args.activation
    net = build_net(config, device="cpu")
    try:
        net.load_state_dict(book_params.fold_book_dropout(net, arrays))
    except ValueError as e:
        raise _CLIError("%s: %s" % (args.src, e)) from None
    dst = args.dst if args.dst.endswith(".npz") else args.dst + ".npz"
    net.save_params(dst, {"converted_from": os.path.basename(args.src)})
    _say(args, "%s -> %s (%s, %s)" % (args.src, dst, config["type"],
                                     ", ".join("%s %s" % (k, tuple(v.shape))
                                               for k, v in arrays.items())))
    return 0


def _onnx_shape(value_info):
    return "[%s]" % ", ".join(d.dim_param or str(d.dim_value)
                              for d in value_info.type.tensor_type.shape.dim)


# ---------------------------------------------------------------------- explain

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


def _add_explain_parser(sub):
    x = sub.add_parser("explain", help="what a trained net looks at: Grad-CAM, saliency, "
                       "occlusion, feature maps",
                       description="Draw what a trained network looks at for the first "
                       "--images images of a data set split, and write the PNGs and a JSON of "
                       "what was drawn (METHOD.json) to --out. See docs/explain.md.")
    x.add_argument("params", metavar="RUN_OR_PARAMS",
                   help="a run folder written by xpnet train (it holds params.npz), or a "
                   "parameter file")
    x.add_argument("--method", type=_lower, choices=EXPLAIN_METHODS, default="gradcam",
                   help="gradcam (default), saliency, occlusion, or maps (feature maps of "
                   "every layer, top-activating images of --channel, filters before/after)")
    x.add_argument("--images", type=_positive_int, default=16, metavar="N",
                   help="explain the first N images of the split (default 16)")
    x.add_argument("--layer", default=None, metavar="NAME",
                   help="layer by name, such as Relu2 (gradcam: default the last convolution; "
                   "maps: default every layer). A wrong name lists the valid ones")
    x.add_argument("--target", type=_explain_target, default="pred",
                   help="class to explain: pred (the predicted class, default), true (the "
                   "label) or a class index")
    x.add_argument("--smooth", type=_nonneg_int, default=0, metavar="N",
                   help="saliency: SmoothGrad over N noisy copies (default 0: plain gradient)")
    x.add_argument("--noise", type=_positive_float, default=0.15,
                   help="saliency: SmoothGrad noise, a fraction of each image's value range "
                   "(default 0.15)")
    x.add_argument("--window", type=_positive_int, default=7,
                   help="occlusion: square window in pixels (default 7)")
    x.add_argument("--stride", type=_positive_int, default=3,
                   help="occlusion: window step in pixels (default 3)")
    x.add_argument("--channel", type=_nonneg_int, default=0,
                   help="maps: the channel of --layer (default: the activation after the last "
                   "convolution) whose top-activating images are drawn (default 0)")
    x.add_argument("--top", type=_positive_int, default=9, metavar="K",
                   help="maps: how many top-activating images (default 9)")
    x.add_argument("--search", type=_positive_int, default=1000, metavar="N",
                   help="maps: search the first N images of the split for them (default 1000)")
    x.add_argument("--dataset", type=_lower, choices=DATASETS, default=None,
                   help="default: the data set recorded in the parameter file")
    x.add_argument("--split", choices=("test", "train"), default="test")
    x.add_argument("--seed", type=int, default=0, help="SmoothGrad noise seed (default 0)")
    x.add_argument("--device", type=_device, default=None, help=_DEVICE_HELP)
    x.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads (default: XPNET_NUM_THREADS, else the BLAS thread count)")
    x.add_argument("--data-dir", default=None)
    x.add_argument("--no-download", action="store_true")
    x.add_argument("--out", default=None,
                   help="directory for the PNGs and METHOD.json (default: explain/ beside "
                   "PARAMS)")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_explain)


def cmd_explain(args):
    from . import datasets, explain, viz
    from .functions import softmax
    from .nets import load_net
    from .serialization import atomic_write_bytes, read_meta

    _set_threads(args)
    device = _current_device(args)
    path = _params_file(args.params)
    ok, why = viz.have_matplotlib()
    if not ok:
        raise _CLIError("explain draws figures: %s" % why)
    try:
        meta = read_meta(path)
        net = load_net(path, device=device)
        layer = None if args.layer is None else \
            explain.layer_names(net)[explain.find_layer(net, args.layer, "--layer")]
    except (FileNotFoundError, ValueError, TypeError, backend.DeviceError) as e:
        raise _CLIError(str(e)) from None
    name = args.dataset or meta.get("dataset")
    if name is None:
        raise _CLIError("%s does not say which data set it was trained on; pass --dataset "
                        "(one of %s)" % (path, ", ".join(DATASETS)))
    name, train, test = _load_data(args, name, "input_dim" not in net.config)
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
        raise _CLIError(str(e)) from None
    written = [os.path.join(out, f) for f in doc["files"]]
    written.append(os.path.join(out, args.method + ".json"))
    atomic_write_bytes(written[-1], (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    _say(args, "wrote:\n  " + "\n  ".join(written))
    return 0


def _explain_maps(args, net, path, x, xs, layer, doc, png):
    """--method maps: feature maps of the first image, the top-activating images of
    --channel, and the first-layer filters before/after training when the run kept them."""
    from . import explain, viz
    from .serialization import load_arrays
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
        _say(args, "filters before/after skipped: no filters_init.npz beside %s (xpnet train "
             "writes it for conv nets)" % path)


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
