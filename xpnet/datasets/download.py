"""Fetch one file from a list of mirrors into a directory, safely.

Standard library only.  Each attempt streams into a temporary file in the
destination directory, is verified by a caller-supplied check, fsync'ed and
then renamed over the final name, so a crash or a bad mirror never leaves a
partial file under the real name.

Limits on every attempt:

* ``max_bytes``: reading stops after ``max_bytes + 1`` bytes (and a larger
  ``Content-Length`` is refused before reading), so a mirror that sends too much
  costs at most that;
* ``timeout``: seconds to connect, and for each read;
* ``deadline``: seconds for the whole attempt (a watchdog shuts the connection
  down when it passes, whatever the server is doing), by default
  ``total_deadline(timeout, max_bytes)`` = ``2 * timeout + max_bytes / MIN_RATE``
  (``MIN_RATE`` = 20,000 bytes/s), or ``10 * timeout`` with no ``max_bytes``; so a
  mirror trickling bytes can't keep a download going for long.

Temporary files are named ``.<file>.<pid>@<host>.<random>.part``.  Each download
first removes stale ones: those of a process of this host that no longer runs
(killed mid-download), and any not modified for ``STALE_PART_AGE`` seconds (one
hour; other hosts sharing the folder, older names).  A download that is running
writes at least every ``timeout`` seconds, so it is never taken for stale.
Final files get the usual umask-based mode (0644 under umask 022).  One HTTP attempt
(the watchdog, the byte limit, progress) is `transport`'s.
"""
from __future__ import annotations

import http.client
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..serialization import current_umask
from .transport import USER_AGENT, _Progress, _progress_enabled, _reason, _stream
from .transport import _TooBig  # noqa: F401 (tests read it here)

__all__ = [
    "USER_AGENT",
    "DEFAULT_TIMEOUT",
    "DownloadError",
    "download_file",
    "total_deadline",
    "MIN_RATE",
    "STALE_PART_AGE",
    "mirror_url",
    "default_cache_root",
]

DEFAULT_TIMEOUT = 30.0
MIN_RATE = 20_000          # bytes/s a download must average (see total_deadline)
STALE_PART_AGE = 3600.0    # seconds after which an untouched .part file is stale


def total_deadline(timeout: float, max_bytes: Optional[int] = None) -> float:
    """Seconds one download attempt may take in all: ``2 * timeout`` (connect,
    first byte) plus ``max_bytes`` at ``MIN_RATE`` bytes/s; ``10 * timeout`` when
    the size is not known."""
    if max_bytes is None:
        return 10.0 * timeout
    return 2.0 * timeout + max_bytes / MIN_RATE


class DownloadError(OSError):
    """Every mirror failed for one file; ``failures`` lists ``(url, reason)``."""

    def __init__(self, filename: str, failures: List[Tuple[str, str]]):
        self.filename = filename
        self.failures = failures
        lines = "\n".join(f"  {u}: {r}" for u, r in failures) or "  (no mirrors configured)"
        self.message = f"could not download {filename}:\n{lines}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # OSError would print "[Errno <filename>] <failures>" from the two arguments
        return self.message


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname() or "host")[:64] or "host"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True      # exists (another user's), or can't tell: keep its file
    return True


def _remove_stale_parts(dest_dir: Path, now: Optional[float] = None) -> List[str]:
    """Delete ``.*.part`` files in ``dest_dir`` left by dead downloads; returns their
    names.  See the module docstring for what counts as stale."""
    now = time.time() if now is None else now
    host, removed = _host(), []
    try:
        entries = list(os.scandir(dest_dir))
    except OSError:
        return removed
    for e in entries:
        name = e.name
        if not (name.startswith(".") and name.endswith(".part")):
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            age = now - e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        stale = age > STALE_PART_AGE
        left, at, rest = name[:-5].rpartition("@")
        if not stale and at:
            their_host = rest.rsplit(".", 1)[0]
            pid = left.rsplit(".", 1)[-1]
            if their_host == host and pid.isdigit() and int(pid) != os.getpid():
                stale = not _pid_running(int(pid))
        if stale:
            try:
                os.unlink(e.path)
                removed.append(name)
            except OSError:
                pass
    return removed


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/xpnet``, else ``~/.cache/xpnet``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "xpnet"


