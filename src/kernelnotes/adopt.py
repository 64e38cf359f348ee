"""`kn init`: add KernelNotes to an existing mkdocs-material blog without changing how it publishes.

The blog's mkdocs.yml is edited as text, not re-dumped, so its comments, key order, `!!python/name`
tags and `!ENV` values survive: one `- kernelnotes:` item is appended to its `plugins:` list. The
edit is checked by parsing the result: every other setting must read back unchanged, else nothing
is written and the lines to add by hand are shown. The categories the posts already use become the
plugin's known `categories` (a later typo is reported; no post is ever dropped for it), unless the
blog has its own `categories_allowed` allow-list, which stays in charge.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernelnotes.blog import read_front_matter
from kernelnotes.settings import DEFAULT_DB, PLUGIN_NAME, SettingsError, plugin_section, read_mkdocs_config

_PLUGINS_KEY = re.compile(r"^plugins[ \t]*:[ \t]*(#.*)?$")
_ITEM = re.compile(r"^([ \t]*)-[ \t]")


@dataclass
class InitReport:
    config: Path
    changed: bool  # False: KernelNotes was already set up
    categories: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the lines added to mkdocs.yml
    gitignore: bool = False  # .kernelnotes/ was added to .gitignore


def init_blog(config: Path) -> InitReport:
    """Add the kernelnotes plugin to the mkdocs-material blog configured by `config`.

    Raises SettingsError (one line, saying what to do) when the site is not a material blog or
    its plugins list cannot be edited safely.
    """
    config = config.resolve()
    if not config.is_file():
        raise SettingsError(f"{config}: config file not found (run kn init next to the blog's mkdocs.yml)")
    data = read_mkdocs_config(config)
    if _plugin_names(data).count(PLUGIN_NAME) or plugin_section(data):
        return InitReport(config, changed=False)
    theme = data.get("theme")
    theme_name = theme.get("name") if isinstance(theme, dict) else theme
    if theme_name != "material":
        raise SettingsError(
            f"{config}: theme is {theme_name!r}, not material (kn init adopts mkdocs-material blogs)"
        )
    blog = _blog_options(data)
    if blog is None:
        raise SettingsError(
            f"{config}: no blog plugin in plugins (add `- blog` first; see mkdocs-material's blog docs)"
        )
    categories = [] if blog.get("categories_allowed") else _used_categories(config.parent, data, blog)
    text = config.read_text(encoding="utf-8")
    new_text, added = _append_plugin(text, categories)
    if new_text is None or not _same_apart_from_kernelnotes(data, new_text):
        snippet = "\n".join(_item_lines("  ", categories))
        raise SettingsError(
            f"{config}: cannot add the plugin to this plugins list safely; add it by hand:\n{snippet}"
        )
    config.write_text(new_text, encoding="utf-8")
    return InitReport(config, True, categories, added, _ignore_cache(config.parent))


def _plugin_names(data: dict[str, Any]) -> list[str]:
    plugins = data.get("plugins") or []
    if isinstance(plugins, dict):
        return list(plugins)
    return [next(iter(p)) if isinstance(p, dict) else str(p) for p in plugins]


def _blog_options(data: dict[str, Any]) -> dict[str, Any] | None:
    plugins = data.get("plugins") or []
    items = plugins.items() if isinstance(plugins, dict) else (
        next(iter(p.items())) if isinstance(p, dict) else (p, {}) for p in plugins
    )  # fmt: skip
    for name, options in items:
        if name in ("blog", "material/blog"):
            return dict(options or {})
    return None


def _used_categories(root: Path, data: dict[str, Any], blog: dict[str, Any]) -> list[str]:
    """Every category the blog's posts use (drafts too), sorted."""
    blog_dir = str(blog.get("blog_dir", "blog"))
    post_dir = str(blog.get("post_dir", "{blog}/posts")).format(blog=blog_dir)
    posts = root / str(data.get("docs_dir") or "docs") / post_dir
    seen: set[str] = set()
    for path in sorted(posts.rglob("*.md")) if posts.is_dir() else []:
        try:
            meta, _, _ = read_front_matter(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError):
            continue
        value = (meta or {}).get("categories")
        for name in value if isinstance(value, list) else []:
            if isinstance(name, str):
                seen.add(name)
    return sorted(seen)


def _item_lines(indent: str, categories: list[str]) -> list[str]:
    lines = [f"{indent}- {PLUGIN_NAME}:", f"{indent}    db: {DEFAULT_DB}"]
    if categories:
        names = ", ".join(json.dumps(c, ensure_ascii=False) for c in categories)
        lines.append(f"{indent}    categories: [{names}]  # known categories: others are reported")
    return lines


def _append_plugin(text: str, categories: list[str]) -> tuple[str | None, list[str]]:
    """`text` with the plugin appended to its block-style `plugins:` list, or None if there is none."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if _PLUGINS_KEY.match(line)), None)
    if start is None:
        return None, []
    indent = None
    end = start + 1  # one past the last line that belongs to the list
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = _ITEM.match(line)
        if indent is None:
            if not item:
                return None, []  # `plugins:` followed by a mapping or something else: not a list
            indent = item.group(1)
        deeper = line[: len(indent) + 1].strip() == ""  # an item's options, indented below it
        if (item and item.group(1) == indent) or deeper:
            end = i + 1
            continue
        break
    if indent is None:
        return None, []
    added = _item_lines(indent, categories)
    return "\n".join([*lines[:end], *added, *lines[end:]]), added


def _same_apart_from_kernelnotes(before: dict[str, Any], text: str) -> bool:
    """Whether `text` reads back as `before` plus the kernelnotes item at the end of the plugins list."""
    with tempfile.TemporaryDirectory() as folder:
        check = Path(folder, "mkdocs.yml")
        check.write_text(text, encoding="utf-8")
        try:
            after = read_mkdocs_config(check)
        except SettingsError:
            return False
    plugins = after.get("plugins")
    if (
        not isinstance(plugins, list)
        or not plugins
        or _plugin_names({"plugins": plugins[-1:]}) != [PLUGIN_NAME]
    ):
        return False
    return plugins[:-1] == before.get("plugins") and {k: v for k, v in after.items() if k != "plugins"} == {
        k: v for k, v in before.items() if k != "plugins"
    }


def _ignore_cache(root: Path) -> bool:
    """Keep the index out of git: add `.kernelnotes/` to the blog's .gitignore (if it has one)."""
    ignore = root / ".gitignore"
    if not ignore.is_file():
        return False
    text = ignore.read_text(encoding="utf-8")
    if any(line.strip() in (".kernelnotes", ".kernelnotes/", "/.kernelnotes/") for line in text.splitlines()):
        return False
    ignore.write_text(
        text + ("" if text.endswith("\n") or not text else "\n") + ".kernelnotes/\n", encoding="utf-8"
    )
    return True
