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

One module per subcommand (train, evaluate, export, convert, explain, info, bench),
each with ``add_parser(sub)`` and its ``cmd_*``; `common` holds what they share
(`CLIError`, argparse types, data and parameter files), `streams` makes stdout and
stderr safe to print to (closed, undecodable names, a reader gone).
"""
import argparse
import os
import sys
import warnings

from .. import _command_start, distributed
from ..backend import cpu_threads as parallel
from ..trainer.folder import FolderInUseError
from ..version import __version__
from . import bench, convert, evaluate, explain, export, info, streams, train
from .common import DATASETS, MODELS, CLIError

__all__ = ["main", "build_parser", "MODELS", "DATASETS"]


def build_parser(bench_module=None):
    """The argument parser; `bench_module` is xpnet.bench when the bench command runs."""
    p = argparse.ArgumentParser(
        prog="xpnet", description="Train and inspect the networks of 'Deep Learning from "
        "Scratch' on the CPU (NumPy) or a GPU (CuPy).")
    p.add_argument("--version", action="version", version="xpnet %s" % __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (train, evaluate, export, convert, explain, info):
        command.add_parser(sub)
    bench.add_parser(sub, bench_module)
    return p


def _command_of(argv):
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def main(argv=None):
    """Run the command line; returns the exit status."""
    _command_start.end()        # Ctrl-C from here on: KeyboardInterrupt, handled below
    streams.prepare()
    code = _run(argv)
    comm = distributed.world()
    if code and comm is not None and comm.size > 1:
        comm.abort(code)    # other ranks may wait in a collective: end the whole job
    return code


def _run(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_module = None
    if _command_of(argv) == "bench":
        bench_module = bench.load_bench()
        if isinstance(bench_module, str):
            print("xpnet bench: %s" % bench_module, file=sys.stderr)
            return 2
    try:
        parser = build_parser(bench_module)
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
    except CLIError as e:
        print("xpnet %s: error: %s" % (args.command, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        msg = str(e) or "interrupted"
        print("\nxpnet %s: %s" % (args.command, msg), file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if streams.stdout_broken():
            return streams.stdout_gone()
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
