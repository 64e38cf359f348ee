"""Hostile text never reaches the terminal raw: every `kn` output shows control characters escaped.

Titles, tags, descriptions and file names with ANSI/OSC sequences (clear screen, fake lines, OSC 8
hyperlinks), C1 controls and bidi overrides, from the notes of tests/hostile/sec-*.md.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from click.testing import CliRunner

from kernelnotes.cli import build_cli
from kernelnotes.safetext import terminal_text

from .conftest import REPO

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # newline aside
ESC_NAME = "sec-\x1b[2J\x1b]8;;https:evil.example\x07名字\u202e.md"


@pytest.fixture
def kn(project, monkeypatch):
    (project.root / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes\n", encoding="utf-8"
    )
    for path in (REPO / "tests" / "hostile").glob("sec-*-title.md"):
        shutil.copy(path, project.notes / path.name)
    # a file name with escapes, broken YAML (so it is named in a problem line) and a code block
    # whose language is an escape sequence
    (project.notes / ESC_NAME).write_text(
        "---\ntitle: [unclosed\n---\n# 终端文件\n\n```\x1b[31mpython\nprint(1)\n```\n", encoding="utf-8"
    )
    monkeypatch.chdir(project.root)
    runner = CliRunner()
    cli = build_cli()

    def run(*args):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result.stdout + result.stderr

    return run


def assert_safe(output: str) -> None:
    lines = output.split("\n")
    assert not RAW.search(output), [l for l in lines if RAW.search(l)][:3]
    assert not any(l.lstrip().startswith("indexed 0 files") for l in lines), "a title faked a line"


def test_index_problem_lines_show_escapes(kn):
    out = kn("index")
    assert_safe(out)
    problem = [l for l in out.splitlines() if "invalid YAML" in l]
    assert len(problem) == 1 and problem[0].startswith(terminal_text(ESC_NAME))
    assert "\\x1b[2J" in problem[0] and "\\u202e" in problem[0]


def test_search_show_and_tags_show_escapes(kn):
    kn("index")
    out = kn("search", "终端")
    assert_safe(out)
    assert "\\x1b[2J\\x1b[H终端\\x1b]8;;https://evil.example/\\x07链接" in out
    assert "\\r" in out  # the carriage return is shown, not obeyed
    generic = kn("search", "泛型")
    assert_safe(generic)
    assert "泛型容器" in generic and "\\x02" not in generic  # highlight marks are styling, not text
    for key in ("sec-ansi-title.md", ESC_NAME):
        out = kn("show", key)
        assert_safe(out)
        assert "\\x1b" in out
    tags = kn("tags")
    assert_safe(tags)
    assert "\\x1b[31m红\\x1b[0m" in tags


def test_json_output_escapes_every_control_character(kn):
    kn("index")
    for args in (("search", "终端", "--json"), ("show", "sec-ansi-title.md", "--json"), ("tags", "--json")):
        out = kn(*args)
        assert_safe(out)
        json.loads(out)  # still JSON, with the text intact once decoded
    described = json.loads(kn("show", "sec-ansi-title.md", "--json"))["description"]
    assert described == "描述\x1b[31m里\x1b[0m有转义\x9b序列"
