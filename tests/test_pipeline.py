"""The execution pipeline end to end: a real worker process, real kernels, the runs table."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from kernelnotes.index import Index
from kernelnotes.pipeline import RunOptions
from kernelnotes.running import load_notes, make_pipeline
from kernelnotes.runs import RunStore
from kernelnotes.settings import load_settings

GOOD_SOFTMAX = """
import torch

def online_softmax(x):
    x32 = x.float()
    m = x32.amax(-1, keepdim=True)
    e = (x32 - m).exp()
    return (e / e.sum(-1, keepdim=True)).to(x.dtype)
"""
WRONG_SOFTMAX = """
import torch

def online_softmax(x):
    return torch.softmax(x.float(), 0).to(x.dtype)  # wrong axis
"""

BLOCKS = {
    "plain": 'import sys\nfrom helper import shout\nprint("printed")\nsys.stdout.write("written\\n")\nshout()\n6 * 7',
    "session_a": "shared = 41",
    "session_b": "shared + 1",
    "alone": "shared",
    "check_good": GOOD_SOFTMAX,
    "check_wrong": WRONG_SOFTMAX,
    "check_unknown": "def softmx(x):\n    return x",
    "check_signature": "def softmax():\n    return None",
    "check_dtype": "import torch\ndef softmax(x):\n    return torch.softmax(x.float(), -1)",
    "check_shape": "def softmax(x):\n    return x[..., :1]",
    "missing_include": '--8<-- "snippets/missing.py"\nprint("never")',
    "syntax": "x = (1,\ny = 2",
    "raises": "a = 1\nb = 0\nc = a / b",
    "loop": "while True:\n    pass",
    "exit": "import sys\nsys.exit(3)",
    "segfault": "import ctypes\nctypes.string_at(0)",
    "abort": "import os\nos.abort()",
    "flood": 'print("x" * 100_000_000)',
    "crash_first": "import os\nos.abort()",
    "crash_then": 'print("needs the crashed session")',
    "bare_kernels": "import kernels",
    "subprocess_out": 'import subprocess, sys\nsubprocess.run(["echo", "from a child"], stdout=sys.stdout, check=True)\nsys.stdout.buffer.write(b"bytes\\n")',
    "figure": "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])",
    "script": 'print("<script>alert(1)</script>")',
    "after": 'print("still running")',
}
ATTRS = {
    "session_a": 'session="s"',
    "session_b": 'session="s"',
    "check_good": 'check="softmax:online_softmax"',
    "check_wrong": 'check="softmax:online_softmax"',
    "check_unknown": 'check="softmx"',
    "check_signature": 'check="softmax"',
    "check_dtype": 'check="softmax"',
    "check_shape": 'check="softmax"',
    "loop": 'timeout="3"',
    "crash_first": 'session="crash"',
    "crash_then": 'session="crash"',
}


def build_note(blocks: dict[str, str]) -> tuple[str, dict[str, int]]:
    """A note with one exec block per entry; returns the text and each block's fence line."""
    lines = ["---", "title: 执行测试", "date: 2025-01-01", "---", "", "# 执行测试", ""]
    where = {}
    for name, code in blocks.items():
        where[name] = len(lines) + 1
        lines += [
            f'```python exec="on" {ATTRS.get(name, "")}'.rstrip(),
            *code.strip("\n").split("\n"),
            "```",
            "",
        ]
    return "\n".join(lines), where


