"""`xpnet train`: train a network and write its parameters, history, checkpoints and
plots to --out (rank 0 alone when an MPI launcher started several processes)."""
import argparse
import os

from .. import distributed, registry
from ..trainer import augment, schedules
from .common import (DATASETS, DEVICE_HELP, MODELS, THREADS_HELP, CLIError, chosen_device,
                     device_arg,
                     claim_out, file_meta, load_data, lower, nonneg_float, nonneg_int,
                     positive_float, positive_int, say, set_threads)

# Epochs that keep a default SimpleConvNet run to a few minutes on 2 CPU cores
# (a 60k epoch is about 16 s of training there).
DEFAULT_EPOCHS = {"mnist-sample": 10, "mnist": 5, "fashion-mnist": 5}


def _lr_help():
    own = ["%s %g for %s" % (opt, lr, m.name) for m in registry.MODELS if m.cli
           for opt, lr in m.lr.items()]
    return "learning rate (default: %s%s)" % (
        ", ".join("%s %g" % kv for kv in registry.DEFAULT_LR.items()),
        "; " + ", ".join(own) if own else "")


def add_parser(sub):
    t = sub.add_parser("train", help="train a network (default: SimpleConvNet on MNIST)",
                       description="Train a network and write its parameters, history, "
                       "checkpoints and plots to --out.")
    t.add_argument("--model", choices=MODELS, default=None,
                   help="network (default simple_conv)")
    t.add_argument("--dataset", type=lower, choices=DATASETS, default=None,
                   help="data set (default: full MNIST if it is found or can be downloaded, "
                   "else the embedded 5,000-image sample)")
    t.add_argument("--epochs", type=nonneg_int, default=None,
                   help="total epochs (default %s)" % ", ".join(
                       "%d on %s" % (v, k) for k, v in DEFAULT_EPOCHS.items()))
    t.add_argument("--batch-size", type=positive_int, default=None, help="default 100")
    t.add_argument("--optimizer", type=lower, choices=registry.OPTIMIZERS, default=None,
                   help="default adam")
    t.add_argument("--lr", type=positive_float, default=None, help=_lr_help())
    t.add_argument("--weight-decay", type=nonneg_float, default=None,
                   help="L2 weight decay lambda (default 0)")
    t.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    t.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="default float32")
    t.add_argument("--seed", type=nonneg_int, default=None, help="default 0")
    t.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help=THREADS_HELP)
    t.add_argument("--out", default=None,
                   help="output directory (default runs/<model>-<dataset>)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="checkpoint file or directory; options not given are taken from it")
    t.add_argument("--data-dir", default=None, help="directory holding the data set files")
    t.add_argument("--no-download", action="store_true", help="never try to download data")
    t.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="use only the first N training and N test images (quick runs)")
    t.add_argument("--eval-samples", type=positive_int, default=None, metavar="N",
                   help="per-epoch accuracy on the first N train/test images (default all; "
                   "the final test accuracy always uses the whole test set)")
    g = t.add_argument_group("schedule, augmentation, validation and logs")
    g.add_argument("--schedule", type=lower, choices=schedules.NAMES, default=None,
                   help="learning-rate schedule (default constant); lengths are in epochs")
    g.add_argument("--warmup", type=nonneg_float, default=None, metavar="EPOCHS",
                   help="linear warm-up of the learning rate over the first EPOCHS epochs")
    g.add_argument("--augment", default=None, metavar="SPEC",
                   help="data augmentation on the net's device, e.g. shift:2,flip "
                   "(operations: %s)" % ", ".join(augment.OPS))
    g.add_argument("--val-split", type=_fraction, default=None, metavar="F",
                   help="hold out this fraction of the training set; the epoch best on it is "
                   "the one kept in params.npz")
    g.add_argument("--patience", type=positive_int, default=None, metavar="N",
                   help="stop when the validation accuracy has not improved for N epochs "
                   "(needs --val-split)")
    g.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard event files to DIR (the tensorboard extra)")
    g.add_argument("--compile", action="store_true", default=None,
                   help="compile the training step (jax.jit, torch.compile) where the "
                   "device's library can")
    t.add_argument("--quiet", action="store_true", help="print nothing but errors")
    t.set_defaults(func=cmd_train)


