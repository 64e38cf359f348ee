"""`kn export`: a note as a notebook or a percent script, with its recorded outputs and its sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest
from click.testing import CliRunner

from kernelnotes.cli import build_cli
from kernelnotes.export import export_note, requirements
from kernelnotes.note import Snippet
from kernelnotes.parse import parse_markdown
from kernelnotes.pipeline import Outcome
from kernelnotes.results import CheckCase, RunResult

# Sessions interleave (a, b, a) and a block runs alone: the export must keep them apart as a page does.
NOTE = """\
---
title: 导出测试
date: 2025-05-01
---

# 导出测试

摘要。

<!-- more -->

公式 $e^{x}$ 和

$$
\\sum_j x_j
$$

```python exec="on" session="a"
--8<-- "snippets/helper.py"
x = value() + 1
print("a sees x =", x)
```

```python
print("not executed: stays in the prose")
```

```python exec="on" session="b"
print("b sees x:", "x" in globals())
y = 10
```

```python exec="on" session="a"
print("a again:", x + 1, "y" in globals())
```

```python exec="on"
print("alone sees:", sorted(k for k in ("x", "y") if k in globals()))
40 + 2
```
"""
EXPECTED_STDOUT = [
    "a sees x = 2\n",
    "b sees x: False\n",
    "a again: 3 False\n",
    "alone sees: []\n",
]


@pytest.fixture
def kn(project, monkeypatch):
    (project.root / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes:\n      db: .cache/kn.db\n",
        encoding="utf-8",
    )
    project.snippet("helper.py", "def value():\n    return 1\n")
    monkeypatch.chdir(project.root)
    cli = build_cli()

    def run(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return run


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and "kernelnotes" in c.metadata]


def test_notebook_has_prose_blocks_outputs_and_sessions(kn, project):
    note = project.note("posts/x.md", NOTE)
    r = kn("export", str(note), "--run", "--out", "out")
    assert r.exit_code == 0, r.output
    nb = nbformat.read(project.root / "out" / "x.ipynb", as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "pip install" not in first.source  # standard library only
    assert "只需要 Python 标准库" in first.source and "notes/posts/x.md" in first.source
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "$e^{x}$" in prose and "\\sum_j x_j" in prose and "<!-- more -->" not in prose
    assert 'print("not executed: stays in the prose")' in prose and "date: 2025" not in prose
    blocks = _code_cells(nb)
    assert len(blocks) == 4
    assert blocks[0].source.startswith("def value():\n    return 1\n")  # the include, resolved
    assert [c.metadata["kernelnotes"]["line"] for c in blocks] == [18, 28, 33, 37]
    assert [c.outputs[0].text for c in blocks] == EXPECTED_STDOUT
    assert blocks[3].outputs[1].data["text/plain"] == "42"  # the last expression, as on the page
    assert all(c.metadata["kernelnotes"]["device"] for c in blocks)  # where the outputs came from
    switches = [c.source.split("  #")[0] for c in nb.cells if c.source.startswith("kn_session(")]
    assert switches == ['kn_session("a")', 'kn_session("b")', 'kn_session("a")', "kn_session(None)"]


def test_script_runs_top_to_bottom_and_reproduces_the_page(kn, project, tmp_path_factory):
    note = project.note("posts/x.md", NOTE)
    assert kn("export", str(note), "--run", "--to", "py", "--out", "out").exit_code == 0
    script = (project.root / "out" / "x.py").read_text(encoding="utf-8")
    assert script.count("# %%") >= 8 and "# %% [markdown]" in script
    elsewhere = tmp_path_factory.mktemp("reader")
    (elsewhere / "x.py").write_text(script, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "x.py"], cwd=elsewhere, capture_output=True, text=True, timeout=60, env=env
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines(keepends=True) == EXPECTED_STDOUT


def test_failing_and_crashing_blocks_are_marked_and_exit_nonzero(kn, project):
    note = project.note(
        "posts/bad.md",
        '# 坏块\n\n```python exec="on"\nprint("before")\n1 / 0\n```\n\n'
        '```python exec="on"\nimport os\nos.abort()\n```\n\n```python exec="on"\nprint("fine")\n```\n',
    )
    r = kn("export", str(note), "--run", "--out", "out")
    assert r.exit_code == 1
    problems = [line for line in r.output.splitlines() if ": error: " in line]
    assert len(problems) == 2, r.output
    assert problems[0].startswith("notes/posts/bad.md:3: error: block failed: ZeroDivisionError")
    assert problems[1].startswith("notes/posts/bad.md:8: error: block failed: ")
    nb = nbformat.read(project.root / "out" / "bad.ipynb", as_version=4)  # written all the same
    zero, crash, fine = _code_cells(nb)
    error = [o for o in zero.outputs if o.output_type == "error"]
    assert error and error[0].ename == "ZeroDivisionError" and zero.outputs[0].text == "before\n"
    assert "raises-exception" in zero.metadata["tags"] and "raises-exception" in crash.metadata["tags"]
    assert [o.output_type for o in crash.outputs][-1] == "error"  # after what it printed as it died
    assert fine.outputs[0].text == "fine\n" and "tags" not in fine.metadata


def test_without_recorded_results_cells_have_no_outputs_and_a_warning(kn, project):
    note = project.note("posts/new.md", '# 新\n\n```python exec="on"\nprint(1)\n```\n')
    r = kn("export", str(note), "--out", "out")
    assert r.exit_code == 0
    assert "notes/posts/new.md:3: warning: no result recorded for this block" in r.output
    nb = nbformat.read(project.root / "out" / "new.ipynb", as_version=4)
    (cell,) = _code_cells(nb)
    assert cell.outputs == [] and cell.execution_count is None and cell.source == "print(1)"


def test_check_block_calls_the_public_api_and_embeds_the_table(project):
    text = (
        '# 检查\n\n```python exec="on" check="softmax:my_softmax" expect="fail" bench="on"\n'
        "import torch\n\ndef my_softmax(x):\n    return x\n```\n"
    )
    note = parse_markdown(text, "posts/c.md", project.resolver()).note
    case = CheckCase("x[3, 1]", "float32", "3x1", False, 1.0, 2.0, 1e-5, "too far", 0.1, 0.2, 0.3)
    result = RunResult(
        "failed",
        stdout="hi\n",
        check=[case],
        check_name="softmax:my_softmax",
        device="cpu0",
        device_class="cpu",
    )
    export = export_note(note, text, [Outcome(note.path, note.snippets[0], "k", result)])
    (cell,) = _code_cells(export.notebook)
    assert cell.source.endswith(
        'from kernelnotes.api import check\n\ncheck_cases = check(my_softmax, "softmax", device=DEVICE, bench=True)'
    )
    assert 'expect="fail"' in cell.source
    out = cell.outputs[0].text
    assert out.startswith("hi\ncheck softmax: 0/1 cases pass\ncase ")
    assert "FAIL" in out and "x[3, 1] float32: too far" in out
    assert export.problems == []  # failing as expected is not a problem
    intro = export.notebook.cells[0].source
    assert "pip install kernelnotes torch" in intro and "cpu0（cpu）" in intro
    setup = export.notebook.cells[1].source
    assert 'DEVICE = "cuda" if torch.cuda.is_available() else "cpu"' in setup and "TRITON_INTERPRET" in setup


def test_requirements_name_pypi_distributions():
    def snippet(code, **attrs):
        return Snippet(0, "python", {"exec": "on", **attrs}, 1, 2, code)

    assert requirements([snippet("import os, json\nfrom collections import deque")]) == []
    assert requirements([snippet("import numpy as np\nfrom sklearn import tree\nimport PIL.Image")]) == [
        "numpy",
        "pillow",
        "scikit-learn",
    ]
    assert requirements([snippet("x = 1", check="relu")]) == ["kernelnotes", "torch"]


def test_api_check_prints_the_table_and_returns_the_cases(capsys):
    torch = pytest.importorskip("torch")
    from kernelnotes import api

    assert set(api.__all__) >= {"check", "CheckCase"}
    cases = api.check(torch.relu, "relu", device="cpu")
    assert cases and all(isinstance(c, api.CheckCase) and c.ok for c in cases)
    out = capsys.readouterr().out
    assert out.startswith(f"check relu: {len(cases)}/{len(cases)} cases pass\ncase ")
    assert {"float32", "float16", "bfloat16"} <= {line.split()[2] for line in out.splitlines()[2:]}
    wrong = api.check(lambda x: x, "relu", quiet=True)
    assert not any(c.ok for c in wrong) and capsys.readouterr().out == ""
    with pytest.raises(LookupError, match="unknown kernel 'nope'"):
        api.check(torch.relu, "nope")


def test_export_is_reproducible_json_the_notebook_format_accepts(kn, project):
    note = project.note("posts/x.md", NOTE)
    kn("export", str(note), "--run", "--out", "out")
    first = (project.root / "out" / "x.ipynb").read_text(encoding="utf-8")
    kn("export", str(note), "--out", "out")  # again, from the recorded results: the same file
    assert (project.root / "out" / "x.ipynb").read_text(encoding="utf-8") == first
    data = json.loads(first)
    assert data["nbformat"] == 4 and data["metadata"]["kernelnotes"]["source"] == "notes/posts/x.md"


def test_a_block_importing_a_snippet_module_is_reported(kn, project):
    note = project.note("posts/imp.md", '# 导入\n\n```python exec="on"\nfrom helper import value\n```\n')
    r = kn("export", str(note), "--out", "out")
    assert r.exit_code == 0 and (project.root / "out" / "imp.ipynb").is_file()
    assert (
        "notes/posts/imp.md:3: warning: the block imports snippets/helper.py, which the export does not "
        'contain (include it into the block with --8<-- "snippets/helper.py" instead)'
    ) in r.output
