"""kernelnotes.serve_preview: which saves serve previews before the full rebuild. (That a preview
ends as the page a clean build makes, and when browsers reload again, is in
tests/test_serve_equals_build.py, under a real `mkdocs serve`.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from kernelnotes import site_writes
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
    preview = Preview(lambda notes, config: lambda ok: None, lambda config: None)
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


def test_browsers_see_the_pages_first_only_when_one_changed_and_a_newer_version_each_time(monkeypatch):
    published: list[str] = []
    server = SimpleNamespace(_wanted_epoch=100, _visible_epoch=50, _epoch_cond=threading.Condition())
    preview = Preview(lambda notes, config: lambda ok: None, published.append)
    preview.server = server
    monkeypatch.setattr(site_writes.STATE, "changed", ["/site/sitemap.xml"])
    preview._show_first("config")  # no page changed: mkdocs shows the build when it ends
    assert published == ["config"] and server._visible_epoch == 50 and not preview.early
    site_writes.STATE.changed = ["/site/a/index.html"]
    preview._show_first("config")  # the figures first, then the pages
    assert server._visible_epoch == server._wanted_epoch == 100 and preview.early
    site_writes.STATE.changed = ["/site/b/index.html"]
    preview._show_first("config")  # shown once already (a preview): a newer version, shown now
    assert server._visible_epoch == server._wanted_epoch > 100 and published == ["config"] * 3


# In-process builds of the small blog (tests/blogsite.py), each the previous build of the next: the
# site as serve last built it; a title edit built with the pages it changes first; a deleted note
# the same way; each also in mkdocs' order, and once with a random half of all pages first.
FIRST_PAGES = r"""
import json, os, random, sys
from mkdocs.commands.build import build
from mkdocs.config import load_config
from mkdocs.structure.files import InclusionLevel
from kernelnotes import serve_preview

os.chdir(sys.argv[1])
shown = []


def run(site, changed=(), before=None):
    config = load_config("mkdocs.yml", site_dir=site)
    config.plugins.on_startup(command="build", dirty=False)
    first = serve_preview.FirstPages(changed, before or {}, lambda config: shown.append(site))
    seen = {}

    def grab(env, *, config, files):  # the build's files, to lay out what it built
        seen["files"] = files
        return env

    config.plugins.events["env"].append(grab)
    try:
        with first.installed():
            build(config)
        pages = seen["files"].documentation_pages(inclusion=InclusionLevel.is_in_serve)
        return [page.file.src_uri for page in first.first.values()], serve_preview.layout(config, pages)
    finally:
        config.plugins.on_shutdown()


def edit(path, old, new):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new))


found = {}
_, before = run("site-before")
alpha = os.path.abspath("notes/posts/alpha.md")
edit(alpha, "title: 笔记 alpha", "title: 笔记 alpha 改名")
found["title"], after_title = run("site-title", {alpha}, before)
run("site-title-plain")
gamma = os.path.abspath("notes/posts/gamma.md")
os.unlink(gamma)
found["deleted"], _ = run("site-deleted", {gamma}, after_title)
run("site-deleted-plain")
serve_preview.first_pages = lambda config, doc_files, changed, before: random.Random(7).sample(
    [f.page for f in doc_files], len(doc_files) // 2
)
run("site-shuffled", {alpha}, {})
print(json.dumps({"before": before, "after_title": after_title, "shown": shown, **found}, ensure_ascii=False))
"""


@pytest.mark.slow
def test_a_build_writes_the_pages_an_edit_changes_first_and_ends_as_in_mkdocs_order(tmp_path):
    blogsite.write_project(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", FIRST_PAGES, str(tmp_path)], capture_output=True, text=True, env=blogsite.ENV
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    before, title = found["before"], found["title"]

    def showing(note: str, layout: dict) -> set[str]:
        return {page for page, shows in layout.items() if note in shows}

    # a title: the note, the pages that show it (its neighbours, the listings) and the tags page
    assert title[0] == "posts/alpha.md" and "tags.md" in title
    assert showing("posts/alpha.md", before) <= set(title) and "posts/beta.md" in title
    assert not set(title) & (set(before) - showing("posts/alpha.md", before) - {"posts/alpha.md", "tags.md"})
    # a deleted note: the pages that showed it, as neighbour or in a listing, now show others
    deleted = found["deleted"]
    assert showing("posts/gamma.md", found["after_title"]) - {"posts/gamma.md"} <= set(deleted) and deleted
    assert found["shown"] == ["site-title", "site-deleted", "site-shuffled"]  # once each, when written
    # what ends on disk is what mkdocs' own order makes, search index included, whatever went first
    for site, plain in (
        ("site-title", "site-title-plain"),
        ("site-shuffled", "site-deleted-plain"),  # built after the deletion
        ("site-deleted", "site-deleted-plain"),
    ):
        assert blogsite.pages(tmp_path / site) == blogsite.pages(tmp_path / plain), site
    assert "笔记 alpha 改名" in blogsite.pages(tmp_path / "site-title-plain")["alpha/index.html"]
