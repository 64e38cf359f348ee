"""One core, many front ends: the App, the attribute schema, every plugin in the cache key, the fence.

Each test reproduces a seam issue 12 found on main (and failed there)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import markdown
import pytest

from kernelnotes.app import App
from kernelnotes.blockattrs import parse_options
from kernelnotes.fence import ResultsView

MKDOCS_YML = """\
site_name: t
docs_dir: notes
plugins:
  - kernelnotes:
      plugins_dir: local_plugins
      timeout: 20
markdown_extensions:
  - admonition
  - pymdownx.details
  - pymdownx.superfences
  - kernelnotes.mdext
"""

LOCAL_PLUGIN = '''
import click
import torch
from kernelnotes.api import Example, KernelSpec, Tolerance, hookimpl

FACTOR = {factor}


def reference(x, upcast=True):
    return (x.float() * FACTOR).to(x.dtype)


def implementation(x):
    return x * FACTOR


@hookimpl
def register_kernels():
    return [KernelSpec(
        name="double_it", reference=reference, implementation=implementation,
        examples=lambda device, dtype, seed: [Example((torch.arange(6, dtype=dtype),), label="ramp")],
        tolerances={{"float32": Tolerance(1e-6, 1e-6)}}, dtypes=("float32",), devices=("cpu",),
    )]


@hookimpl
def register_commands(cli):
    @cli.command("hello-local")
    def hello():
        """Say hello from a plugins_dir plugin."""
        click.echo("hello from local_plugins")
'''

NOTE = """\
# 加倍

