"""One writer per output folder, and the stale temporaries of earlier writers.

`FolderLock(folder, what)` makes `folder` (if needed) and takes an exclusive OS lock
(``fcntl.flock``) on ``<folder>/.xpnet.lock``; it writes who holds it (pid, host,
start time, command) into that file. The OS drops the lock when the holder's file
descriptor closes, so a process that dies, even by ``kill -9``, frees the folder at
once: there is no stale lock to remove by hand. A second writer gets a
`FolderInUseError` that names the first.

Right after taking the lock, the temporaries that xpnet's own atomic writes leave
when killed between writing and renaming (``.checkpoint.npz.<8 chars>.tmp``,
``.history.json.*.tmp``, ``.history.csv.*.tmp``, ``.params.npz.*.tmp``,
``.best.npz.*.tmp``, their ``.json`` twins) are removed:
while we hold the lock no other xpnet writer can be using them. Nothing else in the
folder is touched, and the lock file itself is never deleted (deleting it would let
two writers lock two different files).

Where ``fcntl`` is missing (Windows) or the file system refuses locks (some network
file systems), the folder is used unlocked, with a warning. This module only deals
with files; it must never import the trainer or touch arrays.
"""
import errno
import json
import os
import re
import socket
import stat
import sys
import time
import warnings

try:
    import fcntl
except ImportError:     # not POSIX
    fcntl = None

__all__ = ["LOCK_NAME", "FolderInUseError", "FolderLock", "remove_stale_temporaries"]

LOCK_NAME = ".xpnet.lock"

# What serialization.atomic_write_bytes leaves behind: "." + name + "." + mkstemp's
# 8 random characters + ".tmp", for the names xpnet writes into its folders.
_TEMPORARY = re.compile(
    r"^\.(checkpoint|history|params|best)\.(npz|json|csv)\.[a-z0-9_]{8}\.tmp$")
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class FolderInUseError(RuntimeError):
    """Another process (or another object in this one) is writing into the folder."""

    def __init__(self, message, folder=None, holder=None):
        super().__init__(message)
        self.folder, self.holder = folder, holder


def _describe(holder):
    if not holder:
        return "another process (it has not recorded who it is yet)"
    pid = holder.get("pid")
    s = "process %s" % pid
    if holder.get("host"):
        s += " on %s" % holder["host"]
    if pid == os.getpid() and holder.get("host") == socket.gethostname():
        s += " (this process)"
    if holder.get("started"):
        s += ", started %s" % holder["started"]
    if holder.get("command"):
        s += " (%s)" % holder["command"]
    return s


def _read_holder(fd):
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _oserror(e, message):
    """`e`'s class (so callers can still tell a permission problem) with our message
    (errno and filename stay unset: OSError would print them instead of the message)."""
    return type(e)(message)


def remove_stale_temporaries(folder):
    """Delete xpnet's own leftover ``.*.tmp`` files in `folder` (plain files only);
    returns their names. Call it only while holding the folder's lock."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not _TEMPORARY.match(name):
            continue
        p = os.path.join(folder, name)
        try:
            if not stat.S_ISREG(os.lstat(p).st_mode):
                continue
            os.unlink(p)
            removed.append(name)
        except OSError:         # gone already, or not ours to remove: leave it
            pass
    return removed


class FolderLock:
    """``with FolderLock(folder, "--out"):`` owns `folder` for the block (or
    `acquire`/`release`). `what` names the folder in messages ("checkpoint_dir",
    "--out"). Acquiring a lock this object already holds does nothing."""

    def __init__(self, folder, what="folder"):
        self.folder = os.fspath(folder)
        self.what = what
        self.removed = []       # stale temporaries removed by the last acquire
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    @property
    def path(self):
        return os.path.join(self.folder, LOCK_NAME)

    def _make_folder(self):
        folder = self.folder
        if os.path.lexists(folder) and not os.path.isdir(folder):
            if os.path.islink(folder) and not os.path.exists(folder):
                try:
                    os.stat(folder)
                except OSError as e:
                    raise _oserror(e, "%s %s is a symbolic link that can't be followed (%s)"
                                   % (self.what, folder, e.strerror)) from None
            raise NotADirectoryError("%s %s exists and is not a directory"
                                     % (self.what, folder))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise _oserror(e, "%s %s can't be created: %s%s"
                           % (self.what, folder, e.strerror,
                              "" if not e.filename or e.filename == folder
                              else " (%s)" % e.filename)) from None

    def acquire(self):
        if self._fd is not None:
            return self
        self._make_folder()
        path = self.path
        for _ in range(10):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except OSError as e:
                raise _oserror(e, "%s %s is not writable: can't create %s in it: %s"
                               % (self.what, self.folder, LOCK_NAME, e.strerror)) from None
            if not self._lock(fd, path):
                break
            # The file we locked must still be the one at `path` (not unlinked meanwhile).
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        self._write_holder(fd)
        self.removed = remove_stale_temporaries(self.folder)
        return self

    def _lock(self, fd, path):
        """Lock `fd`; False when locking isn't possible here (we go on unlocked)."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in _BUSY:
                warnings.warn("%s %s can't be locked (%s): a second run writing into it "
                              "would not be detected" % (self.what, self.folder, e.strerror),
                              UserWarning, stacklevel=4)
                return False
            holder = _read_holder(fd)
            os.close(fd)
        raise FolderInUseError(
            "%s %s is in use by %s; wait for that run to finish or choose another folder "
            "(the lock is %s; it is freed when its process exits)"
            % (self.what, self.folder, _describe(holder), path), self.folder, holder)

    def _write_holder(self, fd):
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "command": " ".join([os.path.basename(sys.argv[0] or "python")]
                                    + sys.argv[1:])[:300]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError:     # a full disk: the lock still holds, only the note is missing
            pass

    def release(self):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)     # while still locked: nobody else is described
        except OSError:
            pass
        os.close(fd)                # closing drops the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass
