"""A small mkdocs-material blog project for the site tests: notes with excerpts, a snippet include,
an exec block, footnotes after the separator and a separator inside a code block."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ENV = {
    "NO_MKDOCS_2_WARNING": "1",
    "PATH": "/usr/bin:/bin",
    "KERNELNOTES_LOAD_PLUGINS": "0",
    "MPLBACKEND": "Agg",
}

CONFIG = """\
site_name: t
site_url: {site_url}
docs_dir: notes
theme:
  name: material
  language: zh
  font: false
  custom_dir: overrides
plugins:
  - search:
      lang: zh
  - blog:
      blog_dir: .
      post_url_format: "{{slug}}"
      post_excerpt: optional
      pagination_per_page: 2
      archive_date_format: yyyy/MM
      draft: false
      draft_on_serve: false
  - tags
  - rss:
      use_git: false
      date_from_meta: {{as_creation: date.created, as_update: date.updated, datetime_format: "%Y-%m-%d"}}
      json_feed_enabled: false
      cache_dir: .kernelnotes/cache/rss
  - kernelnotes:
      site_cache: {cache}
      report_page: ""   # a report of what this build executed: a fresh build differs by design
markdown_extensions:
  - admonition
  - footnotes
  - toc:
      permalink: true
  - pymdownx.details
  - pymdownx.highlight
  - pymdownx.superfences
  - pymdownx.snippets:
      base_path: ["."]
      check_paths: true
"""

POST = """\
---
title: {title}
date: {date}
slug: {slug}
categories: [{category}]
tags: [{tag}]
{extra}---

# {title}

{slug} 的摘要：扩散模型与采样[^1]。

<!-- more -->

## 正文

```python
--8<-- "snippets/shared.py"
```

[^1]: 脚注在分隔符之后定义。
"""

EXEC_POST = """\
---
title: 会运行的笔记
date: 2025-02-01
slug: runs
categories: [工程实践]
tags: [Python]
---

# 会运行的笔记

开头一段。

<!-- more -->

```python exec="on"
from helper import value
print("value", value())
```

```text
<!-- more --> 代码块里的分隔符不算数
```
"""

# the first separator is inside a code block: only the second one cuts the excerpt
FENCED_POST = """\
---
title: 代码块里的分隔符
date: 2025-02-02
slug: fenced
categories: [算法题]
---

# 代码块里的分隔符

```html
<!-- more -->
```

真正的摘要到这里。

<!-- more -->

后文。
"""


def write_project(root: Path, *, site_url: str = "https://example.org/", cache: bool = True) -> None:
    notes = root / "notes" / "posts"
    notes.mkdir(parents=True, exist_ok=True)
    (root / "snippets").mkdir(exist_ok=True)
    (root / "snippets" / "shared.py").write_text("def shared():\n    return 1\n", encoding="utf-8")
    (root / "snippets" / "helper.py").write_text("def value():\n    return 1\n", encoding="utf-8")
    (root / "overrides").mkdir(exist_ok=True)
    write_theme_override(root, "页脚一")
    (root / "notes" / "index.md").write_text("# 最新笔记\n", encoding="utf-8")
    (root / "notes" / "tags.md").write_text("# 标签\n\n<!-- material/tags -->\n", encoding="utf-8")
    for i, (slug, category, tag) in enumerate(
        [("alpha", "深度学习", "attention"), ("beta", "生成模型", "采样"), ("gamma", "深度学习", "attention")]
    ):
        write_post(root, slug, f"笔记 {slug}", f"2025-01-0{i + 1}", category, tag)
    (notes / "runs.md").write_text(EXEC_POST, encoding="utf-8")
    (notes / "fenced.md").write_text(FENCED_POST, encoding="utf-8")
    write_config(root, site_url=site_url, cache=cache)


def write_config(root: Path, *, site_url: str, cache: bool = True, extra: str = "") -> None:
    text = CONFIG.format(site_url=site_url, cache="true" if cache else "false") + extra
    (root / "mkdocs.yml").write_text(text, encoding="utf-8")


def write_theme_override(root: Path, footer: str) -> None:
    """A template of the theme's custom_dir: editing it changes every page."""
    (root / "overrides" / "main.html").write_text(
        '{% extends "base.html" %}\n{% block extrahead %}{{ super() }}<meta name="kn-test" content="'
        + footer
        + '">{% endblock %}\n',
        encoding="utf-8",
    )


def write_post(
    root: Path,
    slug: str,
    title: str,
    date: str,
    category: str = "深度学习",
    tag: str = "attention",
    extra: str = "",
) -> Path:
    path = root / "notes" / "posts" / f"{slug}.md"
    path.write_text(
        POST.format(title=title, date=date, slug=slug, category=category, tag=tag, extra=extra),
        encoding="utf-8",
    )
    return path


def build(root: Path, site: Path, config: str = "mkdocs.yml") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", str(site)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=root,
    )


# The one thing a fresh build reports differently by design: that a block's result came from the
# cache (one build ran it moments ago; the next finds it stored).
# (in the site's language: "cached November 24, 2026 06:37", "缓存于 2026年11月24日 06:37")
CACHE_NOTE = re.compile(r" · (?:cached|缓存于) [^<·\"]*?\d\d:\d\d|<td>(hit|miss|命中|未命中)</td>")


def without_cache_notes(page: str) -> str:
    # the search index separates Chinese words with U+200B (jieba): the same on both sides, dropped
    return CACHE_NOTE.sub("", page.replace("\u200b", ""))


def readable(search_index: str) -> str:
    """The search index with its \\uXXXX escapes decoded, so the same text compares the same."""
    return json.dumps(json.loads(search_index), ensure_ascii=False, indent=0)


FEEDS = ("feed_rss_created.xml", "feed_rss_updated.xml")
ITEM = re.compile(r"<item>.*?</item>", re.S)


def comparable(name: str, text: str) -> str:
    """A built file as compared: the search index decoded, a feed's items only (its channel carries
    the build time), no cache notes."""
    if name == "search/search_index.json":
        text = readable(text)
    elif name in FEEDS:
        text = "\n".join(ITEM.findall(text))
    return without_cache_notes(text)


def pages(site: Path) -> dict[str, str]:
    """Every HTML page, the search index and the feeds of a built site, by path, as compared."""
    found = {str(p.relative_to(site)): p.read_text("utf-8") for p in site.rglob("*.html")}
    for name in ("search/search_index.json", *FEEDS):
        if (site / name).exists():
            found[name] = (site / name).read_text("utf-8")
    return {name: comparable(name, text) for name, text in found.items()}
