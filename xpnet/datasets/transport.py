"""One HTTP attempt, bounded: `_stream` reads a URL into a file with a per-read timeout,
a byte limit and a watchdog that shuts the connection when the attempt's deadline
passes; `_Progress` reports it on stderr. Standard library only.
"""
from __future__ import annotations

import http.client
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional, Tuple


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("xpnet")
    except Exception:  # not installed (running from a checkout)
        return "0"


# Some hosts answer 403 to urllib's default "Python-urllib/x.y".
USER_AGENT = f"xpnet/{_version()} (+https://pypi.org/project/xpnet/; Python urllib)"


_CHUNK = 1 << 16


class _Truncated(OSError):
    pass


class _TooBig(OSError):
    pass


class _TooSlow(OSError):
    pass


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
