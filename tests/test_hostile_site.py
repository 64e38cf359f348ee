"""Hostile metadata on the site: a real `mkdocs build` of the shipped mkdocs.yml with the notes of
tests/hostile/sec-*.md, and every output file parsed (HTML, RSS, JSON feed, search index).

Titles like `Vec<T> 与 Option<T> & 模板` and `<script>alert(1)</script>`, a description that breaks out
of an attribute and ANSI/OSC sequences must come out as text, escaped exactly once, everywhere.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from kernelnotes.slug import site_slug

from .conftest import REPO

HOSTILE = REPO / "tests" / "hostile"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class Page(HTMLParser):
    """Collects the text of a page and every element a hostile title could have injected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.injected: list[str] = []
        self.text: list[str] = []
        self.title: list[str] = []
        self._open: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        handlers = [k for k, _ in attrs if k.startswith("on")]
        scripted = [
            v
            for k, v in attrs
            if k == "href" and (v or "").startswith("javascript:") and v != "javascript:void(0)"
        ]
        if tag in ("t", "img", "b", "em") or handlers or scripted or self._in_title:
            self.injected.append(f"<{tag} {attrs}>")
        self._in_title = self._in_title or tag == "title"
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] == "script" and "alert(" in data:
            self.injected.append(f"<script>{data}")
        (self.title if self._in_title else self.text).append(data)


