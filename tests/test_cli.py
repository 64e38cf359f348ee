from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from kernelnotes.cli import build_cli
from kernelnotes.parse import parse_file


@pytest.fixture
def kn(project, monkeypatch):
    """Run `kn` in the project folder (settings from its mkdocs.yml) and return the result."""
    (project.root / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - search\n  - kernelnotes:\n      db: .cache/kn.db\n"
        "markdown_extensions:\n  - pymdownx.emoji:\n      emoji_index: !!python/name:material.extensions.emoji.twemoji\n",
        encoding="utf-8",
    )
    project.note(
        "posts/sde.md",
        "---\ntitle: 扩散 SDE\ndate: 2025-05-01\ntags: [扩散模型, SDE]\ncategories: [生成模型]\n---\n"
        '正文：连续扩散模型与梯度。\n\n```python exec="on" session="a"\nprint(1)\n```\n',
    )
    project.note(
        "posts/ckpt.md", "---\ntitle: 梯度检查点\ndate: 2025-01-01\ntags: [显存]\n---\n重计算换显存，梯度。\n"
    )
    monkeypatch.chdir(project.root)
    runner = CliRunner()
    cli = build_cli()

    def run(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return run


def test_index_reads_db_path_from_mkdocs_yml(kn, project):
    r = kn("index")
    assert r.exit_code == 0, r.output
    assert (project.root / ".cache" / "kn.db").exists()
    assert "2 added" in r.output


def test_search_found_and_not_found_exit_codes(kn):
    kn("index")
    r = kn("search", "扩散")
    assert (
        r.exit_code == 0 and "扩散 SDE" in r.output and "posts/sde.md" in r.output and "#扩散模型" in r.output
    )
    r = kn("search", "量子")
    assert r.exit_code == 1 and "no notes match" in r.output


def test_search_builds_the_index_when_missing(kn, project):
    assert kn("search", "梯度").exit_code == 0
    assert (project.root / ".cache" / "kn.db").exists()


def test_search_json_shape(kn):
    r = kn("search", "梯度", "--tag", "显存", "--json")
    assert r.exit_code == 0
    (hit,) = json.loads(r.stdout)
    assert set(hit) >= {
        "title",
        "path",
        "slug",
        "date",
        "tags",
        "categories",
        "fragment",
        "highlights",
        "score",
    }
    assert hit["path"] == "posts/ckpt.md" and hit["tags"] == ["显存"] and hit["highlights"] == ["梯度"]
    assert "\x02" not in hit["fragment"]
    r = kn("search", "梯度", "--tag", "nope", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout) == []


def test_search_with_fts_syntax_is_not_an_error(kn):
    assert kn("search", '"扩散*').exit_code == 0
    assert kn("search", "AND").exit_code == 1


def test_usage_errors_exit_2(kn, tmp_path):
    assert kn("search").exit_code == 2
    assert kn("search", "x", "--limit", "0").exit_code == 2
    assert kn("--config", str(tmp_path / "missing.yml"), "tags").exit_code == 2
    r = kn("--notes", str(tmp_path / "nowhere"), "--db", str(tmp_path / "x.db"), "index")
    assert r.exit_code == 2 and "notes folder not found" in r.output


def test_run_on_cuda_without_a_gpu_is_a_usage_error(kn, monkeypatch):
    monkeypatch.setattr("kernelnotes.cache.cuda_present", lambda: False)
    r = kn("run", "--device", "cuda")
    assert r.exit_code == 2 and "no CUDA device" in r.output


def test_notes_and_db_options_override_config(kn, project, tmp_path):
    other = tmp_path / "other-notes"
    other.mkdir()
    (other / "x.md").write_text("# 采样笔记\n\n采样\n", encoding="utf-8")
    db = tmp_path / "o.db"
    assert kn("--notes", str(other), "--db", str(db), "index").exit_code == 0
    r = kn("--notes", str(other), "--db", str(db), "search", "采样", "--json")
    assert [h["path"] for h in json.loads(r.stdout)] == ["x.md"]


def test_tags_command(kn):
    r = kn("tags", "--json")
    assert r.exit_code == 0
    assert {"tag": "扩散模型", "notes": 1} in json.loads(r.stdout)
    assert "SDE" in kn("tags").output


def test_show_by_slug_and_path(kn):
    kn("index")
    r = kn("show", "扩散-sde", "--json")  # the site's slug of a title without `slug:`
    data = json.loads(r.stdout)
    assert data["title"] == "扩散 SDE" and data["snippets"][0]["attrs"] == {"exec": "on", "session": "a"}
    assert "body" not in data
    r = kn("show", "notes/posts/ckpt.md")
    assert r.exit_code == 0 and "梯度检查点" in r.output
    assert kn("show", "nope").exit_code == 1


def test_index_reports_bad_notes_one_line_each(kn, project):
    project.note("posts/bad.md", "---\ndate: 2024/01/31\n---\n# x\n")
    r = kn("index")
    assert r.exit_code == 0
    (line,) = [l for l in r.output.splitlines() if "bad.md" in l]
    assert line.startswith("posts/bad.md") and "is not a date" in line and "Traceback" not in r.output


def test_new_writes_a_parseable_skeleton(kn, project):
    r = kn("new", "扩散模型入门", "--tags", "扩散模型, 采样", "--category", "生成模型")
    assert r.exit_code == 0
    path = project.notes / "posts" / "kuo-san-mo-xing-ru-men.md"
    assert r.output.strip() == str(path)
    parsed = parse_file(path, "posts/x.md", project.resolver())
    n = parsed.note
    assert parsed.problems == []
    assert (n.title, n.tags, n.categories, n.slug) == (
        "扩散模型入门",
        ["扩散模型", "采样"],
        ["生成模型"],
        "kuo-san-mo-xing-ru-men",
    )
    assert n.date.date() == dt.date.today() and n.excerpt and n.snippets[0].executable
    assert kn("new", "扩散模型入门").exit_code == 2  # exists already


def test_every_command_has_help_text():
    cli = build_cli()
    for name, command in cli.commands.items():
        assert command.help and len(command.help) > 10, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.name}"


def test_plugins_command_lists_builtins_and_their_hooks(kn):
    r = kn("plugins")
    assert r.exit_code == 0
    assert "kernelnotes.plugins.python_runner" in r.output and "choose_runner" in r.output
    assert "kernelnotes.plugins.kernel_library" in r.output and "register_kernels" in r.output
