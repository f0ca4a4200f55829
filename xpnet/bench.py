"""`xpnet bench`: time a training step and inference of the book's nets, optionally
against the same architecture in PyTorch measured in the same run.

A training step is ``net.gradient(x, t)`` then ``Adam.update(net.params, net.grads)``;
inference is ``net.predict(x)``. Inputs are random float32 images shaped like
Fashion-MNIST (1, 28, 28) with integer labels. Each step is timed alone with
`time.perf_counter` after device synchronisation; xpnet and PyTorch steps are
interleaved in alternating blocks (ABBA order) so that machine noise hits both.

    python -m xpnet.bench --vs torch
    python -m xpnet.bench --device gpu --models DeepConvNet --batch-sizes 100 --json

This is host-side measuring code: NumPy comes from the backend (``CPU.xp``) and
PyTorch is imported lazily, only for ``--vs torch``.
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

from . import __version__
from . import layers as L
from .backend import cpu_threads as parallel
from .backend import (CPU, DeviceError, asnumpy, get_device, synchronize, to_device,
                      using_device)
from .nets import DeepConvNet, MultiLayerNet, SimpleConvNet
from .optimizers import Adam

__all__ = ["MODELS", "run_bench", "collect_environment", "format_table", "torch_model",
           "count_params", "add_arguments", "run_from_args", "main"]

INPUT_SHAPE = (1, 28, 28)
N_CLASSES = 10
# One optimizer setting for both frameworks (xpnet's Adam eps is 1e-7, PyTorch's 1e-8).
ADAM = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}

MODELS = {
    "SimpleConvNet": lambda device, seed: SimpleConvNet(input_dim=INPUT_SHAPE, device=device,
                                                        seed=seed),
    "DeepConvNet": lambda device, seed: DeepConvNet(input_dim=INPUT_SHAPE, device=device,
                                                    seed=seed),
    # The book's chapter-6 deep MLP: 784-100x5-10, ReLU, He init (6 affine layers).
    "MultiLayerNet": lambda device, seed: MultiLayerNet(784, [100] * 5, N_CLASSES,
                                                        activation="relu", device=device,
                                                        seed=seed),
}
_ALIASES = {"simple": "SimpleConvNet", "simpleconvnet": "SimpleConvNet", "cnn": "SimpleConvNet",
            "deep": "DeepConvNet", "deepconvnet": "DeepConvNet",
            "mlp": "MultiLayerNet", "multilayernet": "MultiLayerNet"}

DEFAULT_BATCH_SIZES = (100, 1000)
DEFAULT_INFER_BATCH = 1000
DEFAULT_WARMUP = 2
QUICK_REPEATS, QUICK_WARMUP = 3, 1
# Auto repeats: about this much measured time per framework and row, within bounds.
_AUTO_TARGET_S, _AUTO_MIN, _AUTO_MAX = 1.5, 5, 200

_MB = 1024.0 * 1024.0


# ---------------------------------------------------------------------------
# Argument checking (shared by the CLI and `run_bench`)

def _model_name(name):
    key = str(name).strip()
    if key in MODELS:
        return key
    full = _ALIASES.get(key.lower())
    if full is None:
        raise ValueError("models: unknown model %r; valid: %s (or %s)"
                         % (name, ", ".join(MODELS), ", ".join(sorted(_ALIASES))))
    return full


def _split(values):
    """Accept ``['a,b', 'c']`` as well as ``'a,b'`` (and a lone number)."""
    if isinstance(values, (str, int)):
        values = [values]
    out = []
    for v in values:
        out += [p for p in str(v).split(",") if p.strip()] if isinstance(v, str) else [v]
    return out


def _positive_int(v, what, allow_zero=False):
    if isinstance(v, bool):
        raise ValueError("%s must be an integer, got %r" % (what, v))
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise ValueError("%s must be an integer, got %r" % (what, v)) from None
    if isinstance(v, float) and v != i:
        raise ValueError("%s must be an integer, got %r" % (what, v))
    if i < (0 if allow_zero else 1):
        raise ValueError("%s must be %s, got %r" % (what, ">= 0" if allow_zero else ">= 1", v))
    return i


# ---------------------------------------------------------------------------
# Statistics

def _quantile(sorted_vals, q):
    """Linear-interpolation quantile of an already sorted list."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def _summary(times_s, batch):
    a = sorted(times_s)
    med = _quantile(a, 0.5)
    q1, q3 = _quantile(a, 0.25), _quantile(a, 0.75)
    return {
        "ms": med * 1e3, "ms_min": a[0] * 1e3, "ms_q1": q1 * 1e3, "ms_q3": q3 * 1e3,
        "ms_iqr": (q3 - q1) * 1e3, "n": len(a),
        "images_per_s": batch / med if med > 0 else float("inf"),
    }


