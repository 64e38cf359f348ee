"""The knowledge base itself: every note parses, is findable, and the set covers the kernels."""

from __future__ import annotations

import re

import pytest

from kernelnotes.index import Index
from kernelnotes.parse import IncludeResolver, parse_file

from .conftest import REPO

NOTES = REPO / "notes"
POSTS = sorted(p for p in (NOTES / "posts").iterdir() if p.suffix in (".md", ".ipynb"))
CATEGORIES = {"深度学习", "生成模型", "强化学习", "工程实践", "算法题", "多模态"}


def vocabulary() -> set[str]:
    """The tag vocabulary written down in the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("**Tag vocabulary**", 1)[1].split("Categories:", 1)[0]
    block = block.split(":", 1)[1]
    return {t.strip(" .\n") for t in block.replace("\n", " ").split(",") if t.strip(" .\n")}


@pytest.fixture(scope="module")
def parsed():
    resolver = IncludeResolver(REPO, REPO / "snippets")
    return {p.name: parse_file(p, f"posts/{p.name}", resolver) for p in POSTS}


@pytest.fixture(scope="module")
def index():
    idx = Index(None)
    report = idx.update(NOTES, IncludeResolver(REPO, REPO / "snippets"))
    assert [p for p in report.problems if p.severity == "error"] == []
    return idx


def test_enough_notes_with_one_notebook(parsed):
    assert len(parsed) >= 24
    assert sum(name.endswith(".ipynb") for name in parsed) >= 1


@pytest.mark.parametrize("path", POSTS, ids=lambda p: p.name)
def test_note_is_well_formed(parsed, path):
    result = parsed[path.name]
    assert result.problems == [], result.problems
    note = result.note
    assert note.date is not None and note.excerpt and note.categories
    assert set(note.categories) <= CATEGORIES
    assert 3 <= len(note.tags) <= 6 and set(note.tags) <= vocabulary(), set(note.tags) - vocabulary()
    assert any(s.executable for s in note.snippets)
    if path.suffix == ".md":
        assert "<!-- more -->" in path.read_text(encoding="utf-8")


def test_dates_spread_over_the_feed(parsed):
    months = {(r.note.date.year, r.note.date.month) for r in parsed.values()}
    assert len(months) >= 12


def test_checks_cover_every_kernel(parsed):
    from kernelnotes.plugins.manager import get_plugin_manager
    from kernelnotes.registry import load_kernels

    checked = {
        name: {
            str(s.attrs["check"]).split(":")[0]
            for s in r.note.snippets
            if s.executable and "check" in s.attrs
        }
        for name, r in parsed.items()
    }
    assert sum(bool(v) for v in checked.values()) >= 15, {k: v for k, v in checked.items() if v}
    covered = set().union(*checked.values())
    assert covered >= set(load_kernels(get_plugin_manager())), "kernels no note checks against"


@pytest.mark.parametrize("path", POSTS, ids=lambda p: p.name)
def test_kn_search_finds_the_note_by_its_terms(index, parsed, path):
    note = parsed[path.name].note
    # the title (Chinese and English words together) puts the note first
    assert index.search(note.title, limit=3)[0].path == note.path
    # every tag, Chinese or English, finds it among the notes carrying that topic
    for tag in note.tags:
        assert note.path in [h.path for h in index.search(tag, limit=50)], tag
    # each Chinese word of two characters from the title finds it too
    for word in re.findall(r"[\u4e00-\u9fff]{2}", note.title)[:3]:
        assert note.path in [h.path for h in index.search(word, limit=50)], word
