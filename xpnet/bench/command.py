"""The bench's command line, shared by ``xpnet bench`` (the `xpnet.cli` subcommand
hooks `add_arguments` / `run_from_args`) and ``python -m xpnet.bench`` (`main`).

It parses and checks options, then hands over to `runner` and `report`; it must
never measure anything itself, and never import `xpnet.cli` (which loads this
package only when the bench command runs).
"""
import argparse
import json
import sys

from ..backend import DEVICE_HELP, DeviceError, get_device
from ..backend import cpu_threads as parallel
from ..serialization import atomic_write_bytes
from ..validate import arg_type, parse_int
from .report import collect_environment, describe, document, fmt_ms, loadavg
from .runner import (DEFAULT_BATCH_SIZES, DEFAULT_INFER_BATCH, DEFAULT_WARMUP, MODELS,
                     QUICK_REPEATS, QUICK_WARMUP, model_name, run_bench, split)
from .torch_twin import import_torch

__all__ = ["DESCRIPTION", "add_arguments", "run_from_args", "main"]

DESCRIPTION = ("Time a training step (forward + backward + Adam) and inference of "
               "%s, optionally against PyTorch." % ", ".join(MODELS))


def _list_arg(convert):
    """An argparse type for ``a,b`` lists (the option may also repeat: ``a b``)."""
    def parse(text):
        try:
            return [convert(p) for p in split(text)]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _models_help():
    aliases = sorted({a for m in MODELS.values() for a in m.aliases})
    return ("models, space or comma separated: %s, or %s (default: all)"
            % (", ".join(MODELS), ", ".join(aliases)))


def add_arguments(parser):
    """Add the bench options to an argparse parser (``xpnet bench`` or ``python -m``)."""
    parser.add_argument("--device", default=None,
                        help="%s (default: XPNET_DEVICE, else cpu); numpy-reference times "
                             "the reference kernels, to see what the fast paths buy"
                             % DEVICE_HELP)
    parser.add_argument("--models", nargs="+", metavar="MODEL", default=None,
                        type=_list_arg(model_name), help=_models_help())
    parser.add_argument("--batch-sizes", nargs="+", default=None, metavar="N",
                        type=_list_arg(lambda p: parse_int(p, None)),
                        help="training batch sizes (default: %s)"
                             % " ".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--infer-batch", type=arg_type(parse_int, allow_zero=True),
                        default=DEFAULT_INFER_BATCH,
                        help="batch for the inference rows; 0 skips them (default: %(default)s)")
    parser.add_argument("--repeats", type=arg_type(parse_int), default=None,
                        help="timed steps per framework and row (default: 5..200, about 1.5 s, "
                             "from the warm-up time)")
    parser.add_argument("--warmup", type=arg_type(parse_int, allow_zero=True), default=None,
                        help="untimed steps first (default: %d)" % DEFAULT_WARMUP)
    parser.add_argument("--quick", action="store_true",
                        help="%d repeats, %d warm-up (a smoke test, not a measurement)"
                             % (QUICK_REPEATS, QUICK_WARMUP))
    parser.add_argument("--vs", choices=["torch"], default=None,
                        help="also time the same architecture in PyTorch, interleaved")
    parser.add_argument("--compile", action="store_true",
                        help="also time xpnet.compile_step's step (jax.jit on JAX devices, "
                             "eager elsewhere) in a train-compiled row after each train row")
    parser.add_argument("--seed", type=arg_type(parse_int, allow_zero=True), default=0,
                        help="seed for weights and inputs (default: %(default)s)")
    parser.add_argument("--threads", type=arg_type(parse_int), default=None,
                        help="CPU threads for xpnet and for PyTorch (default: xpnet's "
                             "XPNET_NUM_THREADS or BLAS count; PyTorch's own default)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (environment + rows) instead of the table")
    parser.add_argument("--output", "-o", default=None, metavar="FILE",
                        help="also write the JSON to FILE (atomically)")
    return parser


def _flatten(lists):
    if lists is None:
        return None
    return [v for part in lists for v in part]


def _progress(r):
    t = r["torch"]
    print("  %s %s batch %d: xpnet %s ms%s" % (
        r["model"], r["task"], r["batch"], fmt_ms(r["xpnet"]["ms"]),
        ", torch %s ms (%.2fx)" % (fmt_ms(t["ms"]), r["ratio"]) if t else ""),
        file=sys.stderr, flush=True)


def run_from_args(args):
    """Run the benchmark from parsed arguments; returns the exit status."""
    vs_torch = args.vs == "torch"
    threads = getattr(args, "threads", None)
    torch = None
    if vs_torch:
        # Fail before any timing: the xpnet rows alone would run the whole bench (GBs at
        # batch 1000) for a comparison that can't happen.
        torch, why = import_torch()
        if torch is None:
            print("xpnet bench: error: --vs torch needs PyTorch, which can't be imported (%s). "
                  "Install the bench extra (`pip install -e \".[bench]\"` in the xpnet "
                  "checkout, or `pip install torch --index-url "
                  "https://download.pytorch.org/whl/cpu`), or leave out --vs torch."
                  % why, file=sys.stderr)
            return 2
    if threads is not None:
        parallel.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
    batch_sizes = _flatten(args.batch_sizes) or list(DEFAULT_BATCH_SIZES)
    try:
        dev = get_device(args.device)
        env = collect_environment(dev, vs_torch)
        rows = run_bench(models=_flatten(args.models), batch_sizes=batch_sizes, device=dev,
                         vs_torch=vs_torch, repeats=args.repeats, warmup=args.warmup,
                         infer_batch=args.infer_batch, quick=args.quick, seed=args.seed,
                         progress=_progress, compile=getattr(args, "compile", False))
    except (DeviceError, ValueError) as e:
        print("xpnet bench: error: %s" % e, file=sys.stderr)
        return 2
    env["loadavg_end"] = loadavg()
    doc = document(env, rows, {"batch_sizes": batch_sizes, "infer_batch": args.infer_batch,
                               "repeats": args.repeats, "warmup": args.warmup,
                               "quick": args.quick, "vs": args.vs, "seed": args.seed,
                               "compile": getattr(args, "compile", False),
                               "threads": threads})
    text = json.dumps(doc, indent=2, sort_keys=False)
    if args.output:
        atomic_write_bytes(args.output, (text + "\n").encode("utf-8"))
    if args.json:
        print(text)
    else:
        print(describe(env, rows))
        print("load average at end: %s" % (env["loadavg_end"],))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m xpnet.bench", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