def mirror_url(base: str, filename: str) -> str:
    return base.rstrip("/") + "/" + filename


def _fsync_dir(path: Path) -> None:
    # Makes the rename durable; not possible on every OS (Windows), so best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def download_file(
    filename: str,
    dest_dir: Path,
    mirrors: Sequence[str],
    verify: Callable[[Path], None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Optional[bool] = None,
    unreachable: Optional[Dict[str, str]] = None,
    max_bytes: Optional[int] = None,
    deadline: Optional[float] = None,
) -> Path:
    """Download ``filename`` from the first mirror that gives a verified copy.

    Args:
        filename: file name appended to each mirror's base URL.
        dest_dir: where the file ends up (created if needed).
        mirrors: base URLs, tried in order.
        verify: called with the downloaded temporary file; raises
            ``ValueError`` (e.g. checksum mismatch) to reject it.
        timeout: seconds for connecting and for each read.
        progress: progress line on stderr; ``None`` means "if stderr is a tty".
        unreachable: shared between calls: a mirror that could not be reached
            (or was too slow) is skipped for later files instead of timing out again.
        max_bytes: the largest acceptable file; an attempt stops reading after
            ``max_bytes + 1`` bytes and fails ("too large").
        deadline: seconds for a whole attempt (default ``total_deadline(timeout,
            max_bytes)``); when it passes the connection is shut down and the
            attempt fails ("too slow"), also while headers are being read.

    Returns:
        The final path ``dest_dir / filename``.

    Raises:
        DownloadError: no mirror worked; ``.failures`` says why for each.
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / filename
    failures: List[Tuple[str, str]] = []
    show = _progress_enabled(progress)
    if unreachable is None:
        unreachable = {}
    if deadline is None:
        deadline = total_deadline(timeout, max_bytes)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(filename, [(str(dest_dir), f"cannot create directory: {e}")])
    _remove_stale_parts(dest_dir)

    for base in mirrors:
        url = mirror_url(base, filename)
        if base in unreachable:
            failures.append((url, f"skipped, unreachable earlier: {unreachable[base]}"))
            continue
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https", "file"):
            failures.append((url, f"unsupported URL scheme {scheme!r}"))
            continue
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=dest_dir, prefix=f".{filename}.{os.getpid()}@{_host()}.", suffix=".part")
        except OSError as e:
            failures.append((url, f"cannot write to {dest_dir}: {e}"))
            raise DownloadError(filename, failures) from None
        tmp = Path(tmp_name)
        bar = None
        try:
            host = urllib.parse.urlsplit(url).netloc or url
            bar = _Progress(f"{filename} from {host}", None, show)
            with os.fdopen(fd, "wb") as f:
                try:   # mkstemp's 0600 -> the usual mode, before it is renamed into place
                    os.fchmod(f.fileno(), 0o666 & ~current_umask())
                except (AttributeError, OSError):
                    pass
                _stream(url, f, timeout, bar, max_bytes, deadline)
                f.flush()
                os.fsync(f.fileno())
            try:
                verify(tmp)
            except ValueError as e:
                failures.append((url, f"rejected: {e}"))
                continue
            os.replace(tmp, final)
            _fsync_dir(dest_dir)
            return final
        except (OSError, http.client.HTTPException, ValueError) as e:
            # ValueError: e.g. a malformed URL or Content-Length from urllib.
            reason, dead = _reason(e, timeout)
            if dead:
                unreachable[base] = reason
            failures.append((url, reason))
        finally:
            if bar is not None and bar.last and not bar.closed:
                sys.stderr.write("\n")  # end a half-drawn progress line
                sys.stderr.flush()
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass  # already renamed into place
    raise DownloadError(filename, failures)
