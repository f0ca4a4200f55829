"""Measure and print the figures the docs quote (times, accuracies, speed ratios).

    python tools/doc_figures.py                    # every figure that needs no download
    python tools/doc_figures.py --book ~/deep-learning-from-scratch   # + the book's code
    python tools/doc_figures.py --only tours       # one group: tours, sample, book
    python tools/doc_figures.py --only sample --seeds 0 1   # both seeds the docs quote

Each line names the figure, the value measured here and the doc that quotes it. The first
lines describe the machine (CPU, cores, load, BLAS), since every time depends on it; quote
them with the figure. Runs from the repository root; the default run takes about 1-2
minutes on 2 quiet cores (more on a loaded machine).
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "XPNET_NUM_THREADS")


def machine():
    import numpy as np
    from threadpoolctl import threadpool_info
    import xpnet
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = ", ".join("%s %s (%d threads)" % (p.get("internal_api"), p.get("version"),
                                              p.get("num_threads"))
                     for p in threadpool_info() if p.get("user_api") == "blas")
    return ["machine: %s; %s; %d usable cores of %s" % (platform.platform(), cpu, usable,
                                                         os.cpu_count()),
            "software: Python %s, NumPy %s, BLAS %s, xpnet %s" % (
                platform.python_version(), np.__version__, blas or "?", xpnet.__version__),
            "load average at start: %.2f %.2f %.2f" % os.getloadavg()]


def readme_block(marker):
    """The README's python block that contains `marker`."""
    blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", (ROOT / "README.md").read_text(),
                        re.S | re.M)
    hits = [b for b in blocks if marker in b]
    if len(hits) != 1:
        raise SystemExit("doc_figures: %d README python blocks contain %r" % (len(hits), marker))
    return hits[0]


