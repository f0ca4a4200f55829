"""Files xpnet reads and writes, safely: only regular files are opened for reading (a
FIFO or a device would block or never end), and writes are atomic (a temporary file in
the same folder, fsync, rename) with the umask's mode.

This module must never import other xpnet modules or an array library.
"""
import os
import stat
import tempfile

__all__ = ["current_umask", "open_regular", "atomic_write_bytes"]


def current_umask():
    """The process umask without changing it (os.umask(0) would, briefly, for every
    thread); falls back to that where /proc is missing."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_regular(path, what="parameter file"):
    """`path` opened for reading in binary, refused (ValueError) unless it is a regular
    file. Opened without blocking and checked on the open descriptor, so a FIFO, a
    device or a socket (even behind a symlink) is refused without waiting on it."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError("%s not found: %s%s" % (
            what, path, " (a broken link?)" if os.path.lexists(path) else "")) from None
    except IsADirectoryError:
        raise ValueError("%s is a directory, not a %s" % (path, what)) from None
    except OSError as e:    # a symlink loop, no permission ...
        raise ValueError("cannot read %s %s: %s" % (what, path, e.strerror or e)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise ValueError("%s is a directory, not a %s" % (path, what))
            kind = ("a FIFO (named pipe)"
                    if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                    stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
                    "not a regular file")
            raise ValueError("%s is %s, not a %s: xpnet reads regular files only"
                             % (path, kind, what))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def atomic_write_bytes(path, data):
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename).
    The file gets the usual umask-based mode (0644 under umask 022), not mkstemp's 0600.
    An existing directory at `path` is refused before any temporary file is made."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError("%s is a directory; give a file name inside it" % path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            except (AttributeError, OSError):   # no fchmod (Windows)
                os.chmod(tmp, 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
