"""The `xpnet` command's stdout and stderr: usable whatever the caller gave it.

A closed stream (``xpnet train >&-``) becomes /dev/null, on its own descriptor, so a
file opened later can't take descriptor 1 and receive the output; a file name that
isn't valid in the locale's encoding (``--out $'\\xff'`` under LC_ALL=C) is printed as
its bytes, or escaped, never raised; a reader that went away (``| head``) ends the
command quietly with status 141, as Unix tools do.
"""
import codecs
import os
import select
import sys

__all__ = ["prepare", "stdout_broken", "stdout_gone"]

_ERRORS = "xpnet-bytes-else-escape"


def _bytes_else_escape(exc):
    """A file name's undecodable bytes (surrogate escapes) go out as those bytes; any
    other character the encoding lacks is backslash-escaped."""
    try:
        return codecs.lookup_error("surrogateescape")(exc)
    except UnicodeError:
        return codecs.lookup_error("backslashreplace")(exc)


codecs.register_error(_ERRORS, _bytes_else_escape)


def _reopen_closed(fd, name):
    """The stream for descriptor `fd` when Python found it closed: /dev/null, put on
    `fd` itself (the lowest free descriptor is the one a later open would get)."""
    try:
        os.fstat(fd)
        return None         # open after all (a caller set sys.stdout to None)
    except OSError:
        pass
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        return open(fd, "w", closefd=False)
    except OSError:
        return open(os.devnull, "w")


def prepare():
    """Make sys.stdout and sys.stderr safe to print to; called once by `main`."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if stream is None:
            stream = _reopen_closed(fd, name) or open(os.devnull, "w")
            setattr(sys, name, stream)
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=_ERRORS)
            except (ValueError, OSError):   # a stream that can't be reconfigured: leave it
                pass


def stdout_broken():
    """True when it is stdout's reader that went away, not some other pipe: polling a
    pipe whose reader has closed reports an error (POLLERR) on its write end."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):   # no fd (captured), no poll (Windows)
        return False


def stdout_gone():
    """stdout's reader went away (``xpnet eval ... | head -3``): stop quietly with the
    status of a process killed by SIGPIPE (141), as Unix tools do."""
    try:   # whatever is still buffered is flushed at exit: let it go to /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return 141
