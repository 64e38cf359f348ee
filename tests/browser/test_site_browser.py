"""The published site in headless Chromium: feed, pagination, math, code, tags, Chinese search, RSS."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kernelnotes.blog import read_front_matter

pytestmark = pytest.mark.browser

PER_PAGE = 10  # pagination_per_page in mkdocs.yml
MATH_NOTE = "online-softmax-flashattention"  # a note with inline and display math and Python code


def _published_notes(site_dir: Path) -> list[tuple[dt.date, str]]:
    """(created, title) of every non-draft Markdown note, newest first: what the feed should list.

    Read from the copy the site was built from: other notes may be added to the repository meanwhile.
    """
    notes = []
    for path in (site_dir.parent / "notes" / "posts").glob("*.md"):
        meta, _, _ = read_front_matter(path.read_text(encoding="utf-8"))
        if not meta or meta.get("draft") is True:
            continue
        date = meta.get("date")
        created = date.get("created") if isinstance(date, dict) else date
        if isinstance(created, dt.date):
            created = created.date() if isinstance(created, dt.datetime) else created
            notes.append((created, str(meta.get("title", path.stem))))
    return sorted(notes, key=lambda n: n[0], reverse=True)


def _excerpts(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "article.md-post--excerpt",
        """els => els.map(e => ({
            title: (e.querySelector('.md-post__content h2') || {}).textContent || '',
            date: e.querySelector('time').getAttribute('datetime'),
            text: e.querySelector('.md-post__content').innerText,
            more: (e.querySelector('.md-post__action a') || {}).textContent || '',
            tags: e.querySelectorAll('.md-tag').length,
        }))""",
    )


def test_home_lists_newest_notes_first_with_excerpts_and_pages(
    page: Any, base_url: str, site_dir: Path, artifacts: Path
):
    page.goto(base_url)
    page.wait_for_selector("article.md-post--excerpt")
    page.screenshot(path=str(artifacts / "home.png"), full_page=True)
    first = _excerpts(page)
    expected = _published_notes(site_dir)
    assert len(first) == min(PER_PAGE, len(expected))
    dates = [e["date"] for e in first]
    assert dates == sorted(dates, reverse=True)
    assert [e["date"][:10] for e in first] == [d.isoformat() for d, _ in expected[:PER_PAGE]]
    for excerpt in first:
        assert len(excerpt["text"]) > 80, excerpt  # a real excerpt, not only the title
        assert excerpt["more"].strip() == "继续阅读"
        assert excerpt["tags"] > 0
    if len(expected) > PER_PAGE:
        page.click(".md-pagination a[href*='page/2']")
        page.wait_for_url(re.compile(r"page/2/?$"))
        second = _excerpts(page)
        assert [e["date"][:10] for e in second] == [
            d.isoformat() for d, _ in expected[PER_PAGE : 2 * PER_PAGE]
        ]
        assert second[0]["date"] <= first[-1]["date"]


def test_note_renders_math_code_and_tags(page: Any, base_url: str, artifacts: Path):
    page.goto(base_url + MATH_NOTE + "/")
    page.wait_for_selector(".arithmatex .katex")
    # material's copy button, added to each code block by its JavaScript (shown on hover)
    page.wait_for_selector(".highlight button.md-code__button[data-md-type='copy']", state="attached")
    page.screenshot(path=str(artifacts / "note.png"))
    unrendered = page.eval_on_selector_all(
        ".arithmatex", "els => els.filter(e => !e.querySelector('.katex')).length"
    )
    assert unrendered == 0
    assert page.locator(".katex-display").count() > 0  # display math too
    content = page.inner_text("article.md-content__inner")
    assert "$$" not in content and "\\[" not in content
    assert page.locator(".highlight code .k, .highlight code .kn").count() > 0  # Pygments keyword spans
    tags = page.eval_on_selector_all(".md-tags a.md-tag", "els => els.map(e => e.getAttribute('href'))")
    assert tags and all("tags/#tag:" in href for href in tags)
    assert re.search(r"需要 \d+ 分钟阅读时间", page.content())  # in the post's sidebar
    # the committed results (results/) are inlined after their blocks, with device and date
    results = page.locator("details.success, details.failure, .admonition.warning")
    assert results.count() >= 3
    summary = page.inner_text("details.success summary, .admonition.warning .admonition-title")
    # in the site's language (zh): status, device label, seconds
    assert re.search(r"(通过|已过期).*CPU（\d+ 核）.*\d+\.\d+ 秒", summary), summary
    assert page.locator("text=个用例通过").count() >= 1  # a check table


def test_note_offers_itself_as_a_notebook_and_a_script(page: Any, base_url: str, artifacts: Path):
    page.goto(base_url + MATH_NOTE + "/")
    links = page.locator("nav.kn-downloads a.kn-download")
    assert [t.strip() for t in links.all_inner_texts()] == ["下载 Notebook", "下载 Python 脚本"]
    assert links.first.is_visible()
    page.screenshot(path=str(artifacts / "note-downloads.png"))
    with page.expect_download() as download:
        links.first.click()
    assert download.value.suggested_filename == f"{MATH_NOTE}.ipynb"
    nb = nbformat.read(download.value.path(), as_version=4)
    nbformat.validate(nb)
    assert "pip install" in nb.cells[0].source and any(c.get("outputs") for c in nb.cells)
    script_url = links.nth(1).evaluate("a => a.href")  # served by the site itself
    with urllib.request.urlopen(script_url, timeout=10) as response:
        script = response.read().decode("utf-8")
    assert script_url.startswith(base_url) and "# %% [markdown]" in script
    page.goto(base_url + "tags/")  # a page without executed blocks offers nothing
    assert page.locator("nav.kn-downloads").count() == 0


def test_tags_page_lists_the_tags(page: Any, base_url: str):
    page.goto(base_url + "tags/")
    ids = page.eval_on_selector_all("[id^='tag:']", "els => els.map(e => e.id)")
    assert "tag:扩散模型" in ids and "tag:softmax" in ids
    assert len(ids) >= 10


def test_search_finds_a_note_by_a_two_character_chinese_word(page: Any, base_url: str):
    page.goto(base_url)
    page.click("input.md-search__input")  # at 1280 px the search box sits in the header
    page.fill("input.md-search__input", "扩散")
    page.wait_for_selector(".md-search-result__item")
    titles = page.eval_on_selector_all(".md-search-result__item h1", "els => els.map(e => e.textContent)")
    assert any("扩散" in t for t in titles), titles


def test_rss_feed_parses_and_has_the_real_dates(page: Any, base_url: str, site_dir: Path):
    page.goto(base_url)
    feed_href = page.get_attribute("link[rel=alternate][type='application/rss+xml']", "href")
    assert feed_href and feed_href.endswith("feed_rss_created.xml")
    with urllib.request.urlopen(base_url + "feed_rss_created.xml", timeout=10) as response:
        root = ET.fromstring(response.read())
    items = root.findall("./channel/item")
    got = [
        (email.utils.parsedate_to_datetime(i.findtext("pubDate") or "").date(), i.findtext("title"))
        for i in items
    ]
    expected = _published_notes(site_dir)[: len(items)]
    assert [d for d, _ in got] == [d for d, _ in expected]
    for item in items:
        description = item.findtext("description") or ""
        assert description and "$" not in description and not description.startswith("#")


def test_notebook_page_renders_its_math(page: Any, base_url: str, site_dir: Path):
    notebooks = sorted((site_dir.parent / "notes" / "posts").glob("*.ipynb"))
    if not notebooks:
        pytest.skip("no notebook under notes/posts/")
    page.goto(base_url + f"posts/{notebooks[0].stem}/")
    page.wait_for_selector(".jp-RenderedMarkdown .katex")  # KaTeX from assets/, no MathJax from a CDN
