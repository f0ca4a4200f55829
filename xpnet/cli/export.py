"""`xpnet export`: write a trained network as an ONNX model (the onnx extra)."""
import argparse
import os
import sys

from .common import DATASETS, CLIError, params_file, positive_int, say

EXPORT_FORMATS = ("onnx",)


def _export_format(text):
    """An argparse type: a format `xpnet export` writes (exit 2 otherwise)."""
    if text.lower() not in EXPORT_FORMATS:
        raise argparse.ArgumentTypeError("unknown format %r; xpnet exports: %s"
                                         % (text, ", ".join(EXPORT_FORMATS)))
    return text.lower()


def add_parser(sub):
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
    x.add_argument("--opset", type=positive_int, default=None, metavar="N",
                   help="ONNX opset (default 17)")
    x.add_argument("--softmax", action="store_true",
                   help="end with a softmax: output 'probabilities' instead of 'logits'")
    x.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="default: the parameter file's (onnxruntime's CPU Conv is float32 only)")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_export)


def cmd_export(args):
    from .. import datasets
    from .. import onnx as onnx_export
    from ..nets import load_net
    from ..serialization import read_meta

    path = params_file(args.params)
    try:
        opsets = onnx_export.supported_opsets()
    except ImportError as e:
        raise CLIError(str(e)) from None
    if args.opset is not None and args.opset not in opsets:
        print("xpnet export: error: --opset must be from %d to %d (the installed onnx), got %d"
              % (opsets[0], opsets[-1], args.opset), file=sys.stderr)
        return 2
    try:
        meta = read_meta(path)
        net = load_net(path, device="cpu", dtype=args.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
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
        raise CLIError(str(e)) from None
    g = model.graph
    say(args, "%s (%s) -> %s: ONNX opset %d, input %r %s %s, output %r %s"
        % (path, type(net).__name__, out, model.opset_import[0].version, g.input[0].name,
           net.config.get("dtype", ""), _onnx_shape(g.input[0]), g.output[0].name,
           _onnx_shape(g.output[0])))
    return 0


def _onnx_shape(value_info):
    return "[%s]" % ", ".join(d.dim_param or str(d.dim_value)
                              for d in value_info.type.tensor_type.shape.dim)
