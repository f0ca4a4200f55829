"""`xpnet convert`: one of the book's pickled parameter files into an xpnet .npz, read
with an unpickler that builds NumPy arrays only."""
import os

from .common import CLIError, say


def add_parser(sub):
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


def cmd_convert(args):
    from .. import book_params
    from ..nets import build_net, config_for_shapes

    if not os.path.isfile(args.src):
        raise CLIError("not a file: %s" % args.src)
    if not book_params.is_pickle(args.src):
        raise CLIError("%s is not a pickle (an xpnet .npz needs no converting)" % args.src)
    try:
        arrays = book_params.load_book_params(args.src)
    except ValueError as e:
        raise CLIError(str(e)) from None
    config = config_for_shapes({k: tuple(v.shape) for k, v in arrays.items()})
    if config is None:
        raise CLIError("%s holds %s: no ready net of xpnet has exactly these parameters"
                       % (args.src, ", ".join("%s %s" % (k, tuple(v.shape))
                                              for k, v in arrays.items())))
    if args.activation:
        if config["type"] not in ("MultiLayerNet",):
            raise CLIError("--activation is for fully connected nets; %s fits %s"
                           % (args.src, config["type"]))
        config["activation"] = args.activation
    try:
        net = build_net(config, device="cpu")
    except ValueError as e:     # shapes beyond what xpnet builds (nets.MAX_PARAMETERS)
        raise CLIError("%s: %s" % (args.src, e)) from None
    try:
        net.load_state_dict(book_params.fold_book_dropout(net, arrays))
    except ValueError as e:
        raise CLIError("%s: %s" % (args.src, e)) from None
    dst = args.dst if args.dst.endswith(".npz") else args.dst + ".npz"
    net.save_params(dst, {"converted_from": os.path.basename(args.src)})
    say(args, "%s -> %s (%s, %s)" % (args.src, dst, config["type"],
                                     ", ".join("%s %s" % (k, tuple(v.shape))
                                               for k, v in arrays.items())))
    return 0
