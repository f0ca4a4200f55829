"""Fetch one file from a list of mirrors into a directory, safely.

Standard library only.  Each attempt streams into a temporary file in the
destination directory, is verified by a caller-supplied check, fsync'ed and
then renamed over the final name, so a crash or a bad mirror never leaves a
partial file under the real name.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "USER_AGENT",
    "DEFAULT_TIMEOUT",
    "DownloadError",
    "download_file",
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
_CHUNK = 1 << 16


class DownloadError(OSError):
    """Every mirror failed for one file; ``failures`` lists ``(url, reason)``."""

    def __init__(self, filename: str, failures: List[Tuple[str, str]]):
        self.filename = filename
        self.failures = failures
        lines = "\n".join(f"  {u}: {r}" for u, r in failures) or "  (no mirrors configured)"
        super().__init__(f"could not download {filename}:\n{lines}")


class _Truncated(OSError):
    pass


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


def _stream(url: str, out, timeout: float, progress: _Progress) -> int:
    req = urllib.request.Request(
        url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        progress.total = total
        done = 0
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            progress.update(done)
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
            is skipped for later files instead of timing out again.

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
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(filename, [(str(dest_dir), f"cannot create directory: {e}")])

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
            fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
        except OSError as e:
            failures.append((url, f"cannot write to {dest_dir}: {e}"))
            raise DownloadError(filename, failures) from None
        tmp = Path(tmp_name)
        bar = None
        try:
            host = urllib.parse.urlsplit(url).netloc or url
            bar = _Progress(f"{filename} from {host}", None, show)
            with os.fdopen(fd, "wb") as f:
                _stream(url, f, timeout, bar)
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
