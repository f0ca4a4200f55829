"""Runs the code blocks of README.md and docs/*.md as tests (pytest-markdown-docs).

The convention is described in docs/writing-docs.md. In short: every fenced block says its
language; ```python and ```bash blocks run, in order, in one scratch folder per document;
```python notest REASON / ```bash notest REASON blocks are reported as skipped with REASON;
```text blocks are output or diagrams. A block with no language, an unknown language or an
unknown reason fails. The summary at the end counts the blocks run and not run.
"""
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# why a block is not run; the doc's own text beside the block says more
REASONS = {
    "network": "needs the internet (downloads)",
    "gpu": "needs CuPy and an NVIDIA GPU",
    "mpi": "starts several processes or hosts (mpiexec, Slurm)",
    "long": "trains or benchmarks for minutes",
    "install": "installs packages or runs the whole test suite",
    "fragment": "an excerpt or a signature, not a whole program",
    "input": "needs files or objects the reader brings",
}
PYTHON = ("python", "py", "python3")
SHELL = ("bash", "sh", "shell")
TEXT = ("text",)
SHELL_TIMEOUT = 120    # seconds per shell block; the docs' blocks take a few seconds


def _fence_rule(state):
    """Rewrite each fence so the plugin runs, skips or refuses it (see module docstring)."""
    for tok in state.tokens:
        if tok.type != "fence":
            continue
        words = tok.info.split()
        lang, opts = (words[0].lower(), words[1:]) if words else ("", [])
        if lang in TEXT:
            continue
        code = tok.content
        keep = [o for o in opts if o == "continuation" or o.startswith(("fixture:", "retry:"))]
        if lang not in PYTHON + SHELL:
            body = "_docs_unmarked(%r)\n" % (tok.info,)
        elif "notest" in opts:
            i = opts.index("notest")
            body = "_docs_not_run(%r)\n" % (opts[i + 1] if i + 1 < len(opts) else "",)
            keep = []
        elif lang in SHELL:
            body = "_docs_shell(%r)\n" % (code,)
        else:
            body = code
        saves = [o.split(":", 1)[1] for o in opts if o.startswith("save:")]
        if saves:
            body += "\n_docs_save(%r, %r)\n" % (saves[0], code)
        tok.info = " ".join(["python"] + keep)
        tok.content = body


@pytest.hookimpl(hookwrapper=True)
def pytest_collect_file(file_path):
    """Markdown files only: `--markdown-docs` would also import every .py file under
    tests/ (helpers included) to look for code in docstrings; xpnet keeps none there."""
    outcome = yield
    if file_path.suffix == ".py":
        outcome.force_result([f for f in outcome.get_result()
                              if type(f).__name__ != "MarkdownDocstringCodeModule"])


@pytest.hookimpl(tryfirst=True)
def pytest_markdown_docs_markdown_it():
    from markdown_it import MarkdownIt
    md = MarkdownIt("commonmark")
    md.core.ruler.push("xpnet_docs_fences", _fence_rule)
    return md


def _docs_unmarked(info):
    pytest.fail("code block with language %r: write ```python, ```bash or ```text, and "
                "`notest REASON` when it must not run (docs/writing-docs.md)" % (info,),
                pytrace=False)


def _docs_not_run(reason):
    if reason not in REASONS:
        pytest.fail("`notest %s`: the reason must be one of %s (docs/writing-docs.md)"
                    % (reason, ", ".join(REASONS)), pytrace=False)
    pytest.skip("not run: %s (%s)" % (reason, REASONS[reason]))


def _docs_shell(script):
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=SHELL_TIMEOUT)
    out = proc.stdout.decode("utf-8", "replace")
    sys.stdout.write(out)
    if proc.returncode:
        pytest.fail("shell block exited with %d:\n%s\n--- output ---\n%s"
                    % (proc.returncode, script, out[-4000:]), pytrace=False)


def _docs_save(name, code):
    Path(name).write_text(code)