# ---------------------------------------------------------------------------
# Memory

def _proc_status_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _HostMemory:
    """Peak resident memory of this process over a stretch of code.

    On Linux the peak (VmHWM) is reset by writing 5 to /proc/self/clear_refs, so
    each measured block gets its own peak. Elsewhere the lifetime peak
    (``ru_maxrss``) is all there is."""

    def __init__(self):
        self.method = "VmHWM (reset per block)" if self._reset() else "ru_maxrss (process lifetime)"

    @staticmethod
    def _reset():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return _proc_status_kb("VmHWM") is not None

    def start(self):
        """Reset the peak (where possible); returns the resident bytes now."""
        if self.method.startswith("VmHWM"):
            self._reset()
        return self.current_bytes()

    @staticmethod
    def current_bytes():
        kb = _proc_status_kb("VmRSS")
        return None if kb is None else kb * 1024

    def peak_bytes(self):
        if self.method.startswith("VmHWM"):
            kb = _proc_status_kb("VmHWM")
            if kb is not None:
                return kb * 1024
        try:
            import resource
        except ImportError:
            return None
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024   # bytes on macOS, KiB on Linux


# ---------------------------------------------------------------------------
# PyTorch (optional, imported lazily)

def _import_torch():
    """``(torch, '')`` or ``(None, reason)``."""
    try:
        import torch
    except Exception as e:   # ImportError, or a broken install (missing shared library)
        return None, "%s: %s" % (type(e).__name__, e)
    return torch, ""


def _np():
    return CPU.xp


def _to_torch(torch, a, transpose=False):
    a = asnumpy(a)
    if transpose:
        a = a.T
    return torch.from_numpy(_np().ascontiguousarray(a))


def count_params(model):
    """Number of trained scalars in an xpnet net or a torch module."""
    if hasattr(model, "parameters") and callable(model.parameters):
        return int(sum(p.numel() for p in model.parameters()))
    return int(sum(int(v.size) for v in model.params.values() if v is not None))