def run_python(code, cwd, env_extra=None):
    """Run `code` as a script in a fresh interpreter (as `python train.py` would);
    returns (wall seconds, stdout)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    env["MPLBACKEND"] = "Agg"
    env.update(env_extra or {})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit("doc_figures: the block failed:\n%s" % proc.stdout[-3000:])
    return wall, proc.stdout


def figure_value(out, name):
    m = re.findall(r"^FIGURE %s (\S+)$" % name, out, re.M)
    return m[-1] if m else "?"


def tours(tmp):
    ch5 = readme_block("for i in range(2000)") + \
        '\nprint("FIGURE acc", network.accuracy(x_test, t_test))\n'
    for label, extra in (("xpnet's defaults", {}), ("OPENBLAS_NUM_THREADS=1",
                                                     {"OPENBLAS_NUM_THREADS": "1"})):
        wall, out = run_python(ch5, tmp, extra)
        print("README ch.5 tour (2,000 steps, TwoLayerNet), %s: %.1f s wall, test accuracy "
              "%s   [README, A tour for readers of the book]" % (label, wall,
                                                                 figure_value(out, "acc")))
    tour = readme_block("Trainer(network") + \
        '\nprint("FIGURE acc", trainer.test_acc_list[-1])\n'
    wall, out = run_python(tour, tmp)
    print("README Trainer tour (SimpleConvNet, 3 epochs): %.1f s wall, test accuracy %s"
          "   [README]" % (wall, figure_value(out, "acc")))


def sample(tmp, seed):
    out_dir = Path(tmp) / ("sample-run-%d" % seed)
    code = ("import sys; from xpnet.cli import main; sys.exit(main(['train', '--dataset', "
            "'mnist-sample', '--seed', '%d', '--quiet', '--out', %r]))" % (seed, str(out_dir)))
    wall, _ = run_python(code, tmp)
    hist = json.loads((out_dir / "history.json").read_text())
    acc = [round(100 * a, 1) for a in hist["test_acc"]]
    first96 = next((i + 1 for i, a in enumerate(acc) if a >= 96.0), None)
    print("xpnet train --dataset mnist-sample (SimpleConvNet, Adam lr 0.003, 10 epochs, "
          "seed %d): %.1f s wall, final test accuracy %.1f %%, passes 96 %% at epoch %s"
          "   [training.md, accuracy.md]" % (seed, wall, acc[-1], first96))
    print("  per epoch: %s %%" % ", ".join("%.1f" % a for a in acc))


def _book_net(book, layers):
    """The book's ch07 SimpleConvNet on its own layers ('book'), on xpnet.layers ('xpnet'),
    or on xpnet.layers with the one added line that makes its weights float32 ('xpnet32')."""
    import types
    src = (Path(book) / "ch07" / "simple_convnet.py").read_text(encoding="utf-8")
    if layers != "book":
        src = src.replace("from common.layers import *", "from xpnet.layers import *")
        src = src.replace("from common.gradient import numerical_gradient",
                          "from xpnet.gradient_check import numerical_gradient")
    if layers == "xpnet32":
        line = "        self.layers = OrderedDict()\n"
        assert src.count(line) == 1
        src = src.replace(line, "        self.params = {k: v.astype(np.float32) for k, v in "
                          "self.params.items()}\n" + line)
    mod = types.ModuleType("book_simple_convnet_" + layers)
    mod.__file__ = str(Path(book) / "ch07" / "simple_convnet.py")
    if str(book) not in sys.path:
        sys.path.insert(0, str(book))
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod.SimpleConvNet()


def _step_seconds(net, x, t, steps, opt, times):
    """Append the seconds of `steps` training steps (gradient + SGD update, batch 100)."""
    for i in range(steps):
        lo = (i * 100) % (len(x) - 100)
        t0 = time.perf_counter()
        opt.update(net.params, net.gradient(x[lo:lo + 100], t[lo:lo + 100]))
        times.append(time.perf_counter() - t0)


def gradient_check(book_dir, tmp, devices=("cpu",)):
    """The book's ch05/gradient_check.py with the docs' changes: xpnet's loader (the sample)
    and TwoLayerNet in float64. Its 80,000 loss evaluations make it a per-call-overhead test."""
    src = (Path(book_dir) / "ch05" / "gradient_check.py").read_text(encoding="utf-8")
    src = src.replace("from dataset.mnist import load_mnist",
                      "from xpnet.datasets import load_mnist_sample as load_mnist")
    src = src.replace("from two_layer_net import TwoLayerNet", "from xpnet import TwoLayerNet")
    src = src.replace("output_size=10)", 'output_size=10, dtype="float64")')
    for dev in devices:
        wall, out = run_python(src, tmp, {"XPNET_DEVICE": dev})
        diffs = ", ".join(line.replace(":", " ") for line in out.split() if ":" in line)
        print("ch05/gradient_check.py (the docs' changes) on %s: %.1f s wall; %s"
              "   [from-the-book.md]" % (dev, wall, diffs))


def book(book_dir, tmp, rounds=3):
    import statistics
    import warnings
    import numpy as np
    from threadpoolctl import threadpool_limits
    import xpnet
    from xpnet.datasets import load_mnist_sample
    (x, t), (xt, tt) = load_mnist_sample(flatten=False)
    steps = {"book": 2, "book on xpnet.layers": 4, "book + float32 line": 8,
             "xpnet.SimpleConvNet": 16}
    for label, one in (("default threads", False), ("1 thread (BLAS and xpnet)", True)):
        old = xpnet.get_num_threads()
        with threadpool_limits(1 if one else None), warnings.catch_warnings():
            warnings.simplefilter("ignore")          # the float64 book class's DtypeWarning
            if one:
                xpnet.set_num_threads(1)
            np.random.seed(0)
            nets = {"book": _book_net(book_dir, "book"),
                    "book on xpnet.layers": _book_net(book_dir, "xpnet"),
                    "book + float32 line": _book_net(book_dir, "xpnet32"),
                    "xpnet.SimpleConvNet": xpnet.SimpleConvNet(seed=0)}
            times = {k: [] for k in nets}
            for k, net in nets.items():               # warm-up
                _step_seconds(net, x, t, 1, xpnet.SGD(lr=0.01), [])
            for _ in range(rounds):                   # interleaved, so load hits all alike
                for k, net in nets.items():
                    _step_seconds(net, x, t, steps[k], xpnet.SGD(lr=0.01), times[k])
            xpnet.set_num_threads(old)
        rate = {k: 100 / statistics.median(v) for k, v in times.items()}
        print("SimpleConvNet training step, batch 100, %s, median of %s steps: %s"
              "   [from-the-book.md]" % (label, "/".join(str(rounds * n) for n in steps.values()),
                                         "; ".join("%s %.0f img/s" % kv for kv in rate.items())))
        print("  ratios to the book's code: xpnet.SimpleConvNet %.1fx; the book's class on "
              "xpnet.layers %.1fx, with the float32 line %.1fx" % (
                  rate["xpnet.SimpleConvNet"] / rate["book"],
                  rate["book on xpnet.layers"] / rate["book"],
                  rate["book + float32 line"] / rate["book"]))
    gradient_check(book_dir, tmp)
    for cls, name in ((xpnet.DeepConvNet, "ch08/deep_convnet_params.pkl"),
                      (xpnet.SimpleConvNet, "ch07/params.pkl")):
        net = cls()
        net.load_params(str(Path(book_dir) / name))
        print("%s with the book's %s on the sample's 1,000 test images: accuracy %.3f"
              "   [from-the-book.md]" % (cls.__name__, name, net.accuracy(xt, tt)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--book", help="a checkout of oreilly-japan/deep-learning-from-scratch "
                    "(for the from-the-book figures)")
    ap.add_argument("--only", choices=("tours", "sample", "book"), action="append",
                    help="run only these groups (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="seeds of the mnist-sample run (default 0; the docs quote 0 and 1)")
    args = ap.parse_args(argv)
    groups = args.only or ["tours", "sample", "book"]
    for line in machine():
        print(line)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if "tours" in groups:
            tours(tmp)
        if "sample" in groups:
            for seed in args.seeds:
                sample(tmp, seed)
        if "book" in groups:
            if args.book:
                book(args.book, tmp)
            else:
                print("from-the-book figures: skipped (pass --book DIR, a checkout of the "
                      "book's repository)")
    print("load average at end: %.2f %.2f %.2f; %.0f s in all" % (os.getloadavg() + (
        time.perf_counter() - t0,)))


if __name__ == "__main__":
    main()
