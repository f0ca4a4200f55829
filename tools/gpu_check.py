"""GPU check: everything xpnet can check on its first (or any) GPU, in one command.

    python tools/gpu_check.py --all --json OUT.json     # the whole check (< 10 min, one GPU)
    python tools/gpu_check.py --render OUT.json         # docs/performance.md's GPU table
    python tools/gpu_check.py --plan                    # what --all would run (no GPU needed)
    python tools/gpu_check.py [--time] [--profile]      # kernels and gradients only

`--all` runs, in order, each stage recorded as it finishes (the JSON is rewritten
atomically after every stage, so an interrupted run keeps what it measured):
- ``suite``: the test suite's cupy, cupy-reference and torch:cuda cases (pytest ``-k``),
  with ``XPNET_REQUIRE_GPU=1`` so a case that would skip fails;
- ``kernels``: every CUDA kernel against the reference kernels (float64);
- ``gradients``: float64 gradients of three nets on the GPU against the CPU;
- ``bench``: ``xpnet bench --device gpu --vs torch`` (training at batch 100 and 1000,
  inference at 1000), its JSON document kept whole;
- ``cuda_graph``: a CUDA-graph replay row, when xpnet has one (``not built`` otherwise).
The exit status is 0 only when every stage that ran passed. Without a usable GPU it
fails at once: a GPU check never passes by skipping.
"""
import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import xpnet  # noqa: E402
from xpnet.backend import cuda_kernels, load_library, reference  # noqa: E402
from xpnet.serialization import atomic_write_bytes  # noqa: E402

STAGES = ("suite", "kernels", "gradients", "bench", "cuda_graph")
SUITE_K = "(cupy or torch-cuda or torch:cuda) and not standin"
BENCH_ARGS = ["--device", "gpu", "--vs", "torch", "--batch-sizes", "100", "1000",
              "--infer-batch", "1000"]
# wall-clock limits per stage (seconds): the whole check stays under 10 minutes
LIMITS = {"suite": 300, "kernels": 60, "gradients": 60, "bench": 150, "cuda_graph": 30}