def torch_model(net, device="cpu", torch=None):
    """The same architecture as xpnet `net` as a ``torch.nn.Sequential``, with
    xpnet's current weights copied in (same layer shapes, padding, strides, dropout
    ratios, BatchNorm settings). Raises ValueError for a layer without an equivalent."""
    if torch is None:
        torch, why = _import_torch()
        if torch is None:
            raise ImportError("torch_model needs PyTorch, which can't be imported (%s)" % why)
    nn = torch.nn
    mods, flattened, spatial = [], False, True
    with torch.no_grad():
        for layer in net.layers:
            p = layer.params
            if isinstance(layer, L.Convolution):
                FN, C, FH, FW = p["W"].shape
                m = nn.Conv2d(C, FN, (FH, FW), stride=tuple(layer.stride),
                              padding=tuple(layer.pad), bias=p["b"] is not None)
                m.weight.copy_(_to_torch(torch, p["W"]))
                if p["b"] is not None:
                    m.bias.copy_(_to_torch(torch, p["b"]))
                spatial = True
            elif isinstance(layer, L.Pooling):
                k = (layer.pool_h, layer.pool_w)
                if layer.mode == "max":
                    m = nn.MaxPool2d(k, stride=tuple(layer.stride), padding=tuple(layer.pad))
                else:   # xpnet's zero padding counts in the divisor
                    m = nn.AvgPool2d(k, stride=tuple(layer.stride), padding=tuple(layer.pad),
                                     count_include_pad=True)
            elif isinstance(layer, L.Affine):
                if not flattened:   # xpnet's Affine flattens N-D input itself
                    mods.append(nn.Flatten())
                    flattened = True
                n_in, n_out = p["W"].shape
                m = nn.Linear(n_in, n_out, bias=p["b"] is not None)
                m.weight.copy_(_to_torch(torch, p["W"], transpose=True))
                if p["b"] is not None:
                    m.bias.copy_(_to_torch(torch, p["b"]))
                spatial = False
            elif isinstance(layer, L.Flatten):
                m, flattened, spatial = nn.Flatten(), True, False
            elif isinstance(layer, L.Relu):
                m = nn.ReLU()
            elif isinstance(layer, L.Sigmoid):
                m = nn.Sigmoid()
            elif isinstance(layer, L.Tanh):
                m = nn.Tanh()
            elif isinstance(layer, L.Dropout):
                m = nn.Dropout(layer.dropout_ratio)
            elif isinstance(layer, L.BatchNormalization):
                D = p["gamma"].shape[0]
                cls = nn.BatchNorm2d if spatial and not flattened else nn.BatchNorm1d
                # xpnet keeps `momentum` of the old value; PyTorch weighs the new one.
                m = cls(D, eps=layer.eps, momentum=1.0 - layer.momentum)
                m.weight.copy_(_to_torch(torch, p["gamma"]))
                m.bias.copy_(_to_torch(torch, p["beta"]))
                m.running_mean.copy_(_to_torch(torch, layer.buffers["running_mean"]))
                m.running_var.copy_(_to_torch(torch, layer.buffers["running_var"]))
            else:
                raise ValueError("torch_model: layer %s of %s has no PyTorch equivalent here"
                                 % (layer.name, type(net).__name__))
            mods.append(m)
    dtype = getattr(torch, str(net.dtype))
    model = nn.Sequential(*mods).to(device=device, dtype=dtype)
    n_x, n_t = count_params(net), count_params(model)
    if n_x != n_t:
        raise RuntimeError("torch_model: %s has %d parameters but the PyTorch copy has %d"
                           % (type(net).__name__, n_x, n_t))
    return model


# ---------------------------------------------------------------------------
# What gets timed

class _Case:
    """One framework's side of a row: a `step` to time and how to read its memory."""

    def __init__(self, framework, step, sync, mem_reset=None, mem_read=None):
        self.framework = framework
        self.step = step
        self.sync = sync
        self.mem_reset = mem_reset or (lambda: None)
        self.mem_read = mem_read or (lambda: {"peak_bytes": None, "peak_kind": None})
        self.times = []
        self.host_peak = None    # highest process peak RSS over its timed blocks


def _traced_peak(work):
    """Peak bytes NumPy held while `work()` ran, above what was held before
    (tracemalloc sees NumPy's data buffers). Untimed: tracing slows Python."""
    import tracemalloc
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - base)


def _fresh_footprint(make_net, task, x, t):
    """Everything a new net needs for two steps: parameters, Adam state, layer
    caches and workspaces, temporaries (the convolutions' shared scratch buffers too:
    they are dropped first, so this net makes them again)."""
    from .conv import release_scratch
    release_scratch()

    def work():
        net = make_net()
        opt = Adam(lr=ADAM["lr"], beta1=ADAM["beta1"], beta2=ADAM["beta2"], eps=ADAM["eps"])
        for _ in range(2):
            if task == "train":
                net.gradient(x, t)
                opt.update(net.params, net.grads)
            else:
                net.predict(x, train_flg=False)
    return _traced_peak(work)


