"""Shared plumbing for the example scripts: options, data, device, output files.

Not part of the library; the scripts find it because Python puts the script's
own folder on ``sys.path``. Everything numeric goes through the public
``xpnet`` API.
"""
import argparse
import io
import json
import math
import os
import platform
import sys
import time

import numpy as np

try:
    import xpnet
except ImportError:  # run from a source checkout without installing: use the repo's copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import xpnet
import xpnet.datasets as datasets
from xpnet.backend import DEVICE_HELP
from xpnet.serialization import atomic_write_bytes
from xpnet.validate import arg_type, parse_float, parse_int

DATASETS = ("auto", "fashion-mnist", "mnist", "mnist-sample")


def make_parser(description):
    """The options every example has; scripts add their own."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny run (a few seconds) to check that everything works")
    p.add_argument("--device", default=None,
                   help="%s (default: $XPNET_DEVICE, else cpu)" % DEVICE_HELP)
    p.add_argument("--out", default=os.path.join("runs", "examples"),
                   help="folder for the PNG and JSON results")
    p.add_argument("--dataset", default="auto", choices=DATASETS,
                   help="auto = Fashion-MNIST when its files are found, else the embedded "
                        "MNIST sample")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and batch order")
    return p


def positive_int(name=None):
    """argparse type: an int >= 1 (xpnet.validate). `name` is only for the scripts'
    readability: argparse puts the option's name in the message itself."""
    return arg_type(parse_int)


def positive_float(name=None):
    """argparse type: a finite number > 0 (xpnet.validate); see `positive_int`."""
    return arg_type(parse_float)


def setup(parser, argv=None, quick=None):
    """Parse options, pick the device, seed the generators. Returns ``(args, device)``.

    `quick`: option values for ``--quick``; options given on the command line win."""
    args = parser.parse_args(argv)
    if args.quick and quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    try:
        dev = xpnet.set_device(args.device) if args.device else xpnet.current_device()
    except xpnet.DeviceError as e:
        parser.error("--device: %s" % e)
    xpnet.seed(args.seed)
    args.t0 = time.perf_counter()
    print("device: %s" % dev)
    return args, dev


def load_data(args, flatten=True):
    """``((x_train, t_train), (x_test, t_test))`` as host arrays, float32 images in [0, 1]
    and integer labels; sets ``args.dataset_used``."""
    name = args.dataset
    if name == "auto":
        name = "fashion-mnist" if datasets.locate("fashion-mnist")["found"] else "mnist-sample"
    try:
        if name == "mnist-sample":
            data = datasets.load_mnist_sample(flatten=flatten)
        else:
            # an explicit name may download; "auto" only uses files already here
            data = datasets.load(name, flatten=flatten,
                                 download=args.dataset != "auto")
    except datasets.DatasetNotFoundError as e:
        sys.exit("error: --dataset %s: %s" % (name, e))
    (x, t), (xt, tt) = data
    args.dataset_used = name
    print("dataset: %s (%d train / %d test images)" % (name, len(x), len(xt)))
    return data


def subset(x, t, n, rng=None):
    """The first `n` samples (or a random `n` when `rng` is given); all when n is None."""
    if n is None or n >= len(x):
        return x, t
    if rng is None:
        return x[:n], t[:n]
    idx = rng.choice(len(x), n, replace=False)
    return x[idx], t[idx]


class Batches:
    """Random mini-batches drawn on the host and gathered on the net's device.

    The data are sent to the device once, so a GPU run does no host copy of
    images per step (only the small index array travels)."""

    def __init__(self, x, t, device, seed=0):
        self.n = len(x)
        self.device = device
        self.x = xpnet.to_device(x, device)
        self.t = xpnet.to_device(t, device)
        self.rng = np.random.default_rng(seed)

    def _take(self, idx):
        idx = xpnet.to_device(idx, self.device)
        xp = xpnet.namespace(self.x)   # `take`: the Array API has no x[int_array] on N-D arrays
        return xp.take(self.x, idx, axis=0), xp.take(self.t, idx, axis=0)

    def sample(self, batch_size):
        """The book's way: `batch_size` indices drawn with replacement."""
        return self._take(self.rng.choice(self.n, batch_size))

    def epoch(self, batch_size):
        """One pass over a fresh permutation (the last partial batch included)."""
        perm = self.rng.permutation(self.n)
        for i in range(0, self.n, batch_size):
            yield self._take(perm[i:i + batch_size])


