"""What every `xpnet` subcommand shares: the one-line error, argparse types, the data
sets, parameter files and their metadata, the device and thread options."""
import argparse
import json
import os
import stat

from .. import backend, registry
from ..backend import cpu_threads as parallel
from ..trainer.folder import FolderInUseError, FolderLock
from ..validate import arg_type, parse_float, parse_int

MODELS = registry.CLI_MODELS
DATASETS = ("mnist", "fashion-mnist", "mnist-sample")


class CLIError(Exception):
    """A failure to report as one clear message (exit status 1)."""


# argparse types: bad values exit 2 with "argument --x: expected ..., got ..."
positive_int = arg_type(parse_int)
nonneg_int = arg_type(parse_int, allow_zero=True)
positive_float = arg_type(parse_float)
nonneg_float = arg_type(parse_float, allow_zero=True)


def lower(s):
    return s.lower()


def device_arg(text):
    """An argparse type: the `Device` xpnet.get_device makes of `text` (any of
    backend.DEVICE_HELP); a name it rejects, or a device it can't use, exits 2."""
    try:
        return backend.get_device(text)
    except backend.DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


DEVICE_HELP = "%s (default: XPNET_DEVICE, else cpu)" % backend.DEVICE_HELP
THREADS_HELP = "CPU threads (default: XPNET_NUM_THREADS, else the BLAS thread count)"


def add_device_options(p):
    """--device and --threads, as train, eval and explain take them."""
    p.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help=THREADS_HELP)


def say(args, msg):
    if not getattr(args, "quiet", False):
        print(msg)


def load_data(args, name, flatten):
    """``(name_used, (x, t), (xt, tt))``; name None = MNIST, falling back to the sample."""
    from .. import datasets
    kw = {"data_dir": args.data_dir, "download": not args.no_download}
    if name is None:
        try:
            train, test = datasets.load_mnist(flatten=flatten, timeout=10, **kw)
            name = "mnist"
            say(args, "data: full MNIST (%d training / %d test images)"
                % (len(train[0]), len(test[0])))
        except datasets.DatasetNotFoundError as e:
            first = str(e).splitlines()[0]
            say(args, "data: full MNIST not available (%s)\n      using the embedded MNIST "
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
            raise CLIError(str(e)) from None
        say(args, "data: %s (%d training / %d test images)" % (name, len(train[0]),
                                                               len(test[0])))
    return name, train, test



def dataset_of(args, meta, path):
    """The data set to use: --dataset, else the one the parameter file names, which
    must be one xpnet knows."""
    name = args.dataset or meta.get("dataset")
    if name is None:
        raise CLIError("%s does not say which data set it was trained on; pass --dataset "
                       "(one of %s)" % (path, ", ".join(DATASETS)))
    if name not in DATASETS:
        raise CLIError("%s was trained on the data set %r, which xpnet doesn't know; pass "
                       "--dataset (one of %s)" % (path, name, ", ".join(DATASETS)))
    return name


def file_meta(path):
    """The JSON metadata of a parameter file or checkpoint, as a dict; a damaged or
    foreign file is one line naming it."""
    from ..serialization import META_KEY, read_meta
    try:
        meta = read_meta(path)
    except UnicodeDecodeError:
        raise CLIError("%s: its metadata (%s) is not UTF-8 text; the file is damaged or was "
                       "not written by xpnet" % (path, META_KEY)) from None
    except json.JSONDecodeError as e:
        raise CLIError("%s: its metadata (%s) is not valid JSON (%s); the file is damaged or "
                       "was not written by xpnet" % (path, META_KEY, e)) from None
    except (OSError, ValueError) as e:
        msg = str(e)
        raise CLIError(msg if path in msg else "%s: %s" % (path, msg)) from None
    if not isinstance(meta, dict):
        raise CLIError("%s: its metadata (%s) must be a JSON object, got %s; the file is "
                       "damaged or was not written by xpnet"
                       % (path, META_KEY, type(meta).__name__)) from None
    return meta


def params_path(p):
    """`p` (or `p`.npz) as a readable file, else a one-line reason: not found, a
    directory, a broken symbolic link or a loop of them, no permission."""
    from ..serialization import npz_path
    for c in dict.fromkeys((p, npz_path(p))):
        try:
            st = os.stat(c)
        except FileNotFoundError:
            if os.path.islink(c):
                raise CLIError("%s is a symbolic link to %s, which does not exist"
                               % (c, os.readlink(c))) from None
            continue
        except OSError as e:    # a symlink loop, a permission, a name too long
            raise CLIError("%s can't be read: %s" % (c, e.strerror or e)) from None
        if stat.S_ISDIR(st.st_mode):
            inside = os.path.join(c, "params.npz")
            raise CLIError("%s is a directory, not a parameter file%s"
                           % (c, "; did you mean %s?" % inside if os.path.isfile(inside)
                              else ""))
        return c
    raise CLIError("parameter file not found: %s" % p)


def claim_out(out):
    """Lock --out for this run (another `xpnet train` into it is refused, naming this
    one); stale temporaries of a killed run are removed."""
    try:
        return FolderLock(out, "--out").acquire()
    except (FolderInUseError, OSError) as e:
        raise CLIError(str(e)) from None


def set_threads(args):
    if getattr(args, "threads", None):
        parallel.set_num_threads(args.threads)


def chosen_device(args):
    """--device (resolved while parsing), else the default (XPNET_DEVICE)."""
    if args.device is not None:
        return args.device
    try:
        return backend.current_device()
    except backend.DeviceError as e:
        raise CLIError(str(e)) from None


def params_file(path):
    """The parameter file of a run folder or a parameter path (".npz" optional)."""
    from ..serialization import npz_path
    if os.path.isdir(path):
        f = os.path.join(path, "params.npz")
        if not os.path.isfile(f):
            raise CLIError("%s has no params.npz; pass a run folder written by `xpnet train` "
                           "or a parameter file" % path)
        return f
    for f in (path, npz_path(path)):
        if os.path.isfile(f):
            return f
    raise CLIError("no run folder or parameter file at %s" % path)