def _xpnet_case(task, net, opt, dev, x_host, t_host, make_net):
    x = to_device(x_host, dev)
    t = to_device(t_host, dev)
    xp = dev.xp

    def sync():
        synchronize(xp)

    def train():
        net.gradient(x, t)
        opt.update(net.params, net.grads)

    def infer():
        net.predict(x, train_flg=False)

    step = train if task == "train" else infer
    if dev.kind == "gpu":
        pool = xp.get_default_memory_pool()

        def mem_reset():
            pool.free_all_blocks()   # unused blocks only; live arrays stay counted

        def mem_read():
            return {"peak_bytes": int(pool.total_bytes()), "peak_kind": "cupy pool total bytes"}
    else:
        mem_reset = None

        def mem_read():
            return {"peak_bytes": _fresh_footprint(make_net, task, x, t),
                    "peak_kind": "numpy peak bytes of a fresh net over 2 steps (tracemalloc)"}
    return _Case("xpnet", step, sync, mem_reset, mem_read)


def _torch_case(task, torch, model, opt, tdev, x_host, t_host):
    x = torch.from_numpy(x_host).to(tdev)
    t = torch.from_numpy(t_host).to(tdev)
    crit = torch.nn.CrossEntropyLoss()
    cuda = tdev.type == "cuda"
    model.train(task == "train")

    def sync():
        if cuda:
            torch.cuda.synchronize(tdev)

    def train():
        opt.zero_grad(set_to_none=True)
        crit(model(x), t).backward()
        opt.step()

    def infer():
        with torch.inference_mode():
            model(x)

    if cuda:
        def mem_reset():
            torch.cuda.reset_peak_memory_stats(tdev)

        def mem_read():
            return {"peak_bytes": int(torch.cuda.max_memory_allocated(tdev)),
                    "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(tdev)),
                    "peak_kind": "torch.cuda.max_memory_allocated"}
    else:
        mem_reset = mem_read = None
    # On the CPU PyTorch keeps no allocator statistics: only the process RSS is known.
    return _Case("torch", train if task == "train" else infer, sync, mem_reset, mem_read)


