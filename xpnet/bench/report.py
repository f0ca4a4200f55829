"""What the bench writes: the environment next to the numbers (versions, device,
machine, threads), the aligned text table, the human summary around it, and
the JSON document.

It only formats rows that `runner.run_bench` made: it must never time or run a
net, and never import PyTorch unless the environment of a ``--vs torch`` run
asks for its version.
"""
import datetime
import os
import platform

from ..version import __version__
from ..backend import CPU, get_device
from ..backend import cpu_threads as parallel
from .runner import ADAM, INPUT_SHAPE, MODELS
from .torch_twin import import_torch

__all__ = ["collect_environment", "format_table", "describe", "document", "fmt_ms",
           "loadavg"]

_MB = 1024.0 * 1024.0
_ENV_VARS = ("XPNET_DEVICE", "XPNET_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


# ---------------------------------------------------------------------------
# Environment

def _blas_info():
    try:
        cfg = CPU.xp.show_config(mode="dicts")
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


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _accelerator_name(dev):
    """The accelerator's name (a GPU, MPS), else None (the host)."""
    try:
        return dev.backend.hardware_name(dev)
    except Exception as e:   # informative only
        return "unknown (%s)" % e


def collect_environment(device=None, vs_torch=False):
    """Versions, device and machine facts worth keeping next to the numbers."""
    dev = get_device(device)
    np = CPU.xp
    env = {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "xpnet": __version__, "python": platform.python_version(),
        "platform": platform.platform(), "numpy": np.__version__, "blas": _blas_info(),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": loadavg(), "device": dev.name, "device_kind": dev.kind,
        "reference_kernels": dev.reference, "device_name": _cpu_model(),
        "device_library": "%s %s" % (dev.xp.__name__, getattr(dev.xp, "__version__", "?")),
        "xpnet_threads": parallel.info(),
        "env": {k: os.environ[k] for k in _ENV_VARS if k in os.environ},
    }
    env["device_name"] = _accelerator_name(dev) or env["device_name"]
    env["memory_meter"] = ("pool" if dev.backend.memory_pool(dev) is not None
                           else "tracemalloc" if dev.backend.tracemalloc_counted else None)
    env.update(dev.backend.report_facts(dev))
    if vs_torch:
        torch, why = import_torch()
        if torch is None:
            env["torch"] = None
            env["torch_error"] = why
        else:
            env["torch"] = torch.__version__
            env["torch_threads"] = torch.get_num_threads()
            env["torch_cuda"] = torch.version.cuda
            if dev.backend.is_gpu(dev) and torch.cuda.is_available():
                env["cudnn"] = torch.backends.cudnn.version()
                env["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    return env


# ---------------------------------------------------------------------------
# Table and summary

def fmt_ms(v):
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
            fmt_ms(x["ms"]), fmt_ms(x["ms_min"]), fmt_ms(x["ms_iqr"]),
            fmt_ms(t and t["ms"]), fmt_ms(t and t["ms_min"]), fmt_ms(t and t["ms_iqr"]),
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


def _device_line(env):
    if env.get("memory_meter") == "tracemalloc":      # the host: its CPU
        return "device %s: %s, %s CPUs usable%s" % (
            env["device"], env.get("cpu_model"), env.get("cpus_usable"),
            " (xpnet's reference kernels, fast paths off)" if env.get("reference_kernels")
            else "")
    return "device %s: %s | %s" % (env["device"], env.get("device_name"),
                                   env.get("device_library"))


def _memory_note(env):
    meter = env.get("memory_meter")
    if meter == "pool":
        return ("mem MB: CuPy memory pool total bytes (x), torch.cuda.max_memory_allocated "
                "(t), over the row.")
    if meter == "tracemalloc":
        return ("mem MB x: peak NumPy memory of a fresh net over two steps (parameters, "
                "Adam state, caches, workspaces; tracemalloc); PyTorch keeps no CPU "
                "allocator statistics (-).")
    return ("mem MB: not measured on %s (-); torch.cuda.max_memory_allocated (t) on a CUDA "
            "device." % env["device"])


def describe(env, rows):
    """The human report: environment lines, the table, and what the columns mean."""
    lines = ["xpnet %s | Python %s | NumPy %s%s" % (
        env["xpnet"], env["python"], env["numpy"],
        " (%s %s)" % (env["blas"]["name"], env["blas"]["version"]) if env.get("blas") else "")]
    lines.append(_device_line(env))
    if env.get("memory_meter") == "tracemalloc":       # NumPy's kernels: xpnet's threads
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
            if "cudnn" in env:
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
    compiled = [r for r in rows if r.get("mode")]
    if compiled:
        lines.append("train-compiled: the step of xpnet.compile_step (host checks, then one "
                     "program), against PyTorch's eager step; " + "; ".join(
                         "%s b%d %s%s" % (r["model"], r["batch"], r["mode"],
                                          "" if r.get("vs_eager") is None else
                                          ", %.1fx faster than xpnet eager" % r["vs_eager"])
                         for r in compiled) + ".")
    lines.append(_memory_note(env))
    lines.append("RSS MB: peak resident memory of the whole process (both frameworks, data and "
                 "libraries) while the row ran, by %s." % (
                     rows[0]["host_memory_method"] if rows else "-"))
    return "\n".join(lines)


def document(env, rows, settings):
    """The JSON document: environment, settings (with the fixed ones added) and rows."""
    models = sorted({r["model"] for r in rows}, key=list(MODELS).index)
    settings = dict({"models": models}, **settings, adam=ADAM, input_shape=list(INPUT_SHAPE),
                    dtype="float32")
    return {"environment": env, "settings": settings, "rows": rows}
