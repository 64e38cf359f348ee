"""kernelnotes.serve_preview: which saves serve previews before the full rebuild. (That a preview
ends as the page a clean build makes, and when browsers reload again, is in
tests/test_serve_equals_build.py, under a real `mkdocs serve`.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kernelnotes.serve_preview import MAX_NOTES, Built, Preview, front_matter, snapshot

from . import blogsite

POST = "---\ntitle: 标题\ndate: 2025-01-01\n---\n\n# 标题\n\n摘要。\n\n<!-- more -->\n\n正文。\n"


def project(tmp_path: Path, notes: int = 5) -> tuple[Path, list[Path]]:
    docs = tmp_path / "notes"
    (docs / "posts").mkdir(parents=True)
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "a.py").write_text("x = 1\n", "utf-8")
    paths = []
    for i in range(notes):
        path = docs / "posts" / f"n{i}.md"
        path.write_text(POST.replace("标题", f"标题{i}"), "utf-8")
        paths.append(path)
    (docs / "about.md").write_text("About: me\n\n# 关于\n\n正文。\n", "utf-8")
    return docs, paths


def files_of(docs: Path) -> SimpleNamespace:
    found = [
        SimpleNamespace(abs_src_path=str(p), page=SimpleNamespace(name=p.name), src_uri=p.name)
        for p in sorted(docs.rglob("*.md"))
    ]
    return SimpleNamespace(documentation_pages=lambda **_: found)


def started(tmp_path: Path, docs: Path) -> tuple[Preview, Built]:
    preview = Preview(lambda notes, config: lambda ok: None)
    preview.begin([str(docs), str(tmp_path / "snippets")], str(docs))
    return preview, Built(config=None, files=files_of(docs), nav=None, env=None)


def changed(preview: Preview, built: Built) -> list[str] | None:
    sources = snapshot(preview.roots)
    return [p.name for p in preview._changed_notes(built, preview._changed_paths(sources))]


def touch(path: Path, text: str) -> None:
    path.write_text(text, "utf-8")
    st = path.stat()  # a later mtime even on a coarse clock
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_front_matter_is_the_yaml_block_else_the_first_paragraph(tmp_path):
    post = tmp_path / "a.md"
    post.write_text(POST, "utf-8")
    assert front_matter(str(post)) == "---\ntitle: 标题\ndate: 2025-01-01\n---\n"
    plain = tmp_path / "b.md"
    plain.write_text("Title: 多行元数据\nTags: a\n\n# 正文\n", "utf-8")
    assert front_matter(str(plain)) == "Title: 多行元数据\nTags: a\n\n"
    assert front_matter(str(tmp_path / "missing.md")) is None


def test_a_body_edit_of_notes_is_previewed(tmp_path):
    docs, paths = project(tmp_path)
    preview, built = started(tmp_path, docs)
    touch(paths[1], paths[1].read_text("utf-8").replace("正文。", "正文，改了。"))
    touch(paths[2], paths[2].read_text("utf-8").replace("摘要。", "新摘要。"))
    assert sorted(changed(preview, built)) == ["n1.md", "n2.md"]


def test_front_matter_other_files_new_and_deleted_notes_are_left_to_the_full_build(tmp_path):
    docs, paths = project(tmp_path)
    preview, built = started(tmp_path, docs)
    assert changed(preview, built) == []  # nothing changed: nothing to preview

    touch(paths[0], paths[0].read_text("utf-8").replace("date: 2025-01-01", "date: 2025-01-02"))
    assert changed(preview, built) == []  # a date moves the note in every listing
    preview.begin([], "")  # only the first build's call counts
    preview._note_sources(snapshot(preview.roots))  # as after the next build

    touch(tmp_path / "snippets" / "a.py", "x = 2\n")
    touch(paths[1], paths[1].read_text("utf-8") + "\n更多。\n")
    assert changed(preview, built) == []  # an include may change any note
    preview._note_sources(snapshot(preview.roots))

    (docs / "posts" / "new.md").write_text(POST, "utf-8")
    assert changed(preview, built) == []  # a new note: navigation and listings
    (docs / "posts" / "new.md").unlink()
    paths[3].unlink()
    assert changed(preview, built) == []  # a deleted one

    preview._note_sources(snapshot(preview.roots))
    touch(docs / "about.md", "About: you\n\n# 关于\n\n正文。\n")
    assert changed(preview, built) == []  # MultiMarkdown metadata is front matter too
    preview._note_sources(snapshot(preview.roots))
    touch(docs / "about.md", "About: you\n\n# 关于\n\n正文改了。\n")
    assert changed(preview, built) == ["about.md"]


def test_many_notes_at_once_are_left_to_the_full_build(tmp_path):
    docs, paths = project(tmp_path, notes=MAX_NOTES + 1)
    preview, built = started(tmp_path, docs)
    for path in paths:
        touch(path, path.read_text("utf-8") + "\n更多。\n")
    assert changed(preview, built) == []


def test_hidden_files_and_bytecode_are_not_sources(tmp_path):
    docs, paths = project(tmp_path)
    preview, built = started(tmp_path, docs)
    (tmp_path / "snippets" / "__pycache__").mkdir()
    (tmp_path / "snippets" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (docs / "posts" / ".n1.md.swp").write_bytes(b"\0")
    touch(paths[1], paths[1].read_text("utf-8") + "\n更多。\n")
    assert changed(preview, built) == ["n1.md"]


def test_a_folder_watched_since_the_last_build_is_not_news(tmp_path):
    docs, paths = project(tmp_path)
    preview, built = started(tmp_path, docs)
    theme = tmp_path / "theme"
    theme.mkdir()
    for i in range(MAX_NOTES + 1):
        (theme / f"t{i}.html").write_text("<p></p>", "utf-8")
    # serve now also watches the theme (a plugin's on_serve, or --watch-theme)
    preview.server = SimpleNamespace(_watched_paths={str(p): 1 for p in (docs, tmp_path / "snippets", theme)})
    touch(paths[0], paths[0].read_text("utf-8") + "\n更多。\n")
    sources = snapshot([*preview.roots, str(theme)])
    assert [p.name for p in preview._changed_notes(built, preview._changed_paths(sources))] == ["n0.md"]


# In-process builds of the small blog (tests/blogsite.py): one as serve's previous build, one with an
# edit built pages first, one in mkdocs' order, one with half the pages shuffled ahead.
FIRST_PAGES = r"""
import json, os, random, sys
from mkdocs.commands.build import build
from mkdocs.config import load_config
from kernelnotes import serve_preview

