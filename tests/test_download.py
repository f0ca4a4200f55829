"""Downloads tested for real against a local HTTP server (no urllib mocking)."""

import gzip
import hashlib
import http.server
import socket
import struct
import threading
import time

import numpy as np
import pytest

from xpnet.datasets import DatasetNotFoundError, load_mnist
from xpnet.datasets.download import DownloadError, download_file
from xpnet.datasets.mnist import SPECS

N = 20
NAMES = [fs.filename for fs in SPECS["mnist"].files.values()]
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = NAMES


def idx_bytes(a):
    """Independent IDX writer (not the library's) for synthetic files."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return struct.pack(">I", 0x800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def synthetic_files():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(N, 28, 28), dtype=np.uint8)
    t = (np.arange(N) % 10).astype(np.uint8)
    raw = {TRAIN_IMAGES: idx_bytes(x), TRAIN_LABELS: idx_bytes(t),
           TEST_IMAGES: idx_bytes(x[::-1]), TEST_LABELS: idx_bytes(t[::-1])}
    return {k: gzip.compress(v, mtime=0) for k, v in raw.items()}, x, t


FILES, X, T = synthetic_files()
CHECKSUMS = {k: hashlib.sha256(v).hexdigest() for k, v in FILES.items()}


class Server:
    """Serves FILES under /<behaviour>/<filename>; records every request."""

    def __init__(self):
        self.requests = []  # (path, user agent)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("User-Agent", "")))
                _, mode, name = self.path.split("/", 2)
                body = FILES.get(name)
                if body is None or mode == "404":
                    return self.send_error(404)
                if mode == "500":
                    return self.send_error(500)
                if mode == "agent" and not self.headers.get("User-Agent", "").startswith("xpnet/"):
                    return self.send_error(403)
                if mode == "slow":
                    time.sleep(1.5)
                if mode == "corrupt":
                    body = body[:-20] + bytes(20)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "truncate":  # promise everything, send half, hang up
                    body = body[: len(body) // 2]
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, mode):
        return f"http://127.0.0.1:{self.port}/{mode}/"

    def hits(self, mode=None, name=None):
        return [p for p, _ in self.requests
                if (mode is None or p.split("/")[1] == mode) and (name is None or p.endswith(name))]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def refused_url():
    """A local port with nothing listening: connection refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("XPNET_DATA_DIR", "XPNET_MNIST_MIRRORS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


def fetch(tmp_path, mirrors, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 5)
    return load_mnist(cache_dir=tmp_path, mirrors=mirrors, checksums=CHECKSUMS, **kw)


def assert_synthetic(result):
    (x, t), (xt, tt) = result
    assert x.shape == (N, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(x, X.reshape(N, -1) / np.float32(255))
    np.testing.assert_array_equal(t, T)
    np.testing.assert_array_equal(tt, T[::-1])
    assert xt.shape == (N, 784)


def assert_cache_clean(cache):
    """Only complete, final files: no temporary or partial residue."""
    for p in cache.iterdir():
        assert p.name in NAMES, f"residue left in cache: {p.name}"
        assert p.read_bytes() == FILES[p.name]


def test_good_mirror_downloads_into_cache(server, tmp_path):
    assert_synthetic(fetch(tmp_path, [server.url("good")]))
    cache = tmp_path / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)
    assert_cache_clean(cache)
    assert len(server.requests) == 4
    assert all(ua.startswith("xpnet/") for _, ua in server.requests)


def test_user_agent_is_sent(server, tmp_path):
    # The "agent" mirror answers 403 to urllib's default User-Agent.
    assert_synthetic(fetch(tmp_path, [server.url("agent")]))


def test_second_call_uses_cache_without_network(server, tmp_path):
    fetch(tmp_path, [server.url("good")])
    before = len(server.requests)
    assert_synthetic(fetch(tmp_path, [server.url("good")]))
    assert len(server.requests) == before


@pytest.mark.parametrize("mode", ["404", "500", "corrupt", "truncate"])
def test_bad_mirror_then_good(server, tmp_path, mode):
    assert_synthetic(fetch(tmp_path, [server.url(mode), server.url("good")]))
    assert len(server.hits(mode)) == 4        # each file tried there first
    assert len(server.hits("good")) == 4
    assert_cache_clean(tmp_path / "mnist")


def test_refused_mirror_then_good_and_skipped_afterwards(server, tmp_path, refused_url):
    assert_synthetic(fetch(tmp_path, [refused_url, server.url("good")]))
    assert len(server.hits("good")) == 4


def test_timeout_then_good(server, tmp_path):
    t0 = time.monotonic()
    assert_synthetic(fetch(tmp_path, [server.url("slow"), server.url("good")], timeout=0.3))
    # The slow mirror is given up on after the first timeout, not four times.
    assert len(server.hits("slow")) == 1
    assert time.monotonic() - t0 < 5


def test_all_mirrors_fail_gives_one_clear_error(server, tmp_path, refused_url):
    mirrors = [server.url("404"), server.url("500"), server.url("corrupt"), refused_url]
    with pytest.raises(DatasetNotFoundError) as info:
        fetch(tmp_path, mirrors)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    for name in NAMES:
        assert name in msg
    for m in mirrors:
        assert m + TRAIN_IMAGES in msg
    assert "HTTP 404" in msg and "HTTP 500" in msg
    assert "rejected: SHA-256" in msg
    assert "Connection refused" in msg or "cannot connect" in msg
    assert str(tmp_path / "mnist") in msg             # where to put the files
    assert "XPNET_DATA_DIR" in msg and "data_dir" in msg
    assert_cache_clean(tmp_path / "mnist")


def test_failed_download_leaves_no_partial_file(server, tmp_path):
    with pytest.raises(DatasetNotFoundError):
        fetch(tmp_path, [server.url("truncate"), server.url("corrupt")])
    cache = tmp_path / "mnist"
    assert list(cache.iterdir()) == []  # neither final names nor *.part files


def test_truncated_cached_file_is_detected_and_refetched(server, tmp_path):
    fetch(tmp_path, [server.url("good")])
    cached = tmp_path / "mnist" / TRAIN_IMAGES
    cached.write_bytes(FILES[TRAIN_IMAGES][:100])
    before = len(server.requests)
    assert_synthetic(fetch(tmp_path, [server.url("good")]))
    new = [p for p, _ in server.requests[before:]]
    assert new and all(p.endswith(TRAIN_IMAGES) for p in new)
    assert cached.read_bytes() == FILES[TRAIN_IMAGES]


def test_corrupt_cached_file_is_kept_intact_when_refetch_fails(server, tmp_path):
    fetch(tmp_path, [server.url("good")])
    cached = tmp_path / "mnist" / TRAIN_LABELS
    bad = FILES[TRAIN_LABELS][:-5]
    cached.write_bytes(bad)
    with pytest.raises(DatasetNotFoundError) as info:
        fetch(tmp_path, [server.url("truncate")])
    # Never used silently, never replaced by a partial download.
    assert cached.read_bytes() == bad
    assert str(cached) in str(info.value)
    assert [p.name for p in (tmp_path / "mnist").iterdir() if p.name not in NAMES] == []


def test_download_false_never_touches_network(server, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        fetch(tmp_path, [server.url("good")], download=False)
    assert server.requests == []


def test_mirrors_from_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_MNIST_MIRRORS", f"{server.url('404')}, {server.url('good')}")
    assert_synthetic(load_mnist(cache_dir=tmp_path, checksums=CHECKSUMS, progress=False))
    assert len(server.hits("404")) == 4 and len(server.hits("good")) == 4


def test_xdg_cache_home_is_the_default_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    load_mnist(mirrors=[server.url("good")], checksums=CHECKSUMS, progress=False)
    assert (tmp_path / "xpnet" / "mnist" / TRAIN_IMAGES).read_bytes() == FILES[TRAIN_IMAGES]


def test_progress_goes_to_stderr(server, tmp_path, capsys):
    fetch(tmp_path, [server.url("good")], progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert TRAIN_IMAGES in err and "100%" in err


def test_download_file_reports_each_mirror(server, tmp_path, refused_url):
    def verify(path):
        raise ValueError("nope")

    with pytest.raises(DownloadError) as info:
        download_file(TEST_LABELS, tmp_path, [server.url("good"), refused_url, "ftp://x/"],
                      verify, timeout=2, progress=False)
    reasons = dict(info.value.failures)
    assert reasons[server.url("good") + TEST_LABELS] == "rejected: nope"
    assert "cannot connect" in reasons[refused_url + TEST_LABELS]
    assert "unsupported URL scheme" in reasons["ftp://x/" + TEST_LABELS]
    assert list(tmp_path.iterdir()) == []