def close(a, b, tol=1e-5):
    a, b = xpnet.asnumpy(a).astype(np.float64), xpnet.asnumpy(b).astype(np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
    assert err < tol, err
    return err


def kernels(cp):
    rng = np.random.default_rng(0)
    geos = [((2, 3, 7, 9), (3, 2), 1, 0), ((1, 4, 10, 8), (3, 3), 2, 1), ((3, 5, 11, 12), (5, 3), 3, 2),
            ((2, 33, 6, 6), (2, 2), 2, 0), ((4, 1, 28, 28), (5, 5), 1, 2)]
    worst = 0
    for shape, (kh, kw), s, p in geos:
        st, pd = (s, s), (p, p)
        x = rng.standard_normal(shape)
        xg = cp.asarray(x)
        c0 = reference.im2col(x, kh, kw, st, pd)
        worst = max(worst, close(cuda_kernels.im2col(xg, kh, kw, st, pd), c0, 1e-12))
        worst = max(worst, close(cuda_kernels.col2im(cp.asarray(c0), shape, kh, kw, st, pd),
                                 reference.col2im(c0, shape, kh, kw, st, pd), 1e-12))
        W = rng.standard_normal((4, shape[1], kh, kw))
        b = rng.standard_normal(4)
        y0, k0 = reference.conv2d_forward(x, W, b, st, pd)
        y1, k1 = cuda_kernels.conv2d_forward(xg, cp.asarray(W), cp.asarray(b), st, pd, {})
        worst = max(worst, close(y1, y0, 1e-12))
        dy = rng.standard_normal(y0.shape)
        for g1, g0 in zip(cuda_kernels.conv2d_backward(cp.asarray(dy), k1, cp.asarray(W), shape,
                                                       st, pd, True, {}),
                          reference.conv2d_backward(dy, k0, W, shape, st, pd, True)):
            worst = max(worst, close(g1, g0, 1e-11))
        if 2 * p <= min(kh, kw):
            y0, a0 = reference.max_pool_forward(x, kh, kw, st, pd)
            y1, a1 = cuda_kernels.max_pool_forward(xg, kh, kw, st, pd)
            worst = max(worst, close(y1, y0, 1e-12))
            dy = rng.standard_normal(y0.shape)
            worst = max(worst, close(
                cuda_kernels.max_pool_backward(cp.asarray(dy), a1, shape, kh, kw, st, pd),
                reference.max_pool_backward(dy, a0, shape, kh, kw, st, pd), 1e-12))
            worst = max(worst, close(cuda_kernels.avg_pool_forward(xg, kh, kw, st, pd),
                                     reference.avg_pool_forward(x, kh, kw, st, pd), 1e-12))
            worst = max(worst, close(
                cuda_kernels.avg_pool_backward(cp.asarray(dy), shape, kh, kw, st, pd),
                reference.avg_pool_backward(dy, shape, kh, kw, st, pd), 1e-12))
    print("CUDA kernels vs reference: worst rel err %.2e" % worst)
    return worst


def gradients():
    """float64 gradients of three nets on the GPU (fast and reference kernels) against the
    CPU: ``{"<net> <device>": worst relative error}``."""
    out = {}
    rng = np.random.default_rng(1)
    for cls, kw, shape in [(xpnet.SimpleConvNet, {}, (8, 1, 28, 28)),
                           (xpnet.DeepConvNet, dict(dropout_ratio=0.0), (8, 1, 28, 28)),
                           (xpnet.MultiLayerNetExtend, dict(input_size=784, hidden_size_list=[50, 50],
                                                            output_size=10, use_batchnorm=True),
                            (8, 784))]:
        x = rng.random(shape)
        t = rng.integers(0, 10, shape[0])
        g0 = cls(dtype="float64", device="cpu", seed=3, **kw).gradient(x, t)
        for dev in ("gpu", "cupy-reference"):
            g1 = cls(dtype="float64", device=dev, seed=3, **kw).gradient(x, t)
            e = max(close(g1[k], g0[k], 1e-9) for k in g0)
            print("%s float64 gradients %s vs cpu: %.2e" % (cls.__name__, dev, e))
            out["%s %s" % (cls.__name__, dev)] = e
    return out


def timing(cp, reps=50):
    rng = np.random.default_rng(0)
    for name in ("SimpleConvNet", "DeepConvNet"):
        for bs in (100, 1000):
            net = getattr(xpnet, name)(device="gpu", seed=0)
            opt = xpnet.Adam(lr=1e-3)
            xs = [cp.asarray(rng.random((bs, 1, 28, 28), dtype=np.float32)) for _ in range(4)]
            ts = [cp.asarray(rng.integers(0, 10, bs)) for _ in range(4)]
            for i in range(5):
                opt.update(net.params, net.gradient(xs[i % 4], ts[i % 4]))
            cp.cuda.get_current_stream().synchronize()
            a = time.perf_counter()
            for i in range(reps):
                opt.update(net.params, net.gradient(xs[i % 4], ts[i % 4]))
            cp.cuda.get_current_stream().synchronize()
            ms = (time.perf_counter() - a) / reps * 1e3
            print("%s b%d xpnet %.2f ms/step" % (name, bs, ms))


def profile(cp, name="DeepConvNet", bs=100, reps=30):
    """Per-layer forward/backward time (synchronised after each layer, so only the shares count)."""
    rng = np.random.default_rng(0)
    net = getattr(xpnet, name)(device="gpu", seed=0)
    x = cp.asarray(rng.random((bs, 1, 28, 28), dtype=np.float32))
    t = cp.asarray(rng.integers(0, 10, bs))
    opt = xpnet.Adam(lr=1e-3)
    fw = {}
    bw = {}
    sync = cp.cuda.get_current_stream().synchronize
    for r in range(reps + 3):
        h = x
        for i, layer in enumerate(net.layers):
            sync(); a = time.perf_counter()
            h = layer.forward(h, True)
            sync(); fw[i] = fw.get(i, 0) + (time.perf_counter() - a if r >= 3 else 0)
        sync(); a = time.perf_counter()
        net.last_layer.forward(h, t)
        d = net.last_layer.backward()
        sync(); lt = time.perf_counter() - a
        for i in reversed(range(len(net.layers))):
            sync(); a = time.perf_counter()
            d = net.layers[i].backward(d)
            sync(); bw[i] = bw.get(i, 0) + (time.perf_counter() - a if r >= 3 else 0)
        sync(); a = time.perf_counter()
        opt.update(net.params, net.grads)
        sync(); ot = time.perf_counter() - a
    for i, layer in enumerate(net.layers):
        print("  %-28s fwd %.3f ms  bwd %.3f ms" % (repr(layer)[:28], fw[i] / reps * 1e3, bw[i] / reps * 1e3))
    print("  loss fwd+bwd %.3f ms, adam %.3f ms" % (lt * 1e3, ot * 1e3))


# ---------------------------------------------------------------- --all: stages and JSON

def plan(python=sys.executable):
    """The stages --all runs, in order: ``[{"stage", "what", "command", "env", "limit_s"}]``
    (`command` None: run in this process)."""
    steps = [
        ("suite", "pytest: the cupy, cupy-reference and torch:cuda cases",
         [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "-k", SUITE_K],
         {"XPNET_REQUIRE_GPU": "1"}),
        ("kernels", "every CUDA kernel vs the reference kernels (float64)", None, {}),
        ("gradients", "float64 gradients of 3 nets, gpu and cupy-reference vs cpu", None, {}),
        ("bench", "xpnet bench --vs torch: training at b100 and b1000, inference at 1000",
         [python, "-m", "xpnet", "bench"] + BENCH_ARGS + ["--output", "{bench_json}"], {}),
        ("cuda_graph", "a CUDA-graph replay row, if xpnet has one", None, {}),
    ]
    return [{"stage": s, "what": w, "command": c, "env": e, "limit_s": LIMITS[s]}
            for s, w, c, e in steps]


def _summary(text):
    """pytest's last line (``3 failed, 200 passed in 9.1s``) as counts."""
    counts = {}
    for line in reversed(text.strip().splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)",
                           line)
        if found:
            for n, what in found:
                counts["errors" if what.startswith("error") else what] = int(n)
            break
    return counts


