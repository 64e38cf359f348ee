"""Bounded parsing and search: YAML bombs, huge notes and dense matches never take down `kn`.

Each hostile run happens in a child process with a memory cap and a timeout, so that a regression
fails the test instead of the machine: on the code before this fix the billion-laughs note ran for
minutes and died of MemoryError, and one 2 MB note made a search take ~20 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from kernelnotes import boundedyaml
from kernelnotes.index import MARK_CLOSE, MARK_OPEN, Index
from kernelnotes.settings import DEFAULT_DB

from .conftest import REPO

HOSTILE = REPO / "tests" / "hostile"
GOOD = "---\ntitle: 好笔记 {i}\ndate: 2025-01-0{i}\ntags: [扩散模型]\n---\n\n正文：连续扩散模型与采样 {i}。\n"


def kn(project, *args, timeout=60, memory_mb=1500):
    """Run `kn` in the project in a child process limited to `memory_mb` of address space."""
    limit = memory_mb * 2**20
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        from kernelnotes.cli import main
        sys.argv = ["kn", *{list(args)!r}]
        main()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "KERNELNOTES_LOAD_PLUGINS": "0", "HOME": str(project.root)},
    )


@pytest.fixture
def corpus(project):
    (project.root / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes:\n      max_note_mb: 1\n", encoding="utf-8"
    )
    for i in (1, 2):
        project.note(f"posts/good-{i}.md", GOOD.format(i=i))
    return project


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        ("sec-billion-laughs.md", 9, "aliases expand it to more than 10,000 values"),
        ("sec-alias-loop.md", 4, "an alias refers to the node that contains it"),
    ],
)
def test_yaml_bomb_is_one_line_and_the_good_notes_are_indexed(corpus, name, line, reason):
    shutil.copy(HOSTILE / name, corpus.notes / "posts" / name)
    result = kn(corpus, "index")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [l for l in result.stderr.splitlines() if name in l]
    assert (
        lines
        == [
            f"posts/{name}:{line}: error: invalid YAML front matter: {reason} (a YAML bomb?) "
            "(write the values out instead of YAML aliases)"
        ]
        if "expand" in reason
        else len(lines) == 1 and reason in lines[0]
    )
    assert "3 notes" in result.stderr  # the bomb note is indexed by its body, the good ones too
    index = Index(corpus.root / DEFAULT_DB)
    assert {h.path for h in index.search("扩散")} == {"posts/good-1.md", "posts/good-2.md"}
    shown = index.note(f"posts/{name}")
    assert shown["meta"] == {} and shown["title"] in ("十亿笑声", "自引用的锚点")  # title from the H1


def test_bounded_yaml_loads_ordinary_aliases_and_refuses_bombs():
    assert boundedyaml.load("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    assert boundedyaml.load("") is None
    with pytest.raises(yaml.YAMLError, match="more than 100 values"):
        boundedyaml.load(
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
            max_values=100,
        )
    with pytest.raises(yaml.YAMLError, match="nested too deeply"):
        boundedyaml.load("a: " + "[" * 2000 + "]" * 2000)


def test_huge_note_is_indexed_by_its_head_with_a_warning(corpus):
    paragraph = "扩散模型的正文，采样与噪声。\n\n"
    tail_word = "尾巴上的独特词语"
    body = paragraph * (3_000_000 // len(paragraph.encode())) + tail_word + "\n"
    corpus.note("posts/huge.md", "---\ntitle: 巨大的笔记\ndate: 2025-02-01\n---\n\n" + body)
    result = kn(corpus, "index")
    assert result.returncode == 0, result.stderr[-2000:]
    warning = [l for l in result.stderr.splitlines() if "huge.md" in l]
    assert warning == [
        "posts/huge.md: warning: note is 3.0 MB, more than max_note_mb (1 MB): only its first 1.0 MB are"
        " indexed (split the note, or raise max_note_mb in the kernelnotes section of mkdocs.yml)"
    ]
    index = Index(corpus.root / DEFAULT_DB)
    assert [h.path for h in index.search("巨大")] == ["posts/huge.md"]  # indexed
    assert index.search(tail_word) == []  # beyond the head


def test_search_over_a_dense_note_returns_a_bounded_fragment(corpus, tmp_path):
    """The fragment comes from a bounded window, not FTS5 snippet() over the whole note."""
    (corpus.root / "mkdocs.yml").write_text("site_name: t\ndocs_dir: notes\n", encoding="utf-8")
    corpus.note(
        "posts/dense.md", "---\ntitle: 稠密\ndate: 2025-02-02\n---\n\n" + ("扩散" * 5000 + "\n") * 120
    )
    assert kn(corpus, "index").returncode == 0
    result = kn(corpus, "search", "扩散", "--json", timeout=30)  # ~minutes with snippet() before
    hits = {h["path"]: h for h in json.loads(result.stdout)}
    assert set(hits) == {"posts/dense.md", "posts/good-1.md", "posts/good-2.md"}
    dense = hits["posts/dense.md"]
    assert dense["highlights"] == ["扩散扩散"] or "扩散" in dense["highlights"][0]
    assert len(dense["fragment"]) <= 200  # a window, not the note
    assert hits["posts/good-1.md"]["fragment"] == "正文：连续扩散模型与采样 1。"
    assert MARK_OPEN not in dense["fragment"] and MARK_CLOSE not in dense["fragment"]


def test_fragment_window_highlights_words_as_fts_matches_them():
    from kernelnotes.textsearch import fragment, highlighter

    marks = ("[", "]")
    text = "前言。" * 100 + "我们用 Sampling 得到样本，再做扩散：扩 散不算。" + "后记。" * 100
    cut = fragment(text, highlighter("扩散 samples"), 60, marks)
    assert cut is not None and cut.startswith("…") and cut.endswith("…")
    assert "[Sampling]" in cut and "[扩散]" in cut and "[扩 散]" in cut  # stem, case, punctuation between
    assert len(cut) <= 60 + 2 + 4 * 2  # the window, two ellipses and the marks
    assert fragment("没有匹配", highlighter("扩散"), 60, marks) is None
    assert highlighter("* ( -") is None  # nothing searchable: no pattern
