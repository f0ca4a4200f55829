"""What the bench runs: for each model, batch size and task (train / infer), an
xpnet `Case` and optionally a PyTorch one, timed together by `timing.measure`.

A training step is ``net.gradient(x, t)`` then ``Adam.update(net.params, net.grads)``;
inference is ``net.predict(x)``. Inputs are random float32 images shaped like
Fashion-MNIST (1, 28, 28) with integer labels, made on the host and moved once.
Models come from `xpnet.registry`. This module must never write to stdout
(messages go to `log`, stderr by default) and never import PyTorch unless
``vs_torch`` asks for it.
"""
import sys

from .. import registry
from ..backend import CPU, get_device, synchronize, to_device, using_device
from ..backend.numpy_fast import release_scratch
from ..compile import compile_step
from ..optimizers import Adam
from ..validate import parse_int
from . import timing
from .torch_twin import count_params, import_torch, to_torch

__all__ = ["MODELS", "INPUT_SHAPE", "N_CLASSES", "ADAM", "DEFAULT_BATCH_SIZES",
           "DEFAULT_INFER_BATCH", "DEFAULT_WARMUP", "QUICK_REPEATS", "QUICK_WARMUP",
           "run_bench", "model_name", "split"]

INPUT_SHAPE = registry.IMAGE_SHAPE
N_CLASSES = registry.N_CLASSES
# One optimizer setting for both frameworks (xpnet's Adam eps is 1e-7, PyTorch's 1e-8).
ADAM = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}

MODELS = registry.BENCH_MODELS   # class name -> Model; ``MODELS[name](device, seed)`` builds

DEFAULT_BATCH_SIZES = (100, 1000)
COMPILED = "train-compiled"   # the task of the rows of `compile_step`'s step
DEFAULT_INFER_BATCH = 1000
DEFAULT_WARMUP = 2
QUICK_REPEATS, QUICK_WARMUP = 3, 1


def model_name(name):
    """The bench's name (the class name) of a model name or alias."""
    try:
        return registry.bench_model(name).net
    except ValueError as e:
        raise ValueError("models: %s" % e) from None


def split(values):
    """Accept ``['a,b', 'c']`` as well as ``'a,b'`` (and a lone number)."""
    if isinstance(values, (str, int)):
        values = [values]
    out = []
    for v in values:
        out += [p for p in str(v).split(",") if p.strip()] if isinstance(v, str) else [v]
    return out


# ---------------------------------------------------------------------------
# One framework's side of a row

def fresh_footprint(make_net, task, x, t):
    """Everything a new net needs for two steps: parameters, Adam state, layer
    caches and workspaces, temporaries (the fast path's shared scratch buffers too:
    they are dropped first, so this net makes them again). NumPy devices only."""
    release_scratch()

    def work():
        net = make_net()
        opt = Adam(**ADAM)
        for _ in range(2):
            if task == "train":
                net.gradient(x, t)
                opt.update(net.params, net.grads)
            else:
                net.predict(x, train_flg=False)
    return timing.traced_peak(work)


def _xpnet_memory(dev, task, x, t, make_net):
    """``(mem_reset, mem_read)`` for xpnet on `dev`, or ``(None, None)`` where this
    bench has no reading (PyTorch and array-api-strict devices)."""
    pool = dev.backend.memory_pool(dev)
    if pool is not None:
        release_unused, total_bytes = pool

        def mem_reset():
            release_unused()   # unused blocks only; live arrays stay counted

        def mem_read():
            return {"peak_bytes": int(total_bytes()), "peak_kind": "cupy pool total bytes"}
        return mem_reset, mem_read
    if dev.backend.tracemalloc_counted:
        def mem_read():
            return {"peak_bytes": fresh_footprint(make_net, task, x, t),
                    "peak_kind": "numpy peak bytes of a fresh net over 2 steps (tracemalloc)"}
        return None, mem_read
    return None, None


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

    if task == COMPILED:
        # the step a trainer runs: host checks, then one compiled program (loss read back)
        step = compile_step(net, opt)
        case = timing.Case("xpnet", lambda: step(x, t), sync)
        case.mode = step.mode
        return case
    mem_reset, mem_read = _xpnet_memory(dev, task, x, t, make_net)
    return timing.Case("xpnet", train if task == "train" else infer, sync, mem_reset, mem_read)


def _torch_case(task, torch, model, opt, tdev, x_host, t_host):
    x = torch.from_numpy(x_host).to(tdev)
    t = torch.from_numpy(t_host).to(tdev)
    crit = torch.nn.CrossEntropyLoss()
    cuda = tdev.type == "cuda"
    model.train(task != "infer")

    def sync():
        if cuda:
            torch.cuda.synchronize(tdev)
        elif tdev.type == "mps":
            torch.mps.synchronize()

    def train():
        opt.zero_grad(set_to_none=True)
        crit(model(x), t).backward()
        opt.step()

    def infer():
        with torch.inference_mode():
            model(x)

    def mem_reset():
        torch.cuda.reset_peak_memory_stats(tdev)

    def mem_read():
        return {"peak_bytes": int(torch.cuda.max_memory_allocated(tdev)),
                "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(tdev)),
                "peak_kind": "torch.cuda.max_memory_allocated"}
    step = infer if task == "infer" else train      # compiled rows: PyTorch eager
    if cuda:
        return timing.Case("torch", step, sync, mem_reset, mem_read)
    # Elsewhere PyTorch keeps no allocator statistics: only the process RSS is known.
    return timing.Case("torch", step, sync)


# ---------------------------------------------------------------------------
# The benchmark

def stderr(msg):
    print(msg, file=sys.stderr, flush=True)


