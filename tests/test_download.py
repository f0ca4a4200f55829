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
        self.sent = {}      # mode -> bytes the handler managed to send
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
                if mode == "flood":     # 200 MB, no Content-Length, for any file
                    return self._flood(mode)
                if mode == "trickle-head":   # headers a byte at a time
                    return self._trickle(mode, b"HTTP/1.0 200 OK\r\nX-Pad: " + b"a" * 1000,
                                         1, 0.05)
                if mode == "trickle":   # the body, 100 bytes every 0.1 s
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return self._trickle(mode, body, 100, 0.1)
                if mode == "liar":      # announces far more than any valid file
                    self.send_response(200)
                    self.send_header("Content-Length", str(200 * 10**6))
                    self.end_headers()
                    return self._flood(mode)
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

            def _flood(self, mode):
                if mode == "flood":
                    self.send_response(200)
                    self.end_headers()
                block = bytes(1 << 16)
                outer.sent[mode] = 0
                try:
                    for _ in range(200 * 10**6 // len(block)):
                        self.wfile.write(block)
                        outer.sent[mode] += len(block)
                except OSError:
                    pass    # the client stopped reading

            def _trickle(self, mode, data, n, pause):
                outer.sent[mode] = 0
                try:
                    for i in range(0, len(data), n):
                        self.wfile.write(data[i:i + n])
                        self.wfile.flush()
                        outer.sent[mode] += len(data[i:i + n])
                        time.sleep(pause)
                except OSError:
                    pass

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
    assert_synthetic(fetch(tmp_path, [server.url("slow"), server.url("good")], timeout=0.3))
    # The slow mirror is given up on after the first timeout, not four times (counted,
    # not timed: a busy machine makes no difference).
    assert len(server.hits("slow")) == 1


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


# ------------------------------------------------------------ hostile mirrors (issue 10)

import io
import os
import subprocess
import sys
from pathlib import Path

from xpnet.datasets import download as DL


def test_flood_without_content_length_stops_after_the_expected_size(server, tmp_path):
    size = len(FILES[TEST_LABELS])
    buf = io.BytesIO()
    with pytest.raises(DL._TooBig, match=f"sent more than the {size} bytes expected"):
        DL._stream(server.url("flood") + TEST_LABELS, buf, 5, DL._Progress("x", None, False),
                   max_bytes=size)
    assert len(buf.getvalue()) == size + 1          # read no more than that
    with pytest.raises(DownloadError) as info:
        download_file(TEST_LABELS, tmp_path, [server.url("flood")], lambda p: None,
                      timeout=5, progress=False, max_bytes=size)
    assert f"too large: the server sent more than the {size} bytes" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    # what the server could push before the client hung up: socket buffers, not 200 MB
    time.sleep(0.2)
    assert server.sent["flood"] < 50 * 10**6


def test_announced_size_above_the_cap_is_refused_before_reading(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download_file(TEST_LABELS, tmp_path, [server.url("liar")], lambda p: None,
                      timeout=5, progress=False, max_bytes=1000)
    assert "too large: the server announces 200000000 bytes, more than the 1000 expected" \
        in str(info.value)


def test_load_mnist_caps_each_file_and_falls_back(server, tmp_path):
    # the cap is the largest valid file (the spec's IDX, gzip-compressed at worst)
    fs = SPECS["mnist"].files["test_labels"]
    assert 10008 < fs.max_size < 10008 + 70000
    assert_synthetic(fetch(tmp_path, [server.url("flood"), server.url("good")]))
    assert_cache_clean(tmp_path / "mnist")
    # the flood (200 MB) was cut after the cap: socket buffers at most were pushed
    time.sleep(0.2)
    assert server.sent["flood"] < 50 * 10**6


def test_trickling_body_hits_the_total_deadline(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download_file(TRAIN_IMAGES, tmp_path, [server.url("trickle")], lambda p: None,
                      timeout=5, progress=False, deadline=1.0)
    assert "too slow: not finished within the 1 s deadline" in str(info.value)
    # per-read timeout 5 s never expired: the total did, long before the 16 s the whole
    # trickle takes (counted in bytes the server got out, not timed)
    assert server.sent["trickle"] < len(FILES[TRAIN_IMAGES]) // 2
    assert list(tmp_path.iterdir()) == []


def test_trickling_headers_hit_the_total_deadline(server, tmp_path):
    unreachable = {}
    with pytest.raises(DownloadError) as info:
        download_file(TRAIN_IMAGES, tmp_path, [server.url("trickle-head")], lambda p: None,
                      timeout=5, progress=False, deadline=1.0, unreachable=unreachable)
    assert "too slow" in str(info.value)
    assert server.sent["trickle-head"] < 500     # of 1,000+ header bytes at 20 a second
    assert server.url("trickle-head") in unreachable     # not tried again for the next file


def test_default_deadline_comes_from_timeout_and_size(server, tmp_path):
    assert DL.total_deadline(5, 10**6) == 2 * 5 + 10**6 / DL.MIN_RATE
    assert DL.total_deadline(5) == 50
    # 15,719 bytes at 1,000 B/s would take 16 s; the default allows 2*0.5 + 15719/20000 s
    deadline = DL.total_deadline(0.5, len(FILES[TRAIN_IMAGES]))
    assert deadline < 2
    with pytest.raises(DownloadError, match="too slow"):
        download_file(TRAIN_IMAGES, tmp_path, [server.url("trickle")], lambda p: None,
                      timeout=0.5, progress=False, max_bytes=len(FILES[TRAIN_IMAGES]))
    assert server.sent["trickle"] < len(FILES[TRAIN_IMAGES]) // 2     # counted, not timed


def part_name(name, pid, host=None):
    return f".{name}.{pid}@{host or DL._host()}.abc_12.part"


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_part_files_are_removed_live_ones_kept(server, tmp_path):
    cache = tmp_path / "mnist"
    cache.mkdir()
    old = time.time() - 2 * DL.STALE_PART_AGE
    files = {
        part_name(TRAIN_IMAGES, dead_pid()): False,            # killed process: removed
        part_name(TRAIN_LABELS, os.getppid()): True,           # running process: kept
        part_name(TEST_IMAGES, 12345, "other-host.example"): True,   # can't tell: kept
        f".{TEST_LABELS}.abcd1234.part": True,                 # older naming, recent: kept
        f".{TRAIN_IMAGES}.k2j4h5g6.part": False,               # older naming, old: removed
        part_name(TEST_LABELS, 54321, "other-host.example") + "": False,  # old: removed
        "notes.txt": True,                                     # not ours
    }
    for name in files:
        (cache / name).write_bytes(b"partial")
    for name in (f".{TRAIN_IMAGES}.k2j4h5g6.part",
                 part_name(TEST_LABELS, 54321, "other-host.example")):
        os.utime(cache / name, (old, old))
    assert_synthetic(fetch(tmp_path, [server.url("good")]))
    left = {p.name for p in cache.iterdir()}
    for name, kept in files.items():
        assert (name in left) == kept, name


def test_a_concurrent_download_keeps_its_part_file(server, tmp_path):
    """A second process downloading into the same folder: neither removes the other's
    temporary file, and both end with the right file."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from xpnet.datasets.download import download_file\n"
        "download_file(%r, %r, [%r], lambda p: None, timeout=5, progress=False)\n"
        % (str(Path(DL.__file__).parents[2]), TRAIN_IMAGES, str(tmp_path),
           server.url("slow")))
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]:
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        theirs = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
        assert f".{child.pid}@" in theirs[0].name
        download_file(TRAIN_IMAGES, tmp_path, [server.url("good")], lambda p: None,
                      timeout=5, progress=False)
        assert theirs[0].exists() or child.poll() is not None
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert [p.name for p in tmp_path.iterdir()] == [TRAIN_IMAGES]
    assert (tmp_path / TRAIN_IMAGES).read_bytes() == FILES[TRAIN_IMAGES]


def test_downloaded_files_get_the_umask_mode(server, tmp_path):
    old = os.umask(0o027)
    try:
        p = download_file(TEST_LABELS, tmp_path, [server.url("good")], lambda p: None,
                          timeout=5, progress=False)
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o640


def test_huge_local_file_is_not_read(tmp_path):
    """A file in the data folder larger than any valid copy is refused from its size."""
    from xpnet.datasets.mnist import _load_checked
    fs = SPECS["mnist"].files["test_labels"]
    p = tmp_path / fs.filename
    with open(p, "wb") as f:
        f.truncate(10 ** 9)           # sparse: 1 GB on paper, nothing on disk
    with pytest.raises(ValueError, match=r"1000000000 bytes, larger than any valid "
                                         r"t10k-labels-idx1-ubyte.gz"):
        _load_checked(p, fs, None)