def make(project, **options):
    settings = load_settings(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    pipeline = make_pipeline(settings, Index(settings.db_path), RunOptions(**{"timeout": 60, **options}))
    return settings, pipeline


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    from .conftest import Project

    project = Project(tmp_path_factory.mktemp("pipeline"))
    (project.root / "kernels").mkdir()  # like the repository: must not be importable as `kernels`
    (project.root / "kernels" / "__init__.py").write_text("SHADOW = True\n")
    project.snippet("helper.py", 'def shout():\n    print("from an imported function")\n')
    text, where = build_note(BLOCKS)
    project.note("exec.md", text)
    project.note("other.md", '# 另一篇\n\n```bash exec="on"\necho hi\n```\n')
    settings, pipeline = make(project, memory_limit_mb=0)
    notes, _ = load_notes(settings)
    try:
        outcomes = pipeline.run(notes)
    finally:
        pipeline.close()
    by_name = {
        name: o
        for o in outcomes
        if o.note_path == "exec.md"
        for name, line in where.items()
        if o.snippet.start_line == line
    }
    other = [o for o in outcomes if o.note_path == "other.md"]
    return by_name, other, where, pipeline


def test_output_value_and_imported_function_output_are_captured(ran):
    r = ran[0]["plain"].result
    assert r.ok and r.stdout == "printed\nwritten\nfrom an imported function\n" and r.value == "42"
    assert r.device_class == "cpu" and r.versions["torch"].startswith("2.")


def test_sessions_share_a_namespace_and_other_blocks_do_not(ran):
    assert ran[0]["session_b"].result.value == "42"
    alone = ran[0]["alone"].result
    assert not alone.ok and "NameError: name 'shared' is not defined" in alone.error


def test_check_passes_for_a_correct_function_and_fails_for_a_wrong_one(ran):
    good, wrong = ran[0]["check_good"].result, ran[0]["check_wrong"].result
    assert good.ok and good.check_name == "softmax:online_softmax"
    assert {c.dtype for c in good.check} == {"float32", "float16", "bfloat16", "float64"} and all(
        c.ok for c in good.check
    )
    case = good.check[0]
    assert (
        case.max_abs is not None
        and case.bound > 0
        and case.snippet_ms is not None
        and case.kernel_ms is None  # the Triton kernel under the CPU interpreter is not timed
    )
    assert not wrong.ok and any(not c.ok for c in wrong.check) and not wrong.error


def test_check_errors_are_clear(ran):
    unknown = ran[0]["check_unknown"].result.error
    assert "unknown kernel 'softmx'" in unknown and "softmax" in unknown and "flash_attention" in unknown
    signature = ran[0]["check_signature"].result
    assert not signature.ok and "raised TypeError" in signature.check[0].message
    dtype = ran[0]["check_dtype"].result
    assert not dtype.ok and any(
        "returned dtype torch.float32, expected torch.float16" in c.message for c in dtype.check
    )


def test_wrong_shape_and_missing_include(ran):
    shape = ran[0]["check_shape"].result
    assert not shape.ok and any("shape" in c.message and "!= reference" in c.message for c in shape.check)
    include = ran[0]["missing_include"].result
    assert not include.ok and include.error.endswith('include "snippets/missing.py" not found')


def test_errors_name_the_note_file_lines(ran):
    by_name, _, where, _ = ran
    syntax = by_name["syntax"].result.error
    assert (
        f'"notes/exec.md", line {where["syntax"] + 1}' in syntax
        or f'exec.md", line {where["syntax"] + 2}' in syntax
    )
    assert "SyntaxError" in syntax
    raises = by_name["raises"].result.error
    assert f'exec.md", line {where["raises"] + 3}' in raises and "ZeroDivisionError" in raises
    assert "worker_main" not in raises  # trimmed to the user's code


def test_hang_exit_and_crashes_become_failed_results(ran):
    by_name = ran[0]
    assert "timed out after 3 s" in by_name["loop"].result.error
    assert "sys.exit(3)" in by_name["exit"].result.error
    assert "SIGSEGV" in by_name["segfault"].result.error
    assert "SIGABRT" in by_name["abort"].result.error
    after = by_name["after"].result
    assert after.ok and after.stdout == "still running\n"  # nothing else is lost


def test_a_dead_session_skips_its_later_blocks_with_a_reason(ran):
    assert "SIGABRT" in ran[0]["crash_first"].result.error
    then = ran[0]["crash_then"].result
    assert then.error.startswith("not run: an earlier block of this session") and then.retry


def test_blocks_cannot_import_the_top_level_folders_by_bare_name(ran):
    assert "ModuleNotFoundError: No module named 'kernels'" in ran[0]["bare_kernels"].result.error


def test_child_process_output_and_stdout_buffer_are_captured(ran):
    r = ran[0]["subprocess_out"].result
    assert r.ok and "from a child" in r.stdout and "bytes" in r.stdout


def test_huge_output_is_truncated_with_a_notice(ran):
    r = ran[0]["flood"].result
    assert r.ok and len(r.stdout) < 300_000 and "output truncated" in r.stdout


def test_figure_is_captured_as_svg(ran):
    (figure,) = ran[0]["figure"].result.figures
    assert figure.format == "svg" and figure.data.lstrip().startswith(("<?xml", "<svg"))


def test_language_without_runner(ran):
    (o,) = ran[1]
    assert o.failed and "no runner for language 'bash'" in o.result.error


def test_results_are_stored_and_rendered(ran):
    by_name, _, _, pipeline = ran
    rendered = pipeline.pm.hook.render_result(outcome=by_name["check_wrong"], figure_link=None, language="en")
    assert (
        rendered.startswith('!!! failure "failed')
        and "| case | dtype |" in rendered
        and "**FAIL**" in rendered
    )
    script = pipeline.pm.hook.render_result(outcome=by_name["script"], figure_link=None, language="en")
    assert "```text\n    <script>alert(1)</script>" in script  # inside a code fence: shown, not run
    figure = pipeline.pm.hook.render_result(outcome=by_name["figure"], figure_link=None, language="en")
    assert 'src="data:image/svg+xml;base64,' in figure


# ---- the cache ------------------------------------------------------------------------------------


def test_cache_reruns_exactly_what_changed(project):
    project.snippet("inc.py", 'VALUE = "first"\n')
    project.snippet("mod.py", 'def value():\n    return "module one"\n')
    project.note(
        "a.md",
        textwrap.dedent("""
        # A

        ```python exec="on" session="s"
        --8<-- "snippets/inc.py"
        print(VALUE)
        ```

        ```python exec="on" session="s"
        print(VALUE * 2)
        ```

        ```python exec="on"
        from mod import value
        print(value())
        ```

        ```python exec="on"
        print("independent")
        ```
    """),
    )
    settings, pipeline = make(project)
    try:

        def run():
            before = pipeline.executed
            outcomes = pipeline.run(load_notes(settings)[0])
            return pipeline.executed - before, [o.result.stdout.strip() for o in outcomes]

        assert run() == (4, ["first", "firstfirst", "module one", "independent"])
        assert run()[0] == 0  # nothing changed: nothing runs
        project.snippet("inc.py", 'VALUE = "second"\n')
        assert run() == (2, ["second", "secondsecond", "module one", "independent"])  # the session re-runs
        project.snippet("mod.py", 'def value():\n    return "module two"\n')
        executed, out = run()
        assert executed == 1 and out[2] == "module two"  # and the worker did not serve the stale module
    finally:
        pipeline.close()


def run_and_export(project, folder) -> tuple[int, int]:
    """Run every note of the project, export the results to `folder`: (blocks executed, exported)."""
    settings, pipeline = make(project)
    try:
        pipeline.run(load_notes(settings)[0])
        return pipeline.executed, pipeline.store.export(folder)
    finally:
        pipeline.close()


def test_export_import_and_stale_marking(project, tmp_path):
    project.note("a.md", '# A\n\n```python exec="on"\nprint("recorded")\n```\n')
    assert run_and_export(project, tmp_path / "results") == (1, 1)
    data = json.loads((tmp_path / "results" / "a.md.json").read_text())
    assert data["note"] == "a.md" and data["runs"][0]["stdout"] == "recorded\n"
    data["runs"][0]["device"], data["runs"][0]["device_class"] = "NVIDIA H100 80GB HBM3", "cuda"
    (tmp_path / "results" / "a.md.json").write_text(json.dumps(data))
    # a site built elsewhere, without execution, shows the imported result with its device
    other_db = Index(tmp_path / "site.db")
    settings2 = load_settings(notes=project.notes, db=tmp_path / "site.db", cwd=project.root)
    viewer = make_pipeline(settings2, other_db, RunOptions(execute=False))
    assert viewer.store.import_(tmp_path / "results").imported == 1
    (o,) = viewer.run(load_notes(settings2)[0])
    assert o.result.device == "NVIDIA H100 80GB HBM3" and not o.stale
    project.note("a.md", '# A\n\n```python exec="on"\nprint("edited")\n```\n')
    (o,) = viewer.run(load_notes(settings2)[0])
    assert o.stale and o.result.stdout == "recorded\n"
    assert viewer.pm.hook.render_result(outcome=o, figure_link=None, language="en").startswith(
        '!!! warning "stale'
    )
    # run the edited code here: the CPU result is current, the GPU one is listed as stale
    runner = make_pipeline(settings2, other_db, RunOptions())
    try:
        (o,) = runner.run(load_notes(settings2)[0])
    finally:
        runner.close()
    assert not o.stale and o.result.stdout == "edited\n"
    assert [(r.device, stale) for r, stale in o.others] == [("NVIDIA H100 80GB HBM3", True)]
    assert "stale: recorded for an earlier version" in runner.pm.hook.render_result(
        outcome=o, figure_link=None, language="en"
    )


def test_identical_blocks_in_two_notes_share_recorded_gpu_results(project, tmp_path):
    block = '```python exec="on"\nprint("same code")\n```\n'
    project.note("a.md", "# A\n\n" + block)
    project.note("b.md", "# B\n\n" + block)
    # one key: the second block is served from the cache, and stored once
    assert run_and_export(project, tmp_path / "results") == (1, 1)
    (exported,) = (tmp_path / "results").rglob("*.json")
    data = json.loads(exported.read_text())
    data["runs"][0]["device"], data["runs"][0]["device_class"] = "NVIDIA H100 80GB HBM3", "cuda"
    data["runs"][0]["key"] = "recorded-on-cuda"  # a GPU's key differs (device class); its code key does not
    exported.write_text(json.dumps(data))
    settings2 = load_settings(notes=project.notes, db=tmp_path / "site.db", cwd=project.root)
    viewer = make_pipeline(settings2, Index(tmp_path / "site.db"), RunOptions(execute=False))
    viewer.store.import_(tmp_path / "results")
    outcomes = viewer.run(load_notes(settings2)[0])
    # both places show the GPU result, current: it was recorded for exactly this code
    assert [(o.note_path, o.result.device, o.stale) for o in outcomes] == [
        ("a.md", "NVIDIA H100 80GB HBM3", False),
        ("b.md", "NVIDIA H100 80GB HBM3", False),
    ]


def test_export_files_mirror_note_paths_and_never_collide(project, tmp_path):
    # "a/b.md" and "a__b.md" were one file when paths were flattened with "__"
    project.note("a/b.md", '# B\n\n```python exec="on"\nprint("nested")\n```\n')
    project.note("a__b.md", '# B2\n\n```python exec="on"\nprint("flat")\n```\n')
    assert run_and_export(project, tmp_path / "results") == (2, 2)
    files = sorted(
        p.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("*.json")
    )
    assert files == ["a/b.md.json", "a__b.md.json"]
    other = RunStore(Index(tmp_path / "other.db").db)
    assert other.import_(tmp_path / "results").imported == 2
    assert {r.stdout for n in ("a/b.md", "a__b.md") for r in other.latest(n, 0)} == {"nested\n", "flat\n"}


def test_memory_limit(project):
    project.note("m.md", '# M\n\n```python exec="on"\nblob = bytearray(8 * 2**30)\n```\n')
    settings, pipeline = make(project, memory_limit_mb=4096)
    try:
        (o,) = pipeline.run(load_notes(settings)[0])
    finally:
        pipeline.close()
    assert o.failed and "MemoryError" in o.result.error


def test_kn_run_writes_junit_and_exits_1_on_failure(project, monkeypatch):
    from kernelnotes.cli import build_cli

    project.note("ok.md", '# OK\n\n```python exec="on"\nprint(1)\n```\n')
    project.note(
        "bad.md",
        '# Bad\n\n\n```python exec="on"\nprint("\\x1b[31mred\\x1b[0m")\nraise ValueError("boom")\n```\n',
    )
    monkeypatch.chdir(project.root)
    runner = CliRunner()
    args = ["--notes", "notes", "--db", "kn.db", "run", "--report", "junit.xml", "--summary", "summary.md"]
    result = runner.invoke(build_cli(), args)
    assert result.exit_code == 1, result.output
    assert "FAILED notes/bad.md:4: ValueError: boom" in result.output
    suite = ET.parse(project.root / "junit.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"notes/ok.md:3", "notes/bad.md:4"}
    assert cases["notes/bad.md:4"].find("failure").get("message") == "ValueError: boom"
    assert "| `notes/bad.md:4` | failed |" in (project.root / "summary.md").read_text()
    again = runner.invoke(build_cli(), args[:5])
    assert again.exit_code == 1 and "0 executed, 2 cached" in again.output


def test_shards_cover_every_note_exactly_once(project):
    from kernelnotes.running import select_shard

    for i in range(7):
        project.note(f"n{i}.md", f'# N{i}\n\n```python exec="on"\nprint({i})\n```\n')
    settings, pipeline = make(project)
    notes = load_notes(settings)[0]
    shards = [select_shard(pipeline, notes, f"{k}/3") for k in (1, 2, 3)]
    paths = sorted(n.path for shard in shards for n in shard)
    assert paths == sorted(n.path for n in notes)
    assert [len(s) for s in shards] == [3, 2, 2]
    assert [n.path for n in select_shard(pipeline, notes, "2/3")] == [
        n.path for n in shards[1]
    ]  # deterministic
    with pytest.raises(ValueError, match="K/N"):
        select_shard(pipeline, notes, "x")


def test_site_shows_passing_and_failing_checks(tmp_path):
    import subprocess
    import sys

    (tmp_path / "notes").mkdir()
    (tmp_path / "snippets").mkdir()
    (tmp_path / "notes" / "index.md").write_text("# Home\n", encoding="utf-8")
    good = f'```python exec="on" check="softmax:online_softmax"\n{GOOD_SOFTMAX.strip()}\n```'
    wrong = f'```python exec="on" check="softmax:online_softmax"\n{WRONG_SOFTMAX.strip()}\n```'
    out = '```python exec="on"\nprint("<script>alert(1)</script>")\n```'
    fig = '```python exec="on"\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n```'
    text = f"# Softmax\n\n{good}\n\n{wrong}\n\n{out}\n\n{fig}\n"
    (tmp_path / "notes" / "softmax.md").write_text(text, encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes\nmarkdown_extensions:\n  - admonition\n"
        "  - tables\n  - pymdownx.details\n  - pymdownx.superfences\n",
        encoding="utf-8",
    )
    env = {"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "KERNELNOTES_LOAD_PLUGINS": "0"}

    def build(*flags):
        return subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "-f", str(tmp_path / "mkdocs.yml"), *flags],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )

    result = build()
    assert result.returncode == 0, result.stderr[-2000:]
    page = (tmp_path / "site" / "softmax" / "index.html").read_text(encoding="utf-8")
    assert page.count("<table>") == 2  # the two check tables (the theme's own table has a class)
    assert "16/16 cases pass" in page and "FAIL" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    # figures are published as files, not base64 in the page
    (url,) = re.findall(r'<img[^>]*class="kn-figure"[^>]*src="([^"]+)"', page)
    assert url.startswith("/assets/kernelnotes/figures/") and url.endswith(".svg")
    assert (tmp_path / "site" / url.lstrip("/")).read_text().lstrip().startswith(("<?xml", "<svg"))
    assert "data:image" not in page
    report = (tmp_path / "site" / "execution" / "index.html").read_text(encoding="utf-8")
    assert "softmax.md" in report and "failed" in report and "passed" in report
    # strict fails on the wrong snippet, also when -q hides warnings
    strict = build("--strict", "-q")
    assert strict.returncode != 0 and "snippet(s) failed: softmax.md:" in strict.stderr
    assert "Traceback" not in strict.stderr
    # a build whose page render comes from the site cache publishes the page's figure too
    shutil.rmtree(tmp_path / "site")
    again = build()
    assert again.returncode == 0 and re.search(r"site cache: .*\d+ render hit", again.stderr), again.stderr
    assert (tmp_path / "site" / url.lstrip("/")).read_text().lstrip().startswith(("<?xml", "<svg"))


def test_kn_run_changed_runs_only_notes_git_reports(project, monkeypatch):
    import subprocess

    from kernelnotes.cli import build_cli

    project.note("kept.md", '# Kept\n\n```python exec="on"\nprint("kept")\n```\n')
    project.note("edited.md", '# Edited\n\n```python exec="on"\nprint("before")\n```\n')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=project.root, check=True)
    subprocess.run([*git, "add", "notes"], cwd=project.root, check=True)
    subprocess.run([*git, "commit", "-qm", "notes"], cwd=project.root, check=True)
    monkeypatch.chdir(project.root)
    args = ["--notes", "notes", "--db", "kn.db", "run", "--changed"]
    assert "no changed notes" in CliRunner().invoke(build_cli(), args).output
    project.note("edited.md", '# Edited\n\n```python exec="on"\nprint("after")\n```\n')
    project.note("new.md", '# New\n\n```python exec="on"\nprint("new")\n```\n')
    result = CliRunner().invoke(build_cli(), args)
    assert result.exit_code == 0, result.output
    assert "2 blocks: 2 passed, 0 failed, 2 executed" in result.output