def _torch_setup(vs_torch, dev, log):
    """``(torch, torch_device)`` or ``(None, None)`` with one message saying why.
    PyTorch runs where xpnet's arrays are: the same GPU, the same torch device,
    else the CPU."""
    if not vs_torch:
        return None, None
    torch, why = import_torch()
    if torch is None:
        log("--vs torch: PyTorch can't be imported (%s); showing xpnet rows only. "
            "Install it with `pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu` (CPU build) or `pip install -e \".[bench]\"` "
            "in the xpnet checkout." % why)
        return None, None
    try:
        tdev = torch.device(dev.backend.torch_place(dev))
    except RuntimeError:        # a place PyTorch has no device for (a TPU): its CPU
        tdev = torch.device("cpu")
    if tdev.type == "cuda" and not torch.cuda.is_available():
        log("--vs torch: this PyTorch (%s) can't use CUDA, so it can't run on %s; "
            "showing xpnet rows only." % (torch.__version__, dev.name))
        return None, None
    return torch, tdev


def run_bench(models=None, batch_sizes=DEFAULT_BATCH_SIZES, device=None, vs_torch=False,
              repeats=None, warmup=None, infer_batch=DEFAULT_INFER_BATCH, quick=False, seed=0,
              log=stderr, progress=None, compile=False):
    """Run the benchmark and return a list of row dicts.

    One ``task='train'`` row per model and batch size (forward + backward + Adam) and
    one ``task='infer'`` row per model at `infer_batch` (0 skips them). ``repeats=None``
    picks 5..200 steps (about 1.5 s per framework) from the warm-up time; ``quick=True``
    means 3 repeats and 1 warm-up step. `device` is any name `xpnet.get_device` takes
    (``numpy-reference`` times the plain reference kernels).
    Each row holds ``xpnet`` (and ``torch``, or None) timing dicts (``ms`` median,
    ``ms_min``, ``ms_iqr``, ``images_per_s``, peak memory or None where not measured)
    and ``ratio`` = xpnet time / torch time (> 1: xpnet is slower). `log` gets human
    messages (e.g. no PyTorch); `progress`, if given, gets each row as it is done.
    ``compile=True`` adds a ``task='train-compiled'`` row after each training row: the
    step of `xpnet.compile_step` (``mode`` says 'jax.jit' or 'eager'), against PyTorch's
    eager step, with ``vs_eager`` = xpnet's eager ms / compiled ms of the same run."""
    names = [model_name(m) for m in split(models if models is not None else list(MODELS))]
    if not names:
        raise ValueError("models: give at least one of %s" % ", ".join(MODELS))
    batches = [parse_int(b, "batch_sizes entry") for b in split(batch_sizes)]
    infer_batch = parse_int(infer_batch, "infer_batch", allow_zero=True)
    if quick:
        repeats = QUICK_REPEATS if repeats is None else repeats
        warmup = QUICK_WARMUP if warmup is None else warmup
    warmup = DEFAULT_WARMUP if warmup is None else parse_int(warmup, "warmup", allow_zero=True)
    if repeats is not None:
        repeats = parse_int(repeats, "repeats")
    log = log or (lambda msg: None)

    dev = get_device(device)
    torch, tdev = _torch_setup(vs_torch, dev, log)
    with using_device(dev):   # kernels, streams and synchronisation on the benchmarked device
        return _run(names, batches, infer_batch, dev, torch, tdev, repeats, warmup, seed,
                    progress, compile)


def _run(names, batches, infer_batch, dev, torch, tdev, repeats, warmup, seed, progress,
         compile=False):
    host_mem = timing.HostMemory()
    np = CPU.xp   # host NumPy for the inputs, whatever the device
    rows = []
    for name in names:
        make_net = (lambda name=name: MODELS[name].build(device=dev, seed=seed))
        net = make_net()
        opt = Adam(**ADAM)
        tmodel = topt = None
        if torch is not None:
            tmodel = to_torch(net, tdev, torch)
            topt = torch.optim.Adam(tmodel.parameters(), lr=ADAM["lr"],
                                    betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"])
        plan = [(task, b) for b in batches
                for task in (("train", COMPILED) if compile else ("train",))]
        plan += [("infer", infer_batch)] if infer_batch else []
        for task, batch in plan:
            rng = np.random.default_rng(seed)
            x_host = rng.random((batch,) + INPUT_SHAPE, dtype=np.float32)
            t_host = rng.integers(0, N_CLASSES, size=batch, dtype=np.int64)
            cases = [_xpnet_case(task, net, opt, dev, x_host, t_host, make_net)]
            if torch is not None:
                cases.append(_torch_case(task, torch, tmodel, topt, tdev, x_host, t_host))
            n = timing.measure(cases, warmup, repeats, host_mem)
            row = {"model": name, "task": task, "batch": batch, "device": dev.name,
                   "params": count_params(net), "repeats": n, "warmup": warmup}
            for c in cases:
                s = timing.summary(c.times, batch)
                s["host_peak_rss_bytes"] = c.host_peak
                s.update(c.mem_read())
                row[c.framework] = s
            row.setdefault("torch", None)
            if task == COMPILED:
                row["mode"] = cases[0].mode
                eager = [r for r in rows if r["model"] == name and r["batch"] == batch and
                         r["task"] == "train"]
                row["vs_eager"] = (eager[-1]["xpnet"]["ms"] / row["xpnet"]["ms"]
                                   if eager and row["xpnet"]["ms"] > 0 else None)
            row["ratio"] = (row["xpnet"]["ms"] / row["torch"]["ms"]
                            if row["torch"] and row["torch"]["ms"] > 0 else None)
            row["host_memory_method"] = host_mem.method
            rows.append(row)
            if progress is not None:
                progress(row)
            del cases
    return rows