def smooth(y, k=19):
    """Moving average for noisy loss curves (edges averaged over what is there)."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 3:
        return y
    k = max(1, min(k, len(y) // 2 * 2 - 1))
    w = np.ones(k)
    num = np.convolve(y, w, mode="same")
    den = np.convolve(np.ones_like(y), w, mode="same")
    return num / den


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a hint) when it is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plot]' in the xpnet checkout): "
              "no PNG is written")
        return None
    return plt


def out_path(args, name):
    os.makedirs(args.out, exist_ok=True)
    return os.path.join(args.out, name)


def save_figure(fig, args, name):
    """Write `fig` as PNG atomically into --out; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    path = out_path(args, name)
    atomic_write_bytes(path, buf.getvalue())
    import matplotlib.pyplot as plt
    plt.close(fig)
    print("saved %s" % path)
    return path


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None   # JSON has no NaN
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    return v


def save_results(args, name, figures):
    """Write ``<name>.json``: the options, data set, device, timings and `figures`."""
    opts = {k: v for k, v in vars(args).items() if k not in ("t0", "dataset_used")}
    doc = {
        "example": name,
        "dataset": getattr(args, "dataset_used", None),
        "device": str(xpnet.current_device()),
        "options": opts,
        "seconds": round(time.perf_counter() - args.t0, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "xpnet": xpnet.__version__,
        "figures": figures,
    }
    path = out_path(args, name + ".json")
    atomic_write_bytes(path, (json.dumps(_jsonable(doc), indent=2) + "\n").encode("utf-8"))
    print("saved %s" % path)
    print("done in %.1f s" % doc["seconds"])
    return path


def train_with_trainer(net, args, x_train, t_train, x_test, t_test, eval_size):
    """The book's Trainer run (Adam) with xpnet's checkpoints and --resume; exits with a
    message on Ctrl-C or divergence. Returns ``(trainer, history, mean loss per epoch)``."""
    from xpnet.trainer import Trainer, TrainingDivergedError
    trainer = Trainer(net, x_train, t_train, x_test, t_test, epochs=args.epochs,
                      mini_batch_size=args.batch_size, optimizer="Adam",
                      optimizer_param={"lr": args.lr}, evaluate_sample_num_per_epoch=eval_size,
                      seed=args.seed, checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    try:
        history = trainer.train()
    except KeyboardInterrupt:
        sys.exit(130)     # the Trainer has said where its checkpoint is
    except TrainingDivergedError as e:
        sys.exit("error: training diverged: %s" % e)
    if history.get("status") != "completed":
        sys.exit("training stopped: %s" % history.get("status"))
    k = trainer.iter_per_epoch
    losses = [float(np.mean(trainer.train_loss_list[i:i + k]))
              for i in range(0, len(trainer.train_loss_list), k)]
    return trainer, history, losses


def add_trainer_options(p):
    """Options of the scripts that train with the Trainer (the convnets)."""
    p.add_argument("--epochs", type=positive_int("--epochs"), default=20)
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=100)
    p.add_argument("--lr", type=positive_float("--lr"), default=0.001)
    p.add_argument("--train-size", type=positive_int("--train-size"), default=None,
                   help="training images used (default: all)")
    p.add_argument("--eval-size", type=positive_int("--eval-size"), default=1000,
                   help="images for the per-epoch train/test accuracy")
    p.add_argument("--test-size", type=positive_int("--test-size"), default=None,
                   help="test images for the final accuracy (default: all)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="save a checkpoint there after every epoch (and on Ctrl-C)")
    p.add_argument("--resume", default=None,
                   help="continue from a checkpoint file or directory; --epochs is the total")
