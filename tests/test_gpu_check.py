"""tools/gpu_check.py's CPU side: arguments, the stages --all runs, the JSON it writes
after each stage, the docs table; its kernel check run on the CuPy stand-in."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import cupy_standin
from cupy_standin import kernels as standin_kernels
from cupy_standin.backend import registered_standin
from xpnet.backend import cuda_kernels as ck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check",
                                                  os.path.join(ROOT, "tools", "gpu_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments(gc):
    a = gc.parse_args(["--all", "--json", "out.json"])
    assert a.all and a.json == "out.json" and a.stages == list(gc.STAGES)
    assert gc.parse_args(["--all", "--stages", "kernels", "bench"]).stages == ["kernels", "bench"]
    assert gc.parse_args(["--render", "x.json"]).render == "x.json"
    for bad in (["--json", "o.json"], ["--all", "--time"], ["--all", "--plan"],
                ["--all", "--stages", "nothing"]):
        with pytest.raises(SystemExit) as e:
            gc.parse_args(bad)
        assert e.value.code == 2, bad


def test_plan_rows(gc):
    steps = gc.plan("PY")
    assert [s["stage"] for s in steps] == ["suite", "kernels", "gradients", "bench",
                                           "cuda_graph"]
    suite, bench = steps[0], steps[3]
    assert suite["command"][:3] == ["PY", "-m", "pytest"] and suite["command"][-2:] == [
        "-k", "(cupy or torch-cuda or torch:cuda) and not standin"]
    assert suite["env"] == {"XPNET_REQUIRE_GPU": "1"}
    assert bench["command"] == ["PY", "-m", "xpnet", "bench", "--device", "gpu", "--vs",
                                "torch", "--batch-sizes", "100", "1000", "--infer-batch",
                                "1000", "--output", "{bench_json}"]
    assert sum(s["limit_s"] for s in steps) <= 600          # under 10 minutes in all


def test_plan_is_printed_as_json(gc, capsys):
    assert gc.main(["--plan"]) == 0
    assert [s["stage"] for s in json.loads(capsys.readouterr().out)] == list(gc.STAGES)


_PROBE = """
def test_probe(backend):
    pass
"""


def test_suite_selection_is_the_gpu_cases(gc, tmp_path):
    """The suite stage's -k picks the cupy and cupy-reference cases, not the stand-in's."""
    tests = os.path.join(ROOT, "tests")
    (tmp_path / "test_probe.py").write_text(_PROBE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, ROOT]))
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                        "no:cacheprovider", "-p", "conftest", "-k", gc.SUITE_K,
                        str(tmp_path / "test_probe.py")], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path))
    ids = sorted(ln.rsplit("::", 1)[1] for ln in r.stdout.splitlines() if "::" in ln)
    assert ids == ["test_probe[cupy-reference]", "test_probe[cupy]"], r.stdout


def test_no_gpu_fails_and_says_why(gc, tmp_path, monkeypatch):
    monkeypatch.setattr(gc.xpnet.backend, "gpu_available", lambda: (False, "no driver here"))
    out = tmp_path / "gpu.json"
    assert gc.run_all(str(out)) == 2
    doc = json.loads(out.read_text())
    assert doc["error"] == "no usable GPU: no driver here" and doc["stages"] == []
    assert "**The check did not run:** no usable GPU: no driver here" in gc.render(doc)


@pytest.fixture
def standin_cupy(monkeypatch):
    if standin_kernels.compiler() is None:
        pytest.skip("no host C++ compiler for the CuPy stand-in")
    monkeypatch.setattr(ck, "_cp", lambda: cupy_standin)
    with registered_standin():
        yield cupy_standin


def test_kernel_check_passes_on_the_standin(gc, standin_cupy):
    assert gc.kernels(standin_cupy) < 1e-11


BENCH_DOC = {"rows": [
    {"model": "SimpleConvNet", "task": "train", "batch": 100, "xpnet": {"ms": 2.5},
     "torch": {"ms": 2.0}, "ratio": 1.25},
    {"model": "SimpleConvNet", "task": "infer", "batch": 1000, "xpnet": {"ms": 4.0},
     "torch": None, "ratio": None}]}


def test_all_writes_json_after_every_stage(gc, tmp_path, monkeypatch, standin_cupy):
    """--all with the GPU stages faked (the kernel check really runs, on the stand-in): one
    record per stage, the file rewritten after each, a failed stage fails the exit status
    but the later stages still run."""
    monkeypatch.setattr(gc.xpnet.backend, "gpu_available", lambda: (True, ""))
    monkeypatch.setattr(gc, "environment", lambda: {"gpu_available": True, "gpu": "Fake"})
    monkeypatch.setattr(gc, "load_library", lambda name: standin_cupy)
    monkeypatch.setattr(gc.xpnet, "set_device", lambda d: None)
    monkeypatch.setattr(gc, "gradients", lambda: {"SimpleConvNet gpu": 1e-13})
    ran = []

    def fake_subprocess(step, timeout):
        ran.append((step["stage"], step["command"], step["env"], timeout))
        if step["stage"] == "suite":
            return False, {"returncode": 1, "output_tail": "...\n2 failed, 10 passed in 3.0s\n"}
        with open(step["command"][-1], "w") as f:
            json.dump(BENCH_DOC, f)
        return True, {"returncode": 0, "output_tail": ""}

    monkeypatch.setattr(gc, "_subprocess", fake_subprocess)
    writes = []
    real_write = gc.write_json
    monkeypatch.setattr(gc, "write_json", lambda p, d: (writes.append(len(d["stages"])),
                                                       real_write(p, d)))
    out = tmp_path / "gpu.json"
    assert gc.run_all(str(out), python="PY") == 1
    assert writes == [1, 2, 3, 4, 5]
    assert [r[0] for r in ran] == ["suite", "bench"] and ran[0][3] == gc.LIMITS["suite"]
    assert ran[1][1][-1].endswith("bench.json")
    doc = json.loads(out.read_text())
    status = {s["stage"]: s["status"] for s in doc["stages"]}
    assert status == {"suite": "failed", "kernels": "ok", "gradients": "ok", "bench": "ok",
                      "cuda_graph": "not built"}
    suite = doc["stages"][0]
    assert suite["counts"] == {"failed": 2, "passed": 10}
    assert doc["stages"][1]["worst_rel_err"] < 1e-11
    assert doc["stages"][3]["document"] == BENCH_DOC
    table = gc.render(doc)
    assert "| suite | failed | 2 failed, 10 passed |" in table
    assert "| SimpleConvNet | train | 100 | 2.50 | 2.00 | 1.25 |" in table
    assert "| SimpleConvNet | infer | 1000 | 4.00 | - | - |" in table
    assert gc.main(["--render", str(out)]) == 0


def test_a_crashing_stage_is_recorded(gc, monkeypatch):
    def boom(cp):
        raise RuntimeError("cudaErrorIllegalAddress")
    monkeypatch.setattr(gc, "kernels", boom)
    rec = gc.run_stage(gc.plan()[1], None, "/nonexistent")
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: cudaErrorIllegalAddress"
