"""kernelnotes.serve_preview: which saves serve previews before the full rebuild. (That a preview
ends as the page a clean build makes, and when browsers reload again, is in
tests/test_serve_equals_build.py, under a real `mkdocs serve`.)"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from kernelnotes.serve_preview import MAX_NOTES, Built, Preview, front_matter, snapshot

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
    return [p.name for p in preview._changed_notes(built, sources)]


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
    assert [p.name for p in preview._changed_notes(built, sources)] == ["n0.md"]