def pytest_markdown_docs_globals():
    return {"_docs_unmarked": _docs_unmarked, "_docs_not_run": _docs_not_run,
            "_docs_shell": _docs_shell, "_docs_save": _docs_save}


def _xpnet_shim(factory):
    """A folder with `xpnet` (and this Python as `python`) for shell blocks, when the
    package is used from the checkout without being installed."""
    bin_dir = factory.mktemp("docs-bin")
    py = bin_dir / "python"
    py.symlink_to(sys.executable)
    if shutil.which("xpnet") is None:
        exe = bin_dir / "xpnet"
        exe.write_text('#!/bin/sh\nexec "%s" -m xpnet "$@"\n' % sys.executable)
        exe.chmod(0o755)
    return bin_dir


@pytest.fixture(autouse=True)
def _docs_block_env(request, tmp_path_factory):
    """Doc blocks run in order in one scratch folder per document, with xpnet's global
    settings restored afterwards."""
    if "markdown-docs" not in request.keywords:
        yield
        return
    monkeypatch = request.getfixturevalue("monkeypatch")
    cfg = request.config
    dirs = cfg.__dict__.setdefault("_docs_dirs", {})
    path = Path(request.node.path)
    if path not in dirs:
        dirs[path] = tmp_path_factory.mktemp("doc-" + path.stem)
    if "bin" not in dirs:
        dirs["bin"] = _xpnet_shim(tmp_path_factory)
    monkeypatch.chdir(dirs[path])
    monkeypatch.syspath_prepend(str(dirs[path]))
    monkeypatch.setenv("PATH", "%s%s%s" % (dirs["bin"], os.pathsep, os.environ.get("PATH", "")))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import xpnet
    from threadpoolctl import threadpool_limits
    device, threads = xpnet.get_device(), xpnet.get_num_threads()
    modules = set(sys.modules)
    # one BLAS thread: a block's run time then doesn't hang on BLAS oversubscription of a
    # busy CI machine (tools/doc_figures.py measures the defaults)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        xpnet.set_device(device)
        xpnet.set_num_threads(threads)
        for name in set(sys.modules) - modules:   # modules a block saved and imported
            if getattr(sys.modules[name], "__file__", None) and \
                    Path(sys.modules[name].__file__).parent == dirs[path]:
                del sys.modules[name]


def _need(*modules):
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip("not run: extra (%s not installed)" % ", ".join(missing))


@pytest.fixture
def needs_onnx():
    """```python fixture:needs_onnx```: skip the block when the onnx extra is missing."""
    _need("onnx", "onnxruntime")


@pytest.fixture
def needs_torch():
    _need("torch")


@pytest.fixture
def sample_run(_docs_block_env):
    """Stands in for `xpnet train --dataset mnist-sample`'s output in the current folder:
    runs/simple_conv-mnist-sample/params.npz of an untrained SimpleConvNet (seed 0)."""
    import xpnet
    out = Path("runs/simple_conv-mnist-sample")
    out.mkdir(parents=True, exist_ok=True)
    xpnet.SimpleConvNet(seed=0).save_params(str(out / "params.npz"))


_counts = collections.Counter()


def pytest_runtest_logreport(report):
    if "markdown-docs" not in report.keywords:
        return
    if report.when == "call" and report.passed:
        _counts["run"] += 1
    elif report.failed:
        _counts["failed"] += 1
    elif report.skipped:
        msg = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = msg.split("not run: ", 1)[1].split(" ", 1)[0] if "not run: " in msg else "other"
        _counts["skip:" + reason] += 1


def pytest_terminal_summary(terminalreporter):
    if not _counts:
        return
    skipped = {k[5:]: v for k, v in sorted(_counts.items()) if k.startswith("skip:")}
    terminalreporter.write_sep("-", "docs code blocks")
    terminalreporter.write_line(
        "docs code blocks: %d run, %d failed, %d not run (%s)"
        % (_counts["run"], _counts["failed"], sum(skipped.values()),
           ", ".join("%s %d" % kv for kv in skipped.items()) or "none"))
