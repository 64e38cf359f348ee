"""Adopting an existing mkdocs-material blog: `kn init`, and settings derived from the blog's own.

Blogs are generated in the layouts people use and built with a real `mkdocs build`, before and after
`kn init`: posts, dates, drafts, categories, authors and the feed must come out the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from kernelnotes.adopt import _append_plugin, init_blog
from kernelnotes.blog import derive_feed_settings, unknown_categories
from kernelnotes.settings import SettingsError, plugin_section, read_mkdocs_config

from .conftest import REPO

ENV = {"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "KERNELNOTES_LOAD_PLUGINS": "0"}
KN = [sys.executable, "-c", "from kernelnotes.cli import main; main()"]

AUTHORS = """\
authors:
  alice:
    name: Alice Example
    description: Writes about Python
    avatar: https://example.com/alice.png
  bob:
    name: Bob Sample
    description: Guest
    avatar: https://example.com/bob.png
"""


def post(date: str, title: str, *, categories: str = "", extra: str = "", body: str = "Body text.") -> str:
    lines = ["---", date]
    if categories:
        lines.append(f"categories: [{categories}]")
    if extra:
        lines.append(extra)
    return "\n".join([*lines, "---", "", f"# {title}", "", "An excerpt.", "", "<!-- more -->", "", body, ""])


def blog_dict_dates(root: Path) -> dict[str, str]:
    """`docs/blog/posts/`, `blog_dir: blog`, dates as mappings, an authors file, the RSS plugin."""
    docs = root / "docs"
    (docs / "blog" / "posts" / "2024").mkdir(parents=True)
    (docs / "index.md").write_text("# Welcome\n\nMy site.\n", encoding="utf-8")
    (docs / "blog" / "index.md").write_text("# Blog\n", encoding="utf-8")
    (docs / "blog" / ".authors.yml").write_text(AUTHORS, encoding="utf-8")
    posts = {
        "hello.md": post("date:\n  created: 2024-01-10", "Hello World", categories="Python, Tips",
                         extra="authors: [alice]"),
        "2024/nested.md": post("date:\n  created: 2024-02-03\n  updated: 2024-02-20", "Nested Post",
                               categories="Python", extra="authors: [bob]\nslug: nested-one"),
        "later.md": post("date:\n  created: 2024-03-01\n  updated: 2024-04-01", "Later Post",
                         categories="Misc", extra="authors: [alice, bob]"),
        "draft.md": post("date:\n  created: 2024-05-01", "Unfinished Draft", categories="Misc",
                         extra="draft: true"),
    }  # fmt: skip
    for name, text in posts.items():
        (docs / "blog" / "posts" / name).write_text(text, encoding="utf-8")
    (root / "mkdocs.yml").write_text(
        textwrap.dedent(
            """\
            site_name: Alice's notes
            site_url: https://alice.example.com/
            theme:
              name: material
              features:
                - navigation.indexes
            plugins:
              - search
              # the blog lives in docs/blog
              - blog:
                  blog_dir: blog
                  post_date_format: medium
              - tags
              - rss:
                  match_path: blog/posts/.*
                  use_git: false
                  date_from_meta:
                    as_creation: date.created
                    as_update: date.updated
            markdown_extensions:
              - admonition
              - pymdownx.superfences
            nav:
              - Home: index.md
              - Blog:
                  - blog/index.md
            """
        ),
        encoding="utf-8",
    )
    (root / ".gitignore").write_text("site/\n", encoding="utf-8")
    return {"Hello World": "hello", "Nested Post": "nested-one", "Later Post": "later"}


def blog_plain_dates(root: Path) -> dict[str, str]:
    """The blog is the whole site (`blog_dir: .`, posts in `docs/posts/`), plain dates, authors at
    the top, items at column 0 under `plugins:`, RSS reading `date` with no match_path."""
    docs = root / "docs"
    (docs / "posts").mkdir(parents=True)
    (docs / "index.md").write_text("# Blog\n", encoding="utf-8")
    (docs / ".authors.yml").write_text(AUTHORS, encoding="utf-8")
    posts = {
        "first.md": post("date: 2023-11-05", "First Steps", categories="Rust", extra="authors: [alice]"),
        "second.md": post("date: 2023-12-24", "Second Thoughts", categories="Rust, Life",
                          extra="authors: [bob]"),
        "draft.md": post("date: 2024-01-02", "Secret Draft", categories="Life", extra="draft: true"),
    }  # fmt: skip
    for name, text in posts.items():
        (docs / "posts" / name).write_text(text, encoding="utf-8")
    (root / "mkdocs.yml").write_text(
        textwrap.dedent(
            """\
            site_name: Plain blog
            site_url: https://plain.example.com/
            theme: {name: material}
            plugins:
            - search
            - blog:
                blog_dir: .
                authors_file: .authors.yml
            - rss:
                use_git: false
                date_from_meta:
                  as_creation: date
                  datetime_format: "%Y-%m-%d"
            """
        ),
        encoding="utf-8",
    )
    return {"First Steps": "first", "Second Thoughts": "second"}


def build(config: Path, site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-f", str(config), "-d", str(site), *extra],
        capture_output=True,
        text=True,
        env=ENV,
    )


def site_facts(site: Path) -> dict[str, object]:
    """What a reader sees: pages, the feed's posts with dates, category pages, author names."""
    pages = {p.relative_to(site).as_posix() for p in site.rglob("index.html")}
    items = ET.parse(site / "feed_rss_created.xml").getroot().findall("./channel/item")
    feed = {i.findtext("title"): i.findtext("pubDate") for i in items}
    text = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    return {
        "pages": pages,
        "feed": feed,
        "categories": {p for p in pages if "/category/" in f"/{p}"},
        "authors": {name for name in ("Alice Example", "Bob Sample") if name in text},
        "draft": "Unfinished Draft" in text or "Secret Draft" in text,
    }