```python exec="on" check="double_it"
def double_it(x):
    return x * 2
```
"""


def kn(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from kernelnotes.cli import main; main()", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KERNELNOTES_LOAD_PLUGINS": "0"},
    )


@pytest.fixture
def local_project(project):
    (project.root / "mkdocs.yml").write_text(MKDOCS_YML)
    plugins = project.root / "local_plugins"
    plugins.mkdir()
    (plugins / "double_plugin.py").write_text(LOCAL_PLUGIN.format(factor=2))
    project.note("posts/double.md", NOTE)
    return project


# ---- attributes: one schema, one line per bad value, the rest runs ---------------------------------


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (
            {"exec": "on", "timeout": "abc"},
            "timeout: 'abc' is not a number of seconds (write e.g. timeout=120)",
        ),
        ({"exec": "on", "device": "tpu"}, "device: 'tpu' is not one of auto, cpu, cuda (write one of them)"),
        ({"exec": "on", "expect": "maybe"}, "expect: 'maybe' is not one of pass, fail (write one of them)"),
        ({"exec": "on", "check": "no such op"}, "check: 'no such op' is not a kernel name"),
        ({"exec": "perhaps"}, "exec: 'perhaps' is not on/off (write on or off)"),
    ],
)
def test_bad_attribute_values_are_one_message_each(attrs, message):
    options = parse_options(attrs)
    assert len(options.errors) == 1 and options.errors[0].startswith(message)


def test_bool_attributes_mean_the_same_everywhere():
    # main accepted exec="yes" but not bench="yes"
    assert parse_options({"exec": "yes", "bench": "yes"}).bench is True
    assert parse_options({"exec": "yes"}).exec is True


def test_bad_attribute_is_one_problem_line_and_the_run_goes_on(local_project):
    local_project.note(
        "posts/bad.md",
        '# 坏\n\n```python exec="on" timeout="abc"\nprint(1)\n```\n\n```python exec="on"\nprint("still runs")\n```\n',
    )
    (local_project.root / "local_plugins" / "double_plugin.py").unlink()  # keep this test torch-free
    (local_project.notes / "posts" / "double.md").unlink()
    out = kn(local_project.root, "run", "notes/posts/bad.md")
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if "timeout: 'abc'" in line]
    # reported once by the index (file:line: error: ...), and once as the block's failure
    assert lines[0].startswith("posts/bad.md:3: error: code block attribute timeout: 'abc'"), out.stderr
    assert sum("error: code block attribute" in line for line in out.stderr.splitlines()) == 1
    assert "2 blocks: 1 passed, 1 failed" in out.stderr, out.stderr


# ---- one App: plugins_dir seen by every front end; every plugin in the cache key --------------------


@pytest.mark.slow
def test_plugins_dir_kernel_and_command_and_cache_key(local_project):
    root = local_project.root
    listed = kn(root, "kernels", "--json")
    assert listed.returncode == 0 and '"double_it"' in listed.stdout, listed.stderr  # main: missing
    hello = kn(root, "hello-local")
    assert hello.stdout.strip() == "hello from local_plugins", hello.stderr  # main: no such command
    first = kn(root, "run")
    assert first.returncode == 0 and "1 passed, 0 failed, 1 executed" in first.stderr, first.stderr
    # edit the local plugin's kernel: main served the old "passed" from cache; now it runs again
    (root / "local_plugins" / "double_plugin.py").write_text(LOCAL_PLUGIN.format(factor=3))
    second = kn(root, "run")
    assert second.returncode == 1 and "1 executed" in second.stderr, second.stderr
    assert "check double_it" in second.stderr


def test_every_front_end_builds_the_same_app(local_project):
    app = App.load(config=local_project.root / "mkdocs.yml")
    assert app.settings.timeout == 20 and app.settings.plugins_dir == local_project.root / "local_plugins"
    names = [name for name, _ in app.pm.list_name_plugin()]
    assert "local:double_plugin.py" in names
    sources = {p.name for p in app.plugin_sources()}
    assert {"double_plugin.py", "python_runner.py", "softmax.py", "worker_main.py"} <= sources
    # pytest's front end reads the same settings (main ignored mkdocs.yml's device/timeout/memory)
    from kernelnotes.pytest_plugin import _app

    class Config:
        def __init__(self):
            self.rootpath = local_project.root
            self.stash = {}

    assert _app(Config()).settings == app.settings


def test_parse_once_and_problems_reported_once(project):
    project.note("a.md", '---\ndate: 2024/01/31\n---\n# A\n\n```python exec="on"\nprint(1)\n```\n')
    app = App.load(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    report = app.update_index()
    assert len(report.problems) == 1 and "is not a date" in str(report.problems[0])
    parsed = app.index._parsed["a.md"][1]
    assert app.index.parsed_notes(app.resolver)[0] is parsed  # reused, not parsed again


# ---- the fence: results found by identity, in any Python-Markdown --------------------------------


def _recorded(project, note_text: str):
    project.note("a.md", note_text)
    app = App.load(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    app.update_index()
    pipeline = app.pipeline(app.run_options(device="cpu"))
    try:
        outcomes = pipeline.run(app.index.parsed_notes(app.resolver))
    finally:
        pipeline.close()
    return app, outcomes


def test_plain_markdown_shows_recorded_results_by_identity(project):
    text = textwrap.dedent(
        """\
        # 两段

        ```python exec="on" session="s"
        x = 40
        ```

        移动了位置的段落。

        ```python exec="on" session="s"
        print(x + 2)
        ```
        """
    )
    app, _ = _recorded(project, text)
    # a plain markdown.markdown() over the recorded results (no mkdocs, no plugin events)
    ResultsView.activate(ResultsView(app))
    try:
        html = markdown.markdown(
            text, extensions=["admonition", "pymdownx.details", "pymdownx.superfences", "kernelnotes.mdext"]
        )
        # blocks moved and prose inserted above them: found by identity, not by position
        moved = text.replace("# 两段\n", "# 两段\n\n新加的一段。\n\n```text\nnot executed\n```\n")
        html_moved = markdown.markdown(
            moved, extensions=["admonition", "pymdownx.details", "pymdownx.superfences", "kernelnotes.mdext"]
        )
    finally:
        ResultsView.activate(None)
    for page in (html, html_moved):
        assert page.count("<details") == 2 and ">42\n" in page and "passed" in page, page
    # an edited earlier block of the session: the later block's recorded result is not for this code
    edited = text.replace("x = 40", "x = 41")
    ResultsView.activate(ResultsView(app))
    try:
        html_edited = markdown.markdown(
            edited, extensions=["admonition", "pymdownx.details", "pymdownx.superfences", "kernelnotes.mdext"]
        )
    finally:
        ResultsView.activate(None)
    # ... and is not shown as current either: no result exists for this code yet
    assert "not run yet" in html_edited and ">42\n" not in html_edited


def test_include_through_a_symlink_out_of_the_project_is_refused_by_the_site(project, tmp_path_factory):
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE\n")
    (project.snippets / "leak.py").symlink_to(secret)
    text = '# 泄露\n\n```python\n--8<-- "leak.py"\n```\n\n--8<-- "snippets/leak.py"\n'
    app, _ = _recorded(project, text)
    ResultsView.activate(ResultsView(app))
    try:
        html = markdown.markdown(text, extensions=["pymdownx.superfences", "kernelnotes.mdext"])
    finally:
        ResultsView.activate(None)
    assert "TOP-SECRET-VALUE" not in html and "leak.py" in html


def test_an_edited_include_is_seen_by_a_long_lived_app(project):
    """mkdocs serve keeps one App across rebuilds: an edited snippet file must reach the next one."""
    project.snippet("a.py", "x = 1\n")
    project.note("a.md", '# A\n\n```python exec="on"\n--8<-- "a.py"\nprint(x)\n```\n')
    app = App.load(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    app.update_index()
    assert app.index.parsed_notes(app.resolver)[0].snippets[0].code.startswith("x = 1")
    project.snippet("a.py", "x = 2\n")
    app.update_index()
    assert app.index.parsed_notes(app.resolver)[0].snippets[0].code.startswith("x = 2")


def test_hidden_files_are_never_included(project):
    (project.root / ".env").write_text("SECRET=hunter2\n")
    project.note("a.md", '# A\n\n```python exec="on"\n--8<-- ".env"\n```\n')
    app = App.load(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    report = app.update_index()
    assert any('include ".env" not found' in str(p) for p in report.problems)
    assert "hunter2" not in app.index.parsed_notes(app.resolver)[0].snippets[0].code


def test_unquoted_attribute_values_are_reported(project):
    # superfences reads only quoted values: such a block would run without its result on the page
    project.note("a.md", "# A\n\n```python exec=on session=s\nprint(1)\n```\n")
    app = App.load(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    lines = [str(p) for p in app.update_index().problems]
    assert 'a.md:3: error: code block attribute exec=on needs quotes (write exec="on")' in lines
    assert any("session=s needs quotes" in line for line in lines)


@pytest.mark.slow
def test_a_checked_function_may_return_a_named_tuple(project):
    """The note's process sends plain containers to the checker: a NamedTuple of the note's own
    class (as a MoE router returns) is compared by its first tensor, not a crash of the process."""
    text = textwrap.dedent(
        """\
        # 命名元组

        ```python exec="on" check="softmax"
        from typing import NamedTuple

        import torch


        class Out(NamedTuple):
            probs: torch.Tensor
            rows: int


        def softmax(x):
            return Out(torch.softmax(x.float(), dim=-1).to(x.dtype), x.shape[0])
        ```
        """
    )
    _, outcomes = _recorded(project, text)
    (outcome,) = outcomes
    assert outcome.result.ok, outcome.result.error or [c.message for c in outcome.result.check]
