"""The docs' code-block rules (top-level conftest.py, docs/writing-docs.md) hold: blocks run,
`notest REASON` skips with the reason, an unmarked block or an unknown reason fails."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DOC = '''# A doc

```python
x = 1 + 1
assert x == 2
open("made.txt", "w").write("hi")
```

```bash
test "$(cat made.txt)" = hi            # the previous block's file, same folder
xpnet --help > /dev/null
```

```python notest gpu
raise SystemExit("never run")
```

```python save:helper.py
VALUE = 41
```

```python
from helper import VALUE
assert VALUE == 41
```

```text
output, not run
```
'''


def _run(tmp_path, doc):
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --markdown-docs\n")
    (tmp_path / "doc.md").write_text(doc)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "doc.md"], cwd=tmp_path, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    return proc.returncode, proc.stdout


def test_blocks_run_in_order_and_notest_skips_with_its_reason(tmp_path):
    rc, out = _run(tmp_path, DOC)
    assert rc == 0, out
    assert "4 passed, 1 skipped" in out, out
    assert "not run: gpu (needs CuPy and an NVIDIA GPU)" in out, out
    assert re.search(r"docs code blocks: 4 run, 0 failed, 1 not run \(gpu 1\)", out), out
    assert not (tmp_path / "made.txt").exists()      # blocks ran in a scratch folder


def test_unmarked_block_unknown_reason_and_failing_shell_fail(tmp_path):
    doc = "```\nno language\n```\n\n```python notest someday\npass\n```\n\n" \
          "```bash\nfalse\necho unreachable\n```\n"
    rc, out = _run(tmp_path, doc)
    assert rc == 1, out
    assert "3 failed" in out, out
    assert "write ```python, ```bash or ```text" in out, out
    assert "`notest someday`: the reason must be one of" in out, out
    assert "shell block exited with 1" in out and "unreachable" not in out.split(
        "--- output ---")[-1], out