def _fraction(text):
    """An argparse type: a fraction strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError("expected a fraction between 0 and 1, got %r" % text)
    return v


def _trainer_options(args):
    """The Trainer's keyword arguments for --schedule ... --compile."""
    schedule = None
    if args.schedule is not None or args.warmup:
        try:
            schedule = schedules.from_spec(args.schedule or "constant",
                                           warmup=args.warmup or 0.0)
        except (TypeError, ValueError) as e:
            raise CLIError("--schedule %s: %s" % (args.schedule or "constant", e)) from None
    return {"lr_schedule": schedule, "augment": args.augment or None,
            "val_split": args.val_split or 0.0, "early_stopping": args.patience,
            "tensorboard": args.tensorboard, "compile": bool(args.compile)}


def _build_model(model, weight_decay, dtype, device, seed):
    """`model` (a registry.Model) with its command-line settings."""
    kw = {"dtype": dtype, "device": device, "seed": seed}
    if model.weight_decay:
        return model.build(weight_decay_lambda=weight_decay, **kw)
    if weight_decay:
        able = [m.name for m in registry.MODELS if m.cli and m.weight_decay]
        raise CLIError("--weight-decay is not supported by --model %s (the book's %s has no "
                       "regularisation); use %s" % (model.name, model.net, ", ".join(able)))
    return model.build(**kw)


_STORED = ("model", "dataset", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
           "schedule", "warmup", "augment", "val_split", "patience", "tensorboard", "compile",
           "dtype", "seed", "out", "limit", "eval_samples")


def _resume_defaults(args):
    """Fill options not given on the command line from the checkpoint's stored ones."""
    from ..trainer import find_checkpoint
    try:
        path = find_checkpoint(args.resume)
    except OSError as e:
        raise CLIError(str(e)) from None
    meta = file_meta(path)
    stored = meta
    for key in ("history", "config", "run_info", "cli"):
        stored = stored.get(key) if isinstance(stored, dict) else None
    if not stored or not isinstance(stored, dict):
        raise CLIError("%s was not written by `xpnet train` (no stored options); resume it "
                       "from Python with Trainer(..., resume=%r)" % (path, path))
    args.lr_given = args.lr is not None
    changes = meta["history"]["config"]["run_info"].get("lr_changes")
    args.lr_changes = list(changes) if isinstance(changes, list) else []
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
        raise CLIError("%s has already trained %d epoch%s, the total asked for: nothing to do. "
                       "--epochs is the total, counted from the start; pass --epochs N with "
                       "N > %d to train further" % (path, done, "" if done == 1 else "s", done))
    raise CLIError("--epochs %d is the total number of epochs, counted from the start, and %s "
                   "has already trained %d epoch%s%s; pass --epochs %d or more to train further"
                   % (args.epochs, path, done, "" if done == 1 else "s",
                      " and %d step%s of the next" % (pos, "" if pos == 1 else "s") if pos
                      else "", done + 1))



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
        raise CLIError("this process was started by an MPI launcher%s, but %s"
                       % (" as one of %d" % n if n else "", e)) from None
    if comm.size == 1:
        return None
    if comm.rank != 0:
        args.quiet = True
    return comm


