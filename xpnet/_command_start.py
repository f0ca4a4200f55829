"""Ctrl-C while the `xpnet` command is still importing: one line and status 130.

Imported first by ``xpnet/__init__.py``. When this process is the `xpnet` command
(the console script or ``python -m xpnet``), SIGINT until `xpnet.cli.main` starts
ends the process as the command's own Ctrl-C does later, instead of a
KeyboardInterrupt traceback from deep inside an import and death by _signal. In any
other process (a script or notebook importing xpnet) it does nothing. Ctrl-C during
the interpreter's own start, before xpnet's first line runs, is Python's to handle.
"""
import os
import sys

import _signal    # not `signal`: its enums cost an import window of their own

__all__ = ["end"]


def _is_the_command():
    if sys.argv and os.path.basename(sys.argv[0]) in ("xpnet", "xpnet.exe"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))      # Python >= 3.10: the interpreter's own
    for i, a in enumerate(argv[1:], 1):
        if a == "-m":
            return argv[i + 1:i + 2] == ["xpnet"]
        if a.startswith("-m"):
            return a[2:] == "xpnet"
        if not a.startswith("-"):
            return False
    return False


def _interrupted(signum, frame):
    if sys.stderr is not None:
        sys.stderr.write("\nxpnet: interrupted\n")
    raise SystemExit(130)


def end():
    """`xpnet.cli.main` has started: Ctrl-C is a KeyboardInterrupt again."""
    if _signal.getsignal(_signal.SIGINT) is _interrupted:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)


if (_is_the_command() and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler):
    try:
        _signal.signal(_signal.SIGINT, _interrupted)
    except ValueError:      # not the main thread
        pass
