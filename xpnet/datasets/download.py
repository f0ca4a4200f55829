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
Final files get the usual umask-based mode (0644 under umask 022).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..serialization import current_umask

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


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("xpnet")
    except Exception:  # not installed (running from a checkout)
        return "0"


# Some hosts answer 403 to urllib's default "Python-urllib/x.y".
USER_AGENT = f"xpnet/{_version()} (+https://pypi.org/project/xpnet/; Python urllib)"
DEFAULT_TIMEOUT = 30.0
MIN_RATE = 20_000          # bytes/s a download must average (see total_deadline)
STALE_PART_AGE = 3600.0    # seconds after which an untouched .part file is stale
_CHUNK = 1 << 16


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


class _Truncated(OSError):
    pass


class _TooBig(OSError):
    pass


class _TooSlow(OSError):
    pass


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


class _Progress:
    """One self-overwriting stderr line, updated at most ~10 times a second."""

    def __init__(self, label: str, total: Optional[int], enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.last = 0.0
        self.closed = False

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        mb = done / 1e6
        if self.total:
            pct = min(100, done * 100 // self.total)
            text = f"{pct:3d}% {mb:6.1f}/{self.total / 1e6:.1f} MB"
        else:
            text = f"{mb:6.1f} MB"
        end = "\n" if final else ""
        self.closed = final
        sys.stderr.write(f"\r  {self.label}: {text}{end}")
        sys.stderr.flush()


def _progress_enabled(progress: Optional[bool]) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


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


class _Watchdog:
    """Shuts down the attempt's sockets when its deadline passes, so no read (of
    the headers or the body) outlives it however the server trickles bytes."""

    def __init__(self, seconds: Optional[float]):
        self.seconds = seconds
        self.fired = False
        self._socks: list = []
        self._lock = threading.Lock()
        self._timer = None
        if seconds is not None:
            self._timer = threading.Timer(max(seconds, 0.0), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def add(self, sock) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.fired:
                self._shut(sock)

    @staticmethod
    def _shut(sock) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                self._shut(sock)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _watched(conn_class, dog: _Watchdog):
    class Watched(conn_class):
        def connect(self):
            super().connect()
            dog.add(self.sock)
    return Watched


def _opener(dog: _Watchdog):
    class HTTP(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kw):
            return super().do_open(_watched(http_class, dog), req, **kw)

    class HTTPS(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kw):
            return super().do_open(_watched(http_class, dog), req, **kw)

    return urllib.request.build_opener(HTTP, HTTPS)


def _stream(url: str, out, timeout: float, progress: _Progress,
            max_bytes: Optional[int] = None, deadline: Optional[float] = None) -> int:
    req = urllib.request.Request(
        url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    )
    dog = _Watchdog(deadline)

    def too_slow(done: int) -> _TooSlow:
        return _TooSlow(f"not finished within the {deadline:g} s deadline "
                        f"({done} bytes received)")

    done = 0
    try:
        with _opener(dog).open(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and max_bytes is not None and total > max_bytes:
                raise _TooBig(f"the server announces {total} bytes, more than the "
                              f"{max_bytes} expected")
            progress.total = total
            read = getattr(resp, "read1", resp.read)   # read1: what has arrived, no waiting
            while True:
                limit = _CHUNK if max_bytes is None else min(_CHUNK, max_bytes + 1 - done)
                chunk = read(limit)
                if dog.fired:
                    raise too_slow(done)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if max_bytes is not None and done > max_bytes:
                    raise _TooBig(f"the server sent more than the {max_bytes} bytes expected "
                                  "(stopped reading)")
                progress.update(done)
    except (OSError, http.client.HTTPException, ValueError):
        if dog.fired:     # the watchdog shut the socket: say so, not "connection reset"
            raise too_slow(done) from None
        raise
    finally:
        dog.cancel()
    if total is not None and done != total:
        raise _Truncated(f"connection closed after {done} of {total} bytes")
    progress.update(done, final=True)
    return done


def _reason(e: BaseException, timeout: float) -> Tuple[str, bool]:
    """Human reason for a failed attempt, and whether the host looks unreachable."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}", False
    if isinstance(e, urllib.error.URLError):
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            return f"timed out after {timeout:g} s while connecting", True
        return f"cannot connect ({e.reason})", True
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s while reading", True
    if isinstance(e, _Truncated):
        return f"truncated download: {e}", False
    if isinstance(e, _TooBig):
        return f"too large: {e}", False
    if isinstance(e, _TooSlow):
        return f"too slow: {e}", True
    if isinstance(e, http.client.HTTPException):
        return f"broken HTTP response ({type(e).__name__}: {e})", False
    return f"{type(e).__name__}: {e}", False


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
