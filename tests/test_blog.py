"""kernelnotes.blog: CJK reading time, post validation, feed helpers, and the glue in a real build."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kernelnotes.blog import (
    EXCERPT_SEPARATOR,
    ensure_excerpt_separator,
    feed_description,
    read_front_matter,
    reading_time,
    validate_post,
)

# ------------------------------------------------------------------------------------------ reading time


def test_reading_time_counts_chinese_characters_not_runs():
    # 2000 characters with no spaces: material's blog sees one "word"; at 400 characters a minute it is 5
    assert reading_time("扩散" * 1000) == 5


def test_reading_time_adds_english_words_code_and_formulas():
    english = " ".join(["word"] * 400)  # 2 minutes
    code = "```python\n" + "x = 1\n" * 80 + "```\n"  # 80 lines at 40 a minute: 2 minutes
    formulas = "\n\n".join(["$$\na^2 + b^2 = c^2\n$$"] * 6)  # 6 x 10 s: 1 minute
    assert reading_time(english) == 2
    assert reading_time(code) == 2
    assert reading_time(formulas) == 1
    assert reading_time("\n\n".join([english, code, formulas, "中" * 400])) == 6


def test_reading_time_ignores_front_matter_comments_and_link_targets():
    text = "---\ntitle: " + "标题" * 500 + "\n---\n\n短文。<!-- " + "注释" * 500 + " -->\n"
    text += "[链接](https://example.org/" + "a/" * 500 + ")\n"
    assert reading_time(text) == 1


def test_reading_time_is_at_least_one_minute():
    assert reading_time("") == 1


def test_code_inside_a_fence_is_not_read_as_prose():
    fenced = "```\n" + "中文注释 " * 400 + "\n```\n"
    assert reading_time(fenced) == 1  # one line of code, not 1600 characters of prose


# ------------------------------------------------------------------------------------------ validation


def _validate(front: str, **kwargs: object) -> list[str]:
    meta, text, error = read_front_matter(f"---\n{front}---\n\n# T\n")
    return validate_post("notes/posts/x.md", meta, text, error=error, **kwargs)  # type: ignore[arg-type]


def test_a_good_post_has_no_problems():
    assert _validate("date: 2025-03-14\ncategories: [深度学习]\ntags: [softmax]\n") == []
    assert _validate("date:\n  created: 2025-03-14\n  updated: 2025-06-01\n") == []
    assert _validate("date: 2025-03-14 10:30:00\ndraft: true\nreadtime: 5\n") == []


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        (
            'date: "2024-01-31"\n',
            "x.md:2: error: date '2024-01-31' is quoted, so it is text (write it unquoted: date: 2024-01-31)",
        ),
        ("date: 2024/01/31\n", "x.md:2: error: date '2024/01/31' is not a date (write date: 2024-01-31)"),
        ("title: t\n", "x.md: error: date is missing (add date: "),
        ("title: t\ndate:\n  updated: 2024-02-01\n", "x.md:3: error: date has no 'created' (add created: "),
        (
            "date:\n  created: '2024-01-31'\n",
            "date.created '2024-01-31' is quoted, so it is text (write it unquoted: created: 2024-01-31)",
        ),
        (
            "date:\n  created: 2024-01-31\n  updated: soon\n",
            "date.updated 'soon' is not a date (write updated: YYYY-MM-DD",
        ),
        (
            "date: 2024-01-31\ndraft: yes please\n",
            "x.md:3: error: draft 'yes please' is not bool (write draft: true or false)",
        ),
        (
            "date: 2024-01-31\ncategories: 深度学习\n",
            "categories '深度学习' is not a list of names (write categories: [a, b])",
        ),
    ],
)
def test_each_problem_is_one_line_naming_file_field_and_fix(front: str, expected: str) -> None:
    problems = _validate(front)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert problems[0].startswith("notes/posts/x.md")
    assert problems[0].endswith("the site leaves this note out")
    assert "\n" not in problems[0]


def test_missing_date_suggests_today():
    assert dt.date.today().isoformat() in _validate("title: t\n")[0]


def test_category_outside_the_allow_list():
    problems = _validate("date: 2024-01-31\ncategories: [随笔]\n", allowed_categories=["深度学习", "算法题"])
    assert problems == [
        "notes/posts/x.md:3: error: category '随笔' is not allowed (use one of 深度学习, 算法题); "
        "the site leaves this note out"
    ]


def test_unreadable_front_matter():
    assert _validate("title: t\ndate: [2024\n")[0].startswith(
        "notes/posts/x.md:4: error: invalid YAML front matter: "  # where PyYAML stopped, as the index says
    )
    # PyYAML's SafeLoader (which material's blog uses) raises on an impossible date
    assert _validate("title: t\ndate: 2024-13-45\n")[0].startswith(
        "notes/posts/x.md:3: error: impossible date: month must be in 1..12 (write a real date"
    )
    meta, _, error = read_front_matter("# no front matter\n")
    assert validate_post("p.md", meta, error=error) == [
        "p.md: error: a post needs front matter (start the file with ---, date: YYYY-MM-DD, ---); "
        "the site leaves this note out"
    ]


# ------------------------------------------------------------------------------------------ feed helpers


def test_feed_description_has_no_h1_math_or_code():
    md = "# 标题\n\n令 $x_i$ 为输入，**加粗**与 [链接](a.md)。\n\n$$\ny = x^2\n$$\n\n```python\nprint(1)\n```\n"
    text = feed_description(md)
    assert text == "令 x_i 为输入，加粗与 链接。"


def test_feed_description_prefers_the_front_matter_description():
    assert feed_description("# T\n\nbody", "一句话摘要，含 $\\alpha$") == "一句话摘要，含 \\alpha"


def test_excerpt_separator_inserted_after_about_300_characters():
    paragraphs = ["第一段" + "字" * 200, "第二段" + "字" * 200, "第三段" + "字" * 400]
    md = "# 标题\n\n" + "\n\n".join(paragraphs) + "\n"
    out = ensure_excerpt_separator(md)
    head, tail = out.split(EXCERPT_SEPARATOR)
    assert "第二段" in head and "第三段" in tail
    assert ensure_excerpt_separator(out) == out  # idempotent
    assert ensure_excerpt_separator("# T\n\n短文。\n") == "# T\n\n短文。\n"


def test_excerpt_separator_never_lands_inside_code():
    md = "# T\n\n" + "字" * 320 + "\n```python\n" + "x = 1\n\n" * 40 + "```\n\n" + "尾" * 400 + "\n"
    out = ensure_excerpt_separator(md)
    before = out.split(EXCERPT_SEPARATOR)[0]
    assert before.count("```") % 2 == 0


# ------------------------------------------------------------------------------------------ real build

# The calls the kernelnotes plugin makes (see the module docstring of kernelnotes.blog), as mkdocs hooks
# so that this test does not depend on the plugin's other work.
GLUE = """
import logging
from mkdocs.plugins import CombinedEvent, event_priority
from kernelnotes import blog