def _subprocess(step, timeout):
    env = dict(os.environ, **step["env"])
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    try:
        r = subprocess.run(step["command"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return False, {"error": "timed out after %d s" % timeout,
                       "output_tail": ((e.stdout or b"")[-4000:]).decode("utf-8", "replace")
                       if isinstance(e.stdout, bytes) else (e.stdout or "")[-4000:]}
    return r.returncode == 0, {"returncode": r.returncode,
                               "output_tail": (r.stdout + r.stderr)[-4000:]}


def run_stage(step, cp, workdir):
    """Run one stage; ``{"stage", "status": "ok"|"failed"|"not built", "seconds", ...}``."""
    t0 = time.perf_counter()
    out = {"stage": step["stage"], "what": step["what"]}
    try:
        if step["stage"] == "suite":
            ok, info = _subprocess(step, step["limit_s"])
            info["counts"] = _summary(info.get("output_tail", ""))
            ok = ok and info["counts"].get("passed", 0) > 0
        elif step["stage"] == "bench":
            path = os.path.join(workdir, "bench.json")
            step = dict(step, command=[a.format(bench_json=path) for a in step["command"]])
            ok, info = _subprocess(step, step["limit_s"])
            if ok:
                with open(path) as f:
                    info["document"] = json.load(f)
        elif step["stage"] == "kernels":
            ok, info = True, {"worst_rel_err": kernels(cp)}
        elif step["stage"] == "gradients":
            ok, info = True, {"worst_rel_err": gradients()}
        else:
            ok, info = cuda_graph(cp)
    except Exception as e:  # noqa: BLE001 - a failed check is recorded, the rest still run
        ok, info = False, {"error": "%s: %s" % (type(e).__name__, e)}
    status = info.pop("status", None) or ("ok" if ok else "failed")
    out.update(status=status, seconds=round(time.perf_counter() - t0, 2), **info)
    return out


def cuda_graph(cp):
    """A CUDA-graph replay row when xpnet has one (``xpnet.compile.cuda_graph``)."""
    try:
        mod = importlib.import_module("xpnet.compile")
    except ImportError:
        mod = None
    fn = getattr(mod, "cuda_graph", None)
    if fn is None:
        return True, {"status": "not built", "detail": "xpnet has no CUDA-graph replay "
                                                       "(xpnet.compile.cuda_graph)"}
    return True, {"rows": fn(device="gpu")}


def write_json(path, doc):
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def environment():
    env = {"python": sys.version.split()[0], "numpy": np.__version__,
           "xpnet": getattr(xpnet, "__version__", None), "started": time.strftime(
               "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    ok, why = xpnet.backend.gpu_available()
    env["gpu_available"], env["gpu_why"] = ok, why
    if ok:
        cp = load_library("cupy")
        env["cupy"] = cp.__version__
        try:
            props = cp.cuda.runtime.getDeviceProperties(0)
            env["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) \
                else props["name"]
            env["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
            env["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            env["gpu_error"] = str(e)
    return env


def run_all(out, stages=STAGES, python=sys.executable):
    """--all: run `stages`, rewriting `out` after each; returns the exit status."""
    doc = {"tool": "tools/gpu_check.py --all", "environment": environment(), "stages": []}
    if not doc["environment"]["gpu_available"]:
        doc["error"] = "no usable GPU: %s" % doc["environment"]["gpu_why"]
        if out:
            write_json(out, doc)
        print("gpu_check: %s" % doc["error"], file=sys.stderr)
        return 2
    cp = load_library("cupy")
    xpnet.set_device("gpu")
    with tempfile.TemporaryDirectory() as workdir:
        for step in plan(python):
            if step["stage"] not in stages:
                continue
            print("gpu_check: %s ..." % step["stage"], file=sys.stderr, flush=True)
            rec = run_stage(step, cp, workdir)
            doc["stages"].append(rec)
            print("gpu_check: %s %s (%.0f s)" % (rec["stage"], rec["status"], rec["seconds"]),
                  file=sys.stderr, flush=True)
            if out:
                write_json(out, doc)
    return 0 if all(s["status"] != "failed" for s in doc["stages"]) else 1


# ---------------------------------------------------------------- the docs table

def render(doc):
    """docs/performance.md's GPU section from a --all JSON document (Markdown)."""
    env = doc.get("environment", {})
    lines = ["GPU: %s, CuPy %s, CUDA runtime %s, driver %s (%s)." % (
        env.get("gpu", "?"), env.get("cupy", "?"), env.get("cuda_runtime", "?"),
        env.get("cuda_driver", "?"), env.get("started", "?")), ""]
    if doc.get("error"):
        return "\n".join(lines + ["**The check did not run:** %s" % doc["error"]]) + "\n"
    lines += ["| stage | status | result | seconds |", "|---|---|---|---|"]
    bench = None
    for s in doc.get("stages", []):
        if s["stage"] == "suite":
            res = ", ".join("%d %s" % (n, k) for k, n in sorted(s.get("counts", {}).items()))
        elif s["stage"] in ("kernels", "gradients"):
            w = s.get("worst_rel_err")
            w = max(w.values()) if isinstance(w, dict) and w else w
            res = "worst rel. error %.1e" % w if isinstance(w, float) else ""
        elif s["stage"] == "bench":
            bench = (s.get("document") or {}).get("rows")
            res = "%d rows" % len(bench or [])
        else:
            res = s.get("detail", "")
        lines.append("| %s | %s | %s | %.0f |" % (s["stage"], s["status"],
                                                  res or s.get("error", ""), s["seconds"]))
    if bench:
        lines += ["", "| model | task | batch | xpnet ms | torch ms | xpnet / torch |",
                  "|---|---|---|---|---|---|"]
        for r in bench:
            t = r.get("torch") or {}
            lines.append("| %s | %s | %d | %.2f | %s | %s |" % (
                r["model"], r["task"], r["batch"], r["xpnet"]["ms"],
                "%.2f" % t["ms"] if t.get("ms") is not None else "-",
                "%.2f" % r["ratio"] if r.get("ratio") is not None else "-"))
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--all", action="store_true", help="run every stage (see above)")
    what.add_argument("--plan", action="store_true", help="print what --all runs, as JSON")
    what.add_argument("--render", metavar="JSON", help="print the docs table of a --all JSON")
    p.add_argument("--json", metavar="OUT", help="with --all: write the results to OUT")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                   help="with --all: only these stages")
    p.add_argument("--time", action="store_true", help="step timings (without --all)")
    p.add_argument("--profile", action="store_true", help="per-layer times (without --all)")
    args = p.parse_args(argv)
    if args.json and not args.all:
        p.error("--json OUT goes with --all")
    if (args.time or args.profile) and (args.all or args.plan or args.render):
        p.error("--time and --profile go without --all, --plan and --render")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.plan:
        print(json.dumps(plan(), indent=2))
        return 0
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)), end="")
        return 0
    if args.all:
        return run_all(args.json, args.stages)
    xpnet.set_device("gpu")
    cp = load_library("cupy")
    print("cupy", cp.__version__, "numpy", np.__version__)
    kernels(cp)
    gradients()
    if args.time:
        timing(cp)
    if args.profile:
        profile(cp, "DeepConvNet")
        profile(cp, "SimpleConvNet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
