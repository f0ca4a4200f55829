"""`xpnet bench`: the benchmarks of xpnet.bench, an optional module loaded only when
this command runs (its options come from it)."""
import argparse
import importlib
import sys


def add_parser(sub, bench=None):
    if bench is None:
        # Listed for --help; its options come from xpnet.bench, loaded only when used.
        b = sub.add_parser("bench", help="benchmarks (see xpnet.bench)", add_help=False)
        b.add_argument("rest", nargs=argparse.REMAINDER)
    else:
        b = sub.add_parser("bench", help="benchmarks (see xpnet.bench)",
                           description="Benchmarks, provided by xpnet.bench.")
        bench.add_arguments(b)
    b.set_defaults(func=cmd_bench)


def load_bench():
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
    bench = load_bench()
    if isinstance(bench, str):
        print("xpnet bench: %s" % bench, file=sys.stderr)
        return 2
    return bench.run_from_args(args)