os.chdir(sys.argv[1])


def run(site, first=None):
    config = load_config("mkdocs.yml", site_dir=site)
    config.plugins.on_startup(command="build", dirty=False)
    try:
        if first is None:
            build(config)
        else:
            with first.installed():
                build(config)
        return serve_preview.listings(config)
    finally:
        config.plugins.on_shutdown()


listed = run("site-before")
alpha = os.path.abspath("notes/posts/alpha.md")
with open(alpha, encoding="utf-8") as f:
    text = f.read()
with open(alpha, "w", encoding="utf-8") as f:
    f.write(text.replace("title: 笔记 alpha", "title: 笔记 alpha 改名"))
shown = []
first = serve_preview.FirstPages({alpha}, listed, lambda: shown.append(len(first.first)))
run("site-first", first)
chosen = [page.file.src_uri for page in first.first.values()]
run("site-plain")


def anyhow(config, doc_files, changed, listed):
    return random.Random(7).sample([f.page for f in doc_files], len(doc_files) // 2)


serve_preview.first_pages = anyhow
run("site-shuffled", serve_preview.FirstPages({alpha}, {}, lambda: shown.append(0)))
print(json.dumps({"listed": listed, "chosen": chosen, "shown": shown}, ensure_ascii=False))
"""


@pytest.mark.slow
def test_a_build_writes_the_pages_an_edit_changes_first_and_ends_as_in_mkdocs_order(tmp_path):
    blogsite.write_project(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", FIRST_PAGES, str(tmp_path)], capture_output=True, text=True, env=blogsite.ENV
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    listed, chosen = found["listed"], found["chosen"]
    # the note first, then its neighbours, the listings that show it and the tags page
    assert chosen[0] == "posts/alpha.md" and "posts/beta.md" in chosen and "tags.md" in chosen
    showing = {page for page, notes in listed.items() if "posts/alpha.md" in notes}
    assert showing and showing <= set(chosen)
    # and nothing the edit cannot change: listings without the note, notes not next to it
    assert not set(chosen) & ({page for page in listed if page not in showing} | {"posts/fenced.md"})
    assert found["shown"] == [len(chosen), 0]  # once, when they were written
    # what ends on disk is what mkdocs' own order makes, search index included, whatever went first
    plain = blogsite.pages(tmp_path / "site-plain")
    assert "笔记 alpha 改名" in plain["alpha/index.html"]
    for site in ("site-first", "site-shuffled"):
        assert blogsite.pages(tmp_path / site) == plain, site