def test_key_follows_imports_between_snippet_modules(project):
    from kernelnotes.cache import KeyMaker
    from kernelnotes.parse import parse_markdown

    project.snippet("outer.py", "from inner import f\n")
    project.snippet("inner.py", "def f():\n    return 1\n")
    project.snippet("other.py", "X = 1\n")
    note = parse_markdown('```python exec="on"\nfrom outer import f\n```\n', "a.md", project.resolver()).note

    def key():
        return KeyMaker(project.snippets).keys(note.snippets)[0]

    before = key()
    project.snippet("other.py", "X = 2\n")
    assert key() == before  # not imported: no re-run
    project.snippet("inner.py", "def f():\n    return 2\n")
    assert key() != before  # imported through outer.py


def test_notes_outside_the_notes_folder_keep_distinct_names(project, tmp_path):
    # `kn run drafts/a/x.md drafts/b/x.md`: two files with one name must not share results
    paths = []
    for folder, word in (("a", "first"), ("b", "second")):
        path = project.root / "drafts" / folder / "x.md"
        path.parent.mkdir(parents=True)
        path.write_text(f'# X\n\n```python exec="on"\nprint("{word}")\n```\n', encoding="utf-8")
        paths.append(path)
    settings = load_settings(notes=project.notes, db=tmp_path / "i.db", cwd=project.root)
    notes, problems = load_notes(settings, paths)
    assert not problems and sorted(n.path for n in notes) == ["drafts/a/x.md", "drafts/b/x.md"]