def _measure(cases, warmup, repeats, host_mem):
    """Warm up every case, then time `repeats` steps of each in interleaved blocks."""
    for c in cases:
        c.mem_reset()
    probe = {}
    for c in cases:
        for _ in range(warmup):
            c.sync()
            t0 = time.perf_counter()
            c.step()
            c.sync()
            probe[c.framework] = time.perf_counter() - t0
    if repeats is None:
        if probe:
            est = max(probe.values())
            repeats = int(min(_AUTO_MAX, max(_AUTO_MIN, _AUTO_TARGET_S // max(est, 1e-9))))
        else:
            repeats = 10
    block = max(1, min(5, -(-repeats // 4)))
    done, b = 0, 0
    while done < repeats:
        n = min(block, repeats - done)
        order = cases if b % 2 == 0 else cases[::-1]
        for c in order:
            for other in cases:
                other.sync()
            host_mem.start()
            for _ in range(n):
                t0 = time.perf_counter()
                c.step()
                c.sync()
                c.times.append(time.perf_counter() - t0)
            peak = host_mem.peak_bytes()
            if peak is not None:
                c.host_peak = peak if c.host_peak is None else max(c.host_peak, peak)
        done += n
        b += 1
    return repeats


# ---------------------------------------------------------------------------
# The benchmark

def _resolve_device(device):
    if device is None:
        return get_device(None)
    return get_device(device)


def _torch_setup(vs_torch, dev, log):
    """``(torch, torch_device)`` or ``(None, None)`` with one message saying why."""
    if not vs_torch:
        return None, None
    torch, why = _import_torch()
    if torch is None:
        log("--vs torch: PyTorch can't be imported (%s); showing xpnet rows only. "
            "Install it with `pip install torch` (or `pip install \"xpnet[bench]\"`)." % why)
        return None, None
    if dev.kind == "gpu":
        if not torch.cuda.is_available():
            log("--vs torch: this PyTorch (%s) can't use CUDA, so it can't run on %s; "
                "showing xpnet rows only." % (torch.__version__, dev.name))
            return None, None
        return torch, torch.device("cuda", dev.id)
    return torch, torch.device("cpu")


def _stderr(msg):
    print(msg, file=sys.stderr, flush=True)


def run_bench(models=None, batch_sizes=DEFAULT_BATCH_SIZES, device=None, vs_torch=False,
              repeats=None, warmup=None, infer_batch=DEFAULT_INFER_BATCH, quick=False, seed=0,
              log=_stderr, progress=None):
    """Run the benchmark and return a list of row dicts.

    One ``task='train'`` row per model and batch size (forward + backward + Adam) and
    one ``task='infer'`` row per model at `infer_batch` (0 skips them). ``repeats=None``
    picks 5..200 steps (about 1.5 s per framework) from the warm-up time; ``quick=True``
    means 3 repeats and 1 warm-up step.
    Each row holds ``xpnet`` (and ``torch``, or None) timing dicts (``ms`` median,
    ``ms_min``, ``ms_iqr``, ``images_per_s``, peak memory) and ``ratio`` = xpnet
    time / torch time (> 1: xpnet is slower). `log` gets human messages (e.g. no
    PyTorch); `progress`, if given, gets each row as it is done."""
    names = [_model_name(m) for m in _split(models if models is not None else list(MODELS))]
    if not names:
        raise ValueError("models: give at least one of %s" % ", ".join(MODELS))
    batches = [_positive_int(b, "batch_sizes entry") for b in _split(batch_sizes)]
    infer_batch = _positive_int(infer_batch, "infer_batch", allow_zero=True)
    if quick:
        repeats = QUICK_REPEATS if repeats is None else repeats
        warmup = QUICK_WARMUP if warmup is None else warmup
    warmup = DEFAULT_WARMUP if warmup is None else _positive_int(warmup, "warmup", allow_zero=True)
    if repeats is not None:
        repeats = _positive_int(repeats, "repeats")
    log = log or (lambda msg: None)

    dev = _resolve_device(device)
    torch, tdev = _torch_setup(vs_torch, dev, log)
    with using_device(dev):   # kernels, streams and synchronisation on the benchmarked GPU
        return _run(names, batches, infer_batch, dev, torch, tdev, repeats, warmup, seed,
                    progress)


def _run(names, batches, infer_batch, dev, torch, tdev, repeats, warmup, seed, progress):
    host_mem = _HostMemory()
    np = _np()
    rows = []
    for name in names:
        make_net = (lambda name=name: MODELS[name](dev, seed))
        net = make_net()
        opt = Adam(lr=ADAM["lr"], beta1=ADAM["beta1"], beta2=ADAM["beta2"], eps=ADAM["eps"])
        tmodel = topt = None
        if torch is not None:
            tmodel = torch_model(net, tdev, torch)
            topt = torch.optim.Adam(tmodel.parameters(), lr=ADAM["lr"],
                                    betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"])
        plan = [("train", b) for b in batches] + ([("infer", infer_batch)] if infer_batch else [])
        for task, batch in plan:
            rng = np.random.default_rng(seed)
            x_host = rng.random((batch,) + INPUT_SHAPE, dtype=np.float32)
            t_host = rng.integers(0, N_CLASSES, size=batch, dtype=np.int64)
            cases = [_xpnet_case(task, net, opt, dev, x_host, t_host, make_net)]
            if torch is not None:
                cases.append(_torch_case(task, torch, tmodel, topt, tdev, x_host, t_host))
            n = _measure(cases, warmup, repeats, host_mem)
            row = {"model": name, "task": task, "batch": batch, "device": dev.name,
                   "params": count_params(net), "repeats": n, "warmup": warmup}
            for c in cases:
                s = _summary(c.times, batch)
                s["host_peak_rss_bytes"] = c.host_peak
                s.update(c.mem_read())
                row[c.framework] = s
            row.setdefault("torch", None)
            row["ratio"] = (row["xpnet"]["ms"] / row["torch"]["ms"]
                            if row["torch"] and row["torch"]["ms"] > 0 else None)
            row["host_memory_method"] = host_mem.method
            rows.append(row)
            if progress is not None:
                progress(row)
            del cases
    return rows


# ---------------------------------------------------------------------------
# Environment

def _blas_info():
    np = _np()
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return {"name": blas.get("name"), "version": blas.get("version")}
    except Exception:   # NumPy < 1.26 has no mode="dicts"; not worth parsing its print-out
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def collect_environment(device=None, vs_torch=False):
    """Versions, device and machine facts worth keeping next to the numbers."""
    dev = _resolve_device(device)
    np = _np()
    env = {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "xpnet": __version__, "python": platform.python_version(),
        "platform": platform.platform(), "numpy": np.__version__, "blas": _blas_info(),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": _loadavg(), "device": dev.name, "device_name": _cpu_model(),
        "xpnet_threads": parallel.info(),
        "env": {k: os.environ[k] for k in ("XPNET_DEVICE", "XPNET_NUM_THREADS", "OMP_NUM_THREADS",
                                            "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                            "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
                if k in os.environ},
    }
    if dev.kind == "gpu":
        cp = dev.xp
        env["cupy"] = cp.__version__
        try:
            props = cp.cuda.runtime.getDeviceProperties(dev.id)
            name = props.get("name", b"")
            env["device_name"] = name.decode() if isinstance(name, bytes) else str(name)
            env["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
        except Exception as e:   # informative only
            env["device_name"] = "unknown (%s)" % e
    if vs_torch:
        torch, why = _import_torch()
        if torch is None:
            env["torch"] = None
            env["torch_error"] = why
        else:
            env["torch"] = torch.__version__
            env["torch_threads"] = torch.get_num_threads()
            env["torch_cuda"] = torch.version.cuda
            if dev.kind == "gpu" and torch.cuda.is_available():
                env["cudnn"] = torch.backends.cudnn.version()
                env["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    return env


# ---------------------------------------------------------------------------
# Output

def _fmt_ms(v):
    if v is None:
        return "-"
    return "%.3f" % v if v < 1 else "%.2f" % v if v < 100 else "%.1f" % v


def _fmt_rate(v):
    return "-" if v is None else "{:,.0f}".format(v)


def _fmt_mb(b):
    if b is None:
        return "-"
    mb = b / _MB
    return "%.1f" % mb if mb < 10 else "%.0f" % mb


def _rss(r):
    vals = [r[f]["host_peak_rss_bytes"] for f in ("xpnet", "torch")
            if r.get(f) and r[f].get("host_peak_rss_bytes") is not None]
    return max(vals) if vals else None


def format_table(rows):
    """An aligned text table, one line per row."""
    head = ["model", "task", "batch", "xpnet ms", "min", "IQR", "torch ms", "min", "IQR",
            "ratio x/t", "xpnet img/s", "torch img/s", "mem MB x", "mem MB t", "RSS MB"]
    body = []
    for r in rows:
        x, t = r["xpnet"], r.get("torch")
        body.append([
            r["model"], r["task"], str(r["batch"]),
            _fmt_ms(x["ms"]), _fmt_ms(x["ms_min"]), _fmt_ms(x["ms_iqr"]),
            _fmt_ms(t and t["ms"]), _fmt_ms(t and t["ms_min"]), _fmt_ms(t and t["ms_iqr"]),
            "-" if r.get("ratio") is None else "%.2fx" % r["ratio"],
            _fmt_rate(x["images_per_s"]), _fmt_rate(t and t["images_per_s"]),
            _fmt_mb(x.get("peak_bytes")), _fmt_mb(t and t.get("peak_bytes")), _fmt_mb(_rss(r)),
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    left = {0, 1}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    return "\n".join(out)


def _describe(env, rows):
    gpu = env["device"].startswith("gpu")
    lines = ["xpnet %s | Python %s | NumPy %s%s" % (
        env["xpnet"], env["python"], env["numpy"],
        " (%s %s)" % (env["blas"]["name"], env["blas"]["version"]) if env.get("blas") else "")]
    if gpu:
        lines.append("device %s: %s | CuPy %s" % (env["device"], env.get("device_name"),
                                                 env.get("cupy")))
    else:
        lines.append("device cpu: %s, %s CPUs usable" % (env.get("cpu_model"),
                                                        env.get("cpus_usable")))
        th = env.get("xpnet_threads") or {}
        lines.append("xpnet CPU threads: %s%s" % (
            th.get("threads"), " (BLAS held at 1 thread inside conv nets' steps)"
            if (th.get("threads") or 1) > 1 else
            " (threading off%s)" % (": " + th["disabled_because"]
                                    if th.get("disabled_because") else "")))
    if "torch" in env:
        if env["torch"] is None:
            lines.append("PyTorch: not available")
        else:
            s = "PyTorch %s, %d threads" % (env["torch"], env["torch_threads"])
            if gpu and "cudnn" in env:
                s += ", cuDNN %s, cudnn.benchmark=%s" % (env["cudnn"], env["cudnn_benchmark"])
            lines.append(s)
    lines.append("load average at start: %s%s" % (
        env.get("loadavg"), " | " + " ".join("%s=%s" % kv for kv in env["env"].items())
        if env.get("env") else ""))
    lines.append("")
    lines.append(format_table(rows))
    lines.append("")
    lines.append("ms: median per step (train: forward + backward + Adam) or per batch (infer); "
                 "min and IQR over %s timed runs." % (
                     ", ".join(str(n) for n in sorted({r["repeats"] for r in rows})) or "-"))
    if any(r.get("ratio") is not None for r in rows):
        lines.append("ratio x/t = xpnet time / torch time (> 1: xpnet slower); on infer rows it "
                     "equals torch img/s / xpnet img/s.")
    if gpu:
        lines.append("mem MB: CuPy memory pool total bytes (x), torch.cuda.max_memory_allocated "
                     "(t), over the row.")
    else:
        lines.append("mem MB x: peak NumPy memory of a fresh net over two steps (parameters, "
                     "Adam state, caches, workspaces; tracemalloc); PyTorch keeps no CPU "
                     "allocator statistics (-).")
    lines.append("RSS MB: peak resident memory of the whole process (both frameworks, data and "
                 "libraries) while the row ran, by %s." % (
                     rows[0]["host_memory_method"] if rows else "-"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line

DESCRIPTION = ("Time a training step (forward + backward + Adam) and inference of "
               "SimpleConvNet, DeepConvNet and MultiLayerNet, optionally against PyTorch.")


def _list_arg(what, conv):
    def parse(s):
        try:
            return [conv(p, what) for p in _split(s)]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _int_arg(what, allow_zero=False):
    def parse(s):
        try:
            return _positive_int(s, what, allow_zero)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def add_arguments(parser):
    """Add the bench options to an argparse parser (``xpnet bench`` or ``python -m``)."""
    parser.add_argument("--device", default=None,
                        help="cpu, gpu, gpu:N or auto (default: XPNET_DEVICE, else cpu)")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        type=_list_arg("--models", lambda m, what: _model_name(m)),
                        default=None,
                        help="models, space or comma separated: %s (default: all)"
                             % ", ".join(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", default=None, metavar="N",
                        type=_list_arg("--batch-sizes", _positive_int),
                        help="training batch sizes (default: %s)"
                             % " ".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--infer-batch", type=_int_arg("--infer-batch", allow_zero=True),
                        default=DEFAULT_INFER_BATCH,
                        help="batch for the inference rows; 0 skips them (default: %(default)s)")
    parser.add_argument("--repeats", type=_int_arg("--repeats"), default=None,
                        help="timed steps per framework and row (default: 5..200, about 1.5 s, "
                             "from the warm-up time)")
    parser.add_argument("--warmup", type=_int_arg("--warmup", allow_zero=True), default=None,
                        help="untimed steps first (default: %d)" % DEFAULT_WARMUP)
    parser.add_argument("--quick", action="store_true",
                        help="%d repeats, %d warm-up (a smoke test, not a measurement)"
                             % (QUICK_REPEATS, QUICK_WARMUP))
    parser.add_argument("--vs", choices=["torch"], default=None,
                        help="also time the same architecture in PyTorch, interleaved")
    parser.add_argument("--seed", type=_int_arg("--seed", allow_zero=True), default=0,
                        help="seed for weights and inputs (default: %(default)s)")
    parser.add_argument("--threads", type=_int_arg("--threads"), default=None,
                        help="CPU threads for xpnet and for PyTorch (default: xpnet's "
                             "XPNET_NUM_THREADS or BLAS count; PyTorch's own default)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (environment + rows) instead of the table")
    parser.add_argument("--output", "-o", default=None, metavar="FILE",
                        help="also write the JSON to FILE (atomically)")
    return parser


def _flatten(lists):
    if lists is None:
        return None
    return [v for part in lists for v in part]


def _progress(r):
    t = r["torch"]
    _stderr("  %s %s batch %d: xpnet %s ms%s" % (
        r["model"], r["task"], r["batch"], _fmt_ms(r["xpnet"]["ms"]),
        ", torch %s ms (%.2fx)" % (_fmt_ms(t["ms"]), r["ratio"]) if t else ""))


def run_from_args(args):
    """Run the benchmark from parsed arguments; returns the exit status."""
    def fail(msg):
        print("xpnet bench: error: %s" % msg, file=sys.stderr)
        return 2
    vs_torch = args.vs == "torch"
    threads = getattr(args, "threads", None)
    if threads is not None:
        from .backend import cpu_threads as parallel
        parallel.set_num_threads(threads)
        torch, _ = _import_torch() if vs_torch else (None, None)
        if torch is not None:
            torch.set_num_threads(threads)
    try:
        dev = _resolve_device(args.device)
        env = collect_environment(dev, vs_torch)
        rows = run_bench(models=_flatten(args.models),
                         batch_sizes=_flatten(args.batch_sizes) or DEFAULT_BATCH_SIZES,
                         device=dev, vs_torch=vs_torch, repeats=args.repeats, warmup=args.warmup,
                         infer_batch=args.infer_batch, quick=args.quick, seed=args.seed,
                         progress=_progress)
    except (DeviceError, ValueError) as e:
        return fail(e)
    env["loadavg_end"] = _loadavg()
    doc = {"environment": env,
           "settings": {"models": sorted({r["model"] for r in rows}, key=list(MODELS).index),
                        "batch_sizes": _flatten(args.batch_sizes) or list(DEFAULT_BATCH_SIZES),
                        "infer_batch": args.infer_batch, "repeats": args.repeats,
                        "warmup": args.warmup, "quick": args.quick, "vs": args.vs,
                        "seed": args.seed, "threads": threads, "adam": ADAM, "input_shape": list(INPUT_SHAPE),
                        "dtype": "float32"},
           "rows": rows}
    text = json.dumps(doc, indent=2, sort_keys=False)
    if args.output:
        from .serialization import atomic_write_bytes
        atomic_write_bytes(args.output, (text + "\n").encode("utf-8"))
    if args.json:
        print(text)
    else:
        print(_describe(env, rows))
        print("load average at end: %s" % (env["loadavg_end"],))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m xpnet.bench", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