def parse_html(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


METADATA_NOTES = ("sec-generic-title.md", "sec-script-title.md", "sec-ansi-title.md", "sec-markdown-title.md")


def expected_meta() -> dict[str, dict]:
    """Front matter of the hostile-metadata notes as YAML reads it, control characters removed."""
    out = {}
    for name in METADATA_NOTES:
        meta = yaml.safe_load((HOSTILE / name).read_text(encoding="utf-8").split("---\n")[1])
        out[name] = {k: CONTROL.sub("", v) if isinstance(v, str) else v for k, v in meta.items()}
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    posts = root / "notes" / "posts"
    posts.mkdir(parents=True)
    for name in ("index.md", "tags.md"):
        shutil.copy(REPO / "notes" / name, root / "notes" / name)
    shutil.copytree(REPO / "overrides", root / "overrides")
    (root / "snippets").mkdir()
    for path in HOSTILE.glob("sec-*.md"):
        shutil.copy(path, posts / path.name)
    shutil.copy(HOSTILE / "sec-billion-laughs.md", root / "notes" / "sec-bomb-page.md")  # not a post
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")  # the shipped configuration, own nav
    config = config[: config.index("\nnav:")] + "\nnav:\n  - 最新笔记: index.md\n  - 标签: tags.md\n"
    # the size limit as the site applies it: 4 KB here, so that a 6 KB note stands for a huge one
    config = config.replace("  - kernelnotes:\n", "  - kernelnotes:\n      max_note_mb: 0.004\n", 1)
    (posts / "long.md").write_text(
        "---\ntitle: 长笔记\ndate: 2025-03-07\ncategories: [工程实践]\n---\n\n" + "很长的一段。\n\n" * 300,
        encoding="utf-8",
    )
    # broken front matter: the index and the site's own check both find it, and it is said once
    (posts / "broken-yaml.md").write_text("---\ntitle: 坏\ndate: [2025-03-07\nx: : y\n---\n\n正文\n", "utf-8")
    (posts / "impossible-date.md").write_text("---\ntitle: 坏日期\ndate: 2025-13-45\n---\n\n正文\n", "utf-8")
    (root / "mkdocs.yml").write_text(config, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-f", str(root / "mkdocs.yml"), "-d", str(root / "site")],
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "KERNELNOTES_LOAD_PLUGINS": "0"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not CONTROL.search(result.stderr), "the build log carries raw control characters"
    (root / "build.log").write_text(result.stderr, encoding="utf-8")
    return root / "site"


def test_a_note_over_max_note_mb_is_indexed_by_its_head_with_one_warning(site):
    log = (site.parent / "build.log").read_text(encoding="utf-8")
    lines = [l for l in log.splitlines() if "posts/long.md" in l]
    assert len(lines) == 1 and "more than max_note_mb (0.004 MB): only its first" in lines[0], lines
    page = next(site.glob("*笔记/index.html")).read_text(encoding="utf-8")  # 长笔记: the site's Unicode slug
    assert page.count("很长的一段。") == 300  # the page itself is published whole


def test_broken_front_matter_is_one_line_with_its_line_and_what_to_do(site):
    log = (site.parent / "build.log").read_text(encoding="utf-8")
    for note, start in (
        ("posts/broken-yaml.md", "posts/broken-yaml.md:4: error: invalid YAML front matter: "),
        ("posts/impossible-date.md", "posts/impossible-date.md:3: error: impossible date: "),
    ):
        lines = [l.split(" -  ", 1)[-1] for l in log.splitlines() if note in l]
        assert len(lines) == 1 and lines[0].startswith(start), (note, lines)
        assert lines[0].endswith("; the site leaves this note out")


def test_yaml_bombs_leave_their_page_out_with_one_line_each(site):
    log = (site.parent / "build.log").read_text(encoding="utf-8")
    for page, line in (
        ("sec-bomb-page.md", 9),
        ("posts/sec-billion-laughs.md", 9),
        ("posts/sec-alias-loop.md", 4),
    ):
        lines = [l for l in log.splitlines() if page in l]  # the index's line about it is not repeated
        assert len(lines) == 1 and f"{page}:{line}: error: front matter: " in lines[0], (page, log[-2000:])
        assert lines[0].endswith("the site leaves this page out")
    assert not (site / "sec-bomb-page").exists()
    assert (
        site / site_slug("Vec<T> 与 Option<T> & 模板") / "index.html"
    ).exists()  # the others are published


def test_every_html_page_shows_hostile_metadata_as_text(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 8
    for path in pages:
        raw = path.read_text(encoding="utf-8")
        page = parse_html(raw)
        assert not page.injected, (path, page.injected[:3])
        assert not CONTROL.search(raw), path
        assert "&amp;amp;" not in raw and "&amp;lt;" not in raw, f"escaped twice in {path}"


def test_post_pages_have_the_exact_title_and_description(site):
    metas = expected_meta()
    seen = 0
    for path in site.rglob("*.html"):
        raw = path.read_text(encoding="utf-8")
        page = parse_html(raw)
        title = "".join(page.title).removesuffix(" - KernelNotes")
        for meta in metas.values():
            if meta.get("title") == title:
                seen += 1
                assert meta["title"] in "".join(page.text)  # the heading, as text
                content = re.search(r'<meta name="description" content="([^"]*)"', raw)
                if "description" in meta:
                    assert content and html.unescape(content.group(1)) == meta["description"]
    assert seen == len(METADATA_NOTES)


def test_listings_and_tags_page_show_titles_as_text(site):
    metas = expected_meta()
    for listing in (
        "index.html",
        "tags/index.html",
        "archive/2025/03/index.html",
        "category/工程实践/index.html",
    ):
        text = " ".join("".join(parse_html((site / listing).read_text(encoding="utf-8")).text).split())
        for name in ("sec-generic-title.md", "sec-script-title.md", "sec-markdown-title.md"):
            assert metas[name]["title"] in text, (listing, name)
    # prev/next: the note of 2025-03-01 links to the next one, titled <script>alert(1)</script>
    neighbour = (site / site_slug("Vec<T> 与 Option<T> & 模板") / "index.html").read_text(encoding="utf-8")
    footer = neighbour[neighbour.index('class="md-footer__link md-footer__link--next"') :]
    assert "<script>alert(1)</script>" in " ".join("".join(parse_html(footer).text).split())
    tags_page = "".join(parse_html((site / "tags/index.html").read_text(encoding="utf-8")).text)
    assert "<b>粗</b>" in tags_page  # a tag is a name, shown as written


def test_feeds_are_valid_and_carry_titles_once_escaped(site):
    metas = expected_meta()
    titles = {m["title"] for m in metas.values()} | {"模板 & 特化", "长笔记"}  # 模板 & 特化: from the H1
    for name in ("feed_rss_created.xml", "feed_rss_updated.xml"):
        items = ET.parse(site / name).getroot().findall("./channel/item")
        assert {i.findtext("title") for i in items} == titles
        for item in items:
            # <description> is HTML (as readers take it): the text inside must be the description
            description = parse_html(item.findtext("description") or "")
            assert not description.injected
            meta = next((m for m in metas.values() if m.get("title") == item.findtext("title")), {})
            if "description" in meta:
                assert "".join(description.text) == meta["description"]
        categories = {c.text for i in items for c in i.findall("category")}
        assert {"模板 & <特化>", "<b>粗</b>", "Python", "[31m红[0m"} <= categories
    feed = json.loads((site / "feed_json_created.json").read_text(encoding="utf-8"))
    assert {i["title"] for i in feed["items"]} == titles
    for item in feed["items"]:
        assert not parse_html(item["content_html"]).injected
    assert {"模板 & <特化>", "<b>粗</b>"} <= {t for i in feed["items"] for t in i["tags"]}


def test_search_index_titles_are_html_escaped_once(site):
    docs = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))["docs"]
    titles = set()
    for doc in docs:
        page = parse_html(doc["title"] + " " + doc["text"])  # material's search shows both as HTML
        assert not page.injected, (doc["location"], page.injected[:2])
        titles.add(re.sub("[ \u200b]", "", html.unescape(doc["title"])))
    for meta in expected_meta().values():
        assert meta["title"].replace(" ", "") in titles