def test_warm_up_starts_the_worker_the_next_edit_uses(project):
    """Under serve every block may be cached: warm_up starts the Python worker in the background, and
    the block run next uses that process instead of starting another."""
    project.note("a.md", '# A\n\n```python exec="on"\nprint("one")\n```\n\n```text\nnot run\n```\n')
    settings, pipeline = make(project)
    try:
        notes = load_notes(settings)[0]
        pipeline.run(notes)  # sets the project's code version, as a build does before warming up
        runner = pipeline.stash["python-runner"]
        runner.close()
        assert not any(w.alive for w in runner.all)
        thread = pipeline.warm_up(notes)
        assert thread is not None
        thread.join(120)
        worker = runner.all[0]
        assert worker.alive and worker.started == 2
        project.note("a.md", '# A\n\n```python exec="on"\nprint("two")\n```\n')
        outcomes = pipeline.run(load_notes(settings)[0])
        assert outcomes[0].result.stdout.strip() == "two" and pipeline.executed == 2
        assert worker.started == 2  # no second start: the warm worker ran it
    finally:
        pipeline.close()
    assert pipeline.warm_up([]) is None  # nothing executable: nothing starts


def test_memoised_reads_see_writes_from_this_and_other_connections(tmp_path):
    from kernelnotes.results import RunResult

    def result(key: str, stdout: str, at: str) -> RunResult:
        return RunResult(
            status="passed", stdout=stdout, device="cpu", device_class="cpu", key=key, created_at=at
        )

    db = tmp_path / "runs.db"
    serving, terminal = RunStore(Index(db).db), RunStore(Index(db).db)  # `mkdocs serve` and a `kn run`
    assert serving.fresh("k") is None and serving.latest("a.md", 0) == []
    terminal.save("a.md", 0, 3, result("k", "from the terminal\n", "2026-01-01T00:00:00"))
    assert serving.fresh("k").stdout == "from the terminal\n"  # another connection's commit is seen
    serving.save("a.md", 0, 3, result("k", "newer\n", "2026-01-02T00:00:00"))
    assert serving.fresh("k").stdout == "newer\n"  # and this one's
    assert [r.stdout for r in serving.latest("a.md", 0)] == ["newer\n"]
    shown = serving.fresh("k")
    shown.stdout = "changed by a caller"
    assert serving.fresh("k").stdout == "newer\n"  # a caller's copy, not the memo's


def test_a_crash_in_a_held_run_is_shown_by_the_next_run_not_run_again(tmp_path):
    """serve's preview runs a note's blocks just before the full build: a crash or timeout (never
    stored) is reused by that build, not run a second time, and run again after it."""
    from .conftest import Project

    project = Project(tmp_path)
    project.note("crash.md", '# 崩溃\n\n```python exec="on"\nimport os\nos.abort()\n```\n')
    settings, pipeline = make(project)
    notes, _ = load_notes(settings)
    try:
        first = pipeline.run(notes, hold=True)
        assert pipeline.executed == 1 and first[0].result.retry
        second = pipeline.run(notes)
        assert pipeline.executed == 1  # the held crash, not a second run
        assert second[0].result.retry and not second[0].cached
        assert second[0].result.error == first[0].result.error
        pipeline.run(notes)
        assert pipeline.executed == 2  # held for one run only
    finally:
        pipeline.close()