log = logging.getLogger("mkdocs.plugins.kernelnotes")
hidden = []

def _validate(files, config):
    for message in blog.exclude_invalid_posts(files, config):
        log.warning(message)

@event_priority(-40)
def _hide(files, config):
    hidden[:] = blog.hide_notebooks_from_blog(files, config)

@event_priority(-60)
def _show(files, config):
    blog.show_notebooks(hidden)

on_files = CombinedEvent(_validate, _hide, _show)

def on_page_markdown(markdown, page, config, files):
    return blog.prepare_post(page, markdown)
"""

NOTEBOOK = {
    "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# 笔记本\n", "\n", "一个笔记本页面。"]}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def _post(date_line: str, title: str, body: str = "") -> str:
    return f"---\n{date_line}\ncategories: [深度学习]\ntags: [softmax]\n---\n\n# {title}\n\n{body}\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    root = tmp_path_factory.mktemp("blog")
    posts = root / "notes" / "posts"
    posts.mkdir(parents=True)
    (root / "notes" / "index.md").write_text("# 最新笔记\n", encoding="utf-8")
    (posts / "good.md").write_text(
        _post("date: 2024-05-06", "好笔记", "中" * 2000 + "\n\n令 $x$ 为输入。"), encoding="utf-8"
    )
    (posts / "nested.md").write_text(
        _post("date:\n  created: 2024-03-01\n  updated: 2024-04-02", "嵌套日期", "正文。"), encoding="utf-8"
    )
    (posts / "quoted.md").write_text(_post('date: "2024-01-31"', "引号日期"), encoding="utf-8")
    (posts / "slashes.md").write_text(_post("date: 2024/01/31", "斜杠日期"), encoding="utf-8")
    (posts / "missing.md").write_text("---\ntags: [softmax]\n---\n\n# 没有日期\n", encoding="utf-8")
    (posts / "updated.md").write_text(_post("date:\n  updated: 2024-02-01", "只有更新"), encoding="utf-8")
    (posts / "draft.md").write_text(_post("date: 2024-05-07\ndraft: true", "草稿"), encoding="utf-8")
    (posts / "nb.ipynb").write_text(json.dumps(NOTEBOOK), encoding="utf-8")
    (root / "glue.py").write_text(GLUE, encoding="utf-8")
    (root / "mkdocs.yml").write_text(
        textwrap.dedent(
            """\
            site_name: t
            site_url: https://example.org/
            docs_dir: notes
            theme: {name: material, language: zh}
            plugins:
              - blog:
                  blog_dir: .
                  post_url_format: "{file}"  # pages at /good/, /nested/
                  post_slugify: !!python/name:kernelnotes.slug.slugify
              - rss:
                  match_path: "posts/.*\\\\.md$"
                  use_git: false
                  date_from_meta: {as_creation: date.created, as_update: date.updated, datetime_format: "%Y-%m-%d"}
              - mkdocs-jupyter: {include: ["*.ipynb"], execute: false}
            hooks: [glue.py]
            markdown_extensions: [{pymdownx.arithmatex: {generic: true}}]
            nav: [{最新笔记: index.md}, {笔记本: posts/nb.ipynb}]
            """
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-f", str(root / "mkdocs.yml"), "-d", str(root / "site")],
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "KERNELNOTES_LOAD_PLUGINS": "0"},
    )
    return result, root / "site"


def test_bad_posts_are_left_out_with_one_line_each_and_no_traceback(built):
    result, site = built
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    warnings = [l for l in result.stderr.splitlines() if "the site leaves this note out" in l]
    assert len(warnings) == 4, warnings
    for name in ("quoted.md:2", "slashes.md:2", "missing.md", "updated.md:2"):
        assert any(name in w for w in warnings), name
    assert (site / "good" / "index.html").exists()
    assert not (site / "quoted").exists()
    assert not (site / "draft").exists()  # drafts are left out of `mkdocs build` (shown by serve)


def test_notebook_under_posts_is_an_ordinary_page(built):
    _, site = built
    page = (site / "posts" / "nb" / "index.html").read_text(encoding="utf-8")
    assert "一个笔记本页面" in page


def test_readtime_counts_chinese_characters(built):
    _, site = built
    page = (site / "good" / "index.html").read_text(encoding="utf-8")
    # 2000 characters at 400 a minute; material's own count sees one word and says 1 minute
    assert "需要 5 分钟阅读时间" in page


def test_feed_has_the_real_dates_and_clean_descriptions(built):
    _, site = built
    items = ET.parse(site / "feed_rss_created.xml").getroot().findall("./channel/item")
    dates = {i.findtext("title"): i.findtext("pubDate") for i in items}
    assert dates == {
        "好笔记": "Mon, 06 May 2024 00:00:00 +0000",
        "嵌套日期": "Fri, 01 Mar 2024 00:00:00 +0000",
    }
    for item in items:
        description = item.findtext("description") or ""
        assert "$" not in description and "# " not in description