@pytest.mark.parametrize("make_blog", [blog_dict_dates, blog_plain_dates], ids=lambda f: f.__name__)
def test_kn_init_adds_kernelnotes_and_the_blog_publishes_the_same(tmp_path, make_blog):
    root = tmp_path / "blog"
    root.mkdir()
    titles = make_blog(root)
    config = root / "mkdocs.yml"
    original = config.read_text(encoding="utf-8")

    before = build(config, tmp_path / "before", "--strict")
    assert before.returncode == 0, before.stderr[-3000:]
    init = subprocess.run([*KN, "init"], cwd=root, capture_output=True, text=True, env=ENV)
    assert init.returncode == 0, init.stderr
    edited = config.read_text(encoding="utf-8")
    added = [line for line in edited.splitlines() if line not in original.splitlines()]
    assert added[0].strip() == "- kernelnotes:" and len(added) == 3  # the item, db, categories
    assert [line for line in edited.splitlines() if line not in added] == original.splitlines()
    assert "indexed" in init.stderr  # it indexed the blog's notes right away
    again = subprocess.run([*KN, "init"], cwd=root, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0 and "already set up" in again.stderr
    assert config.read_text(encoding="utf-8") == edited

    after = build(config, tmp_path / "after", "--strict")
    assert after.returncode == 0, after.stderr[-3000:]
    old, new = site_facts(tmp_path / "before"), site_facts(tmp_path / "after")
    # the posts in the feed with the same dates (a feed left to match every page now holds the posts)
    old_posts = {title: date for title, date in old["feed"].items() if title in titles}
    assert set(old_posts) == set(titles) and all(old_posts.values())
    assert new["feed"] == old_posts
    assert new["categories"] == old["categories"] and old["categories"]
    assert new["authors"] == old["authors"] == {"Alice Example", "Bob Sample"}
    assert not old["draft"] and not new["draft"]
    assert old["pages"] <= new["pages"]  # every page is still there; KernelNotes adds its report
    assert new["pages"] - old["pages"] == {"execution/index.html"}


def test_adopted_blog_runs_its_blocks_and_reports_unknown_categories(tmp_path):
    root = tmp_path / "blog"
    root.mkdir()
    blog_dict_dates(root)
    assert subprocess.run([*KN, "init"], cwd=root, capture_output=True, env=ENV).returncode == 0
    section = plugin_section(read_mkdocs_config(root / "mkdocs.yml"))
    assert section["categories"] == ["Misc", "Python", "Tips"]  # what the posts use
    assert (root / ".gitignore").read_text(encoding="utf-8") == "site/\n.kernelnotes/\n"
    # the author's next steps: a runnable block, and a post with a misspelt category
    (root / "docs" / "blog" / "posts" / "run.md").write_text(
        post("date:\n  created: 2024-06-01", "Runs Code", categories="Pyhton",
             body='```python exec="on"\nprint(6 * 7)\n```'),
        encoding="utf-8",
    )  # fmt: skip
    result = build(root / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "Pyhton" in line]
    assert (
        len(warnings) == 1 and "run.md:4: warning: category 'Pyhton' is not one of the known" in warnings[0]
    )
    assert "published anyway" in warnings[0]
    page = next(
        p for p in (tmp_path / "site").rglob("index.html") if "Runs Code</h1>" in p.read_text("utf-8")
    )
    assert "42" in page.read_text(encoding="utf-8")


def test_shipped_config_pointed_at_another_blog_publishes_its_posts_and_feed(tmp_path):
    """The issue's reproduction: the repository's mkdocs.yml with only blog_dir changed."""
    root = tmp_path / "site-src"
    (root / "notes").mkdir(parents=True)
    shutil.copytree(REPO / "overrides", root / "overrides")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    titles = blog_dict_dates(scratch)
    shutil.copytree(scratch / "docs" / "blog", root / "notes" / "blog")
    (root / "notes" / "index.md").write_text("# Home\n", encoding="utf-8")
    shipped = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    assert "      blog_dir: .\n" in shipped
    (root / "mkdocs.yml").write_text(
        shipped.replace("      blog_dir: .\n", "      blog_dir: blog\n"), "utf-8"
    )
    result = build(root / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "leaves this note out" not in result.stderr
    facts = site_facts(tmp_path / "site")
    assert set(facts["feed"]) == set(titles)  # every published post is in the feed
    unknown = [line for line in result.stderr.splitlines() if "is not one of the known categories" in line]
    # hello.md: Python, Tips; nested.md: Python; later.md: Misc (the draft is not checked twice)
    assert len(unknown) == 5, unknown
    assert all("published anyway" in line for line in unknown)


# ---- units --------------------------------------------------------------------------------------------


def _config(blog: dict[str, object] | None, rss: dict[str, object]) -> SimpleNamespace:
    plugins: dict[str, object] = {"rss": SimpleNamespace(config=rss)}
    if blog is not None:
        plugins["material/blog"] = SimpleNamespace(config=blog)
    return SimpleNamespace(plugins=plugins)


def test_feed_match_path_follows_blog_dir_unless_set():
    rss = {"match_path": ".*", "date_from_meta": {"as_creation": "date", "as_update": False}}
    assert derive_feed_settings(_config({"blog_dir": "blog"}, rss))
    assert rss["match_path"] == r"blog/posts/.*\.md$"
    assert rss["date_from_meta"] == {"as_creation": "date.created", "as_update": False}
    rss = {"match_path": ".*"}
    derive_feed_settings(_config({"blog_dir": ".", "post_dir": "{blog}/articles"}, rss))
    assert rss["match_path"] == r"articles/.*\.md$"
    mine = {"match_path": "blog/.*"}
    assert derive_feed_settings(_config({"blog_dir": "blog"}, mine)) == [] and mine["match_path"] == "blog/.*"
    assert derive_feed_settings(_config(None, {"match_path": ".*"})) == []  # no blog: nothing to derive


def test_unknown_categories_are_warnings_naming_the_line():
    front = "date: 2024-01-01\ncategories: [深度学习, 深读学习]\n"
    lines = unknown_categories("posts/a.md", {"categories": ["深度学习", "深读学习"]}, front, ["深度学习"])
    assert lines == [
        "posts/a.md:3: warning: category '深读学习' is not one of the known categories (add it to the "
        "kernelnotes plugin's `categories` in mkdocs.yml, or fix its spelling); published anyway"
    ]
    assert unknown_categories("posts/a.md", {"categories": ["x"]}, front, []) == []  # no list: anything goes


@pytest.mark.parametrize(
    "plugins",
    [
        "plugins:\n  - search\n  - blog:\n      blog_dir: blog\n",
        "plugins:\n- search\n- blog:\n    blog_dir: blog\n",
        "plugins:   # mine\n  - search\n\n  # comment\n  - blog:\n      blog_dir: blog\n\n# trailing\n",
    ],
)
def test_plugin_item_is_appended_at_the_list_indent(tmp_path, plugins):
    text = f"site_name: x\ntheme: {{name: material}}\n{plugins}markdown_extensions:\n  - admonition\n"
    new, added = _append_plugin(text, ["A"])
    assert new is not None and added[0].strip() == "- kernelnotes:"
    (tmp_path / "mkdocs.yml").write_text(new, encoding="utf-8")
    data = read_mkdocs_config(tmp_path / "mkdocs.yml")
    assert [next(iter(p)) if isinstance(p, dict) else p for p in data["plugins"]] == [
        "search",
        "blog",
        "kernelnotes",
    ]
    assert data["plugins"][-1]["kernelnotes"]["categories"] == ["A"]
    assert data["markdown_extensions"] == ["admonition"]


def test_kn_init_refuses_what_it_cannot_edit_safely(tmp_path):
    config = tmp_path / "mkdocs.yml"
    config.write_text("site_name: x\ntheme: {name: material}\nplugins: [search, blog]\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="add it by hand"):
        init_blog(config)
    config.write_text("site_name: x\ntheme: readthedocs\nplugins:\n  - blog\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="not material"):
        init_blog(config)
    config.write_text("site_name: x\ntheme: {name: material}\nplugins:\n  - search\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="no blog plugin"):
        init_blog(config)
    assert os.path.getsize(config) == len("site_name: x\ntheme: {name: material}\nplugins:\n  - search\n")