def _train(args):
    from ..trainer import Trainer, TrainingDivergedError

    comm = _mpi_world(args)
    set_threads(args)
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
        raise CLIError(str(e)) from None
    device = chosen_device(args)
    try:
        device = device if comm is None else distributed.device_for_rank(device, comm)
    except distributed.DistributedError as e:
        raise CLIError(str(e)) from None

    name, (x, t), (xt, tt) = distributed.root_first(   # a download happens once
        comm, lambda: load_data(args, args.dataset, model.flat_input), "loading the data")
    args.dataset = name
    if args.limit:
        x, t, xt, tt = x[:args.limit], t[:args.limit], xt[:args.limit], tt[:args.limit]
    if comm is not None:
        try:
            distributed.check_batch(args.batch_size, len(x), False, comm, "--batch-size")
        except ValueError as e:
            raise CLIError(str(e)) from None
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[name]
    args.out = args.out or os.path.join("runs", "%s-%s" % (args.model, name))
    out = args.out
    root = comm is None or comm.rank == 0      # rank 0 alone writes into --out
    args.out_lock = claim_out(out) if root else None

    net = _build_model(model, args.weight_decay, args.dtype, device, args.seed)
    if comm is not None:        # BatchNorm over the global batch: results as one process's
        distributed.sync_batchnorm(net, comm)
    init_filters = _save_initial_filters(net, out, resume_path) if root else None
    cli_opts = {k: getattr(args, k) for k in _STORED}
    run_info = {"cli": cli_opts, "dataset": name}
    if getattr(args, "lr_changes", None):
        run_info["lr_changes"] = args.lr_changes
    if comm is not None:
        run_info["ranks"] = comm.size
    say(args, "model: %s (%s, %s)  optimizer: %s lr=%g  batch %d  epochs %d  seed %d"
        % (type(net).__name__, args.dtype, device.name, args.optimizer, args.lr,
           args.batch_size, args.epochs, args.seed))
    try:
        trainer = Trainer(net, x, t, xt, tt, epochs=args.epochs, mini_batch_size=args.batch_size,
                          optimizer=args.optimizer, optimizer_param={"lr": args.lr},
                          evaluate_sample_num_per_epoch=args.eval_samples,
                          verbose=not args.quiet, seed=args.seed,
                          checkpoint_dir=os.path.join(out, "checkpoints"),
                          history_path=os.path.join(out, "history.json"),
                          resume=resume_path, run_info=run_info, comm=comm,
                          **_trainer_options(args))
    except (ValueError, RuntimeError, ImportError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    if resume_path is not None and getattr(args, "lr_given", False):
        _change_lr(args, trainer)
    try:
        history = trainer.train()
    except TrainingDivergedError as e:
        raise CLIError(str(e)) from None
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
    written += [p for p in (os.path.join(out, "history.csv"), args.tensorboard)
                if p and os.path.exists(p)]
    written += [init_filters] if init_filters else []
    written += _train_plots(args, net, history, out)
    say(args, "wrote:\n  " + "\n  ".join(written))
    return 0


def _change_lr(args, trainer):
    """--lr with --resume: the checkpoint's optimizer holds the learning rate it trained
    with; the one asked for replaces it from the next step on, and the history's
    run_info records the change (``lr_changes``: epoch, step, from, to)."""
    from ..trainer import history
    old = getattr(trainer.optimizer, "lr", None)
    if old is None or float(old) == args.lr:
        return
    if getattr(trainer, "lr_schedule", None) is not None:
        raise CLIError("--lr %g: this run follows a learning-rate schedule, which sets the "
                       "rate at every step; resume without --lr, or start a new run"
                       % args.lr)
    trainer.optimizer.lr = args.lr
    trainer.run_info.setdefault("lr_changes", []).append(
        {"epoch": trainer.current_epoch, "step": trainer.current_iter, "from": float(old),
         "to": args.lr})
    trainer.history["config"] = history.config(trainer)
    say(args, "learning rate: %g from the checkpoint, now %g (--lr)" % (old, args.lr))


def _save_initial_filters(net, out, resume_path):
    """``filters_init.npz``: a conv net's first-layer filters before training, so `xpnet
    explain --method maps` can draw them before/after. A resumed run keeps the file (its
    net is rebuilt from the same seed, so the filters would be the same)."""
    from ..serialization import save_arrays
    W = net.params.get("W1")
    path = os.path.join(out, "filters_init.npz")
    if W is None or W.ndim != 4 or (resume_path and os.path.exists(path)):
        return None
    return save_arrays(path, {"W1": W}, {"what": "first-layer filters before training"})


def _train_plots(args, net, history, out):
    from .. import viz
    ok, why = viz.have_matplotlib()
    if not ok:
        say(args, "plots skipped: %s" % why)
        return []
    paths = []
    if any(history.get(k) for k in ("train_loss", "train_acc", "test_acc")):
        paths.append(os.path.join(out, "curves.png"))
        viz.plot_history(history, paths[0],
                         title="%s on %s" % (type(net).__name__, args.dataset))
    else:
        say(args, "curves skipped: no epoch was trained")
    W = net.params.get("W1")
    if W is not None and W.ndim == 4:
        paths.append(os.path.join(out, "filters.png"))
        viz.plot_filters(W, paths[-1], title="first-layer filters")
    return paths

