"""The site's blog layer: what mkdocs-material's blog plugin gets wrong or does not check for our notes.

Pure functions (`reading_time`, `validate_post`, `feed_description`, `ensure_excerpt_separator`)
plus three thin helpers that the kernelnotes mkdocs plugin calls with mkdocs' own objects:

- `exclude_invalid_posts(files, config)` in `on_files`: material's blog reads every post in its own
  `on_files` (priority -50) and stops the build with a traceback on a quoted date, `2024/01/31`, a
  missing date or `updated` without `created`. Run first (default priority 0), it leaves such a post
  out of the build and returns one clear line per problem instead.
- `hide_notebooks_from_blog(files)` / `show_notebooks(hidden)` around the blog's `on_files`: the blog
  takes every page under `posts/` for a post and cannot read a notebook (no YAML front matter), so
  notebooks there stay ordinary pages.
- `prepare_post(page, markdown)` in `on_page_markdown`: sets a CJK-aware reading time, gives the RSS
  plugin the real dates and a clean description, and makes sure the feed shows an excerpt.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import math
import os
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import yaml

from kernelnotes import boundedyaml
from kernelnotes.parse import FENCE_OPEN, make_excerpt, split_code, split_front_matter
from kernelnotes.safetext import plain_text, terminal_text
from kernelnotes.textsearch import CJK

EXCERPT_SEPARATOR = "<!-- more -->"

# Reading speeds. Material's blog counts a run of Chinese characters without spaces as one word, so a
# 3000-character Chinese note "takes" a minute or two; these rates count each character instead.
CJK_CHARS_PER_MINUTE = 400
WORDS_PER_MINUTE = 200  # English words, numbers, inline code and inline formulas
CODE_LINES_PER_MINUTE = 40  # code is skimmed line by line, not read word by word
SECONDS_PER_DISPLAY_FORMULA = 10

_CJK = re.compile(f"[{CJK}]")
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\u024f]+(?:['’.\-][A-Za-z0-9\u00c0-\u024f]+)*")
_DISPLAY_MATH = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\begin\{(\w+\*?)\}.+?\\end\{\1\}", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?!\d)|\\\((.+?)\\\)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_INLINE_CODE = re.compile(r"`+([^`]+)`+")


# --------------------------------------------------------------------------------------------------
# Reading time


@functools.lru_cache(maxsize=4096)  # pure, and serve asks again for every unchanged note
def reading_time(markdown: str) -> int:
    """Minutes to read a note (at least 1): CJK characters, English words and code counted apart.

    Front matter, HTML comments and link targets are not read; a display formula counts a fixed
    time, an inline formula or inline code one word.
    """
    text = _strip_front_matter(markdown)
    prose, code_lines = split_code(text)
    prose = _HTML_COMMENT.sub(" ", prose)
    prose, formulas = _DISPLAY_MATH.subn(" ", prose)
    prose = _INLINE_MATH.sub(" formula ", prose)
    prose = _LINK.sub(r"\1", prose)
    prose = _HTML_TAG.sub(" ", prose)
    cjk = len(_CJK.findall(prose))
    words = len(_WORD.findall(_CJK.sub(" ", prose)))
    minutes = (
        cjk / CJK_CHARS_PER_MINUTE
        + words / WORDS_PER_MINUTE
        + code_lines / CODE_LINES_PER_MINUTE
        + formulas * SECONDS_PER_DISPLAY_FORMULA / 60
    )
    return max(1, math.ceil(minutes - 0.05))  # 2.02 minutes reads as 2, not 3


def _strip_front_matter(markdown: str) -> str:
    return split_front_matter(markdown)[1]


# --------------------------------------------------------------------------------------------------
# Validation of a post's front matter, before material's blog reads it


IMPOSSIBLE_DATE = "impossible date"


def read_front_matter(text: str) -> tuple[dict[str, Any] | None, str, str | None]:
    """(metadata, front-matter text, error) parsed the way material's blog parses it (PyYAML SafeLoader).

    SafeLoader matters: an impossible date such as `2024-13-45` makes it raise, and so the blog.
    """
    front, _, _ = split_front_matter(text.lstrip("\ufeff"))  # the project's one front-matter rule
    if front is None:
        return None, "", "no front matter"
    try:
        meta = boundedyaml.load(front, yaml.SafeLoader) or {}
    except yaml.YAMLError as exc:  # what is wrong, as kernelnotes.parse says it (the line: yaml_error_line)
        return None, front, getattr(exc, "problem", None) or str(exc).split("\n")[0]
    except ValueError as exc:  # SafeLoader's timestamp constructor: 2024-13-45
        return None, front, f"{IMPOSSIBLE_DATE}: {' '.join(str(exc).split())}"
    if not isinstance(meta, dict):
        return None, front, "front matter is not a mapping of keys to values"
    return meta, front, None


def validate_post(
    path: str,
    meta: Mapping[str, Any] | None,
    front_matter: str = "",
    *,
    allowed_categories: Iterable[str] = (),
    error: str | None = None,
) -> list[str]:
    """One line per front-matter problem that would stop material's blog: `file:line: error: ...`.

    `meta` is the parsed front matter (None when it could not be read, `error` says why);
    `front_matter` is its text, used only to point at the line of the offending key.
    """
    problems: list[tuple[str, str, str]] = []  # (key, what is wrong, what to write instead)
    if meta is None:
        what = error or "no front matter"
        if what == "no front matter":
            problems.append(
                ("", "a post needs front matter", "start the file with ---, date: YYYY-MM-DD, ---")
            )
        elif what.startswith(IMPOSSIBLE_DATE):
            problems.append(("date", what, "write a real date: YYYY-MM-DD, unquoted"))
        else:
            line = yaml_error_line(front_matter)
            problems.append(("", f"invalid YAML front matter: {what}", "fix the YAML syntax"))
            return [_line(path, front_matter, *p, line=line) for p in problems]
        return [_line(path, front_matter, *p) for p in problems]

    problems.extend(_check_date(meta))
    for key, kind in (("draft", bool), ("pin", bool), ("readtime", int), ("slug", str)):
        value = meta.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            example = {
                "draft": "true or false",
                "pin": "true or false",
                "readtime": "a whole number of minutes",
            }
            hint = example.get(key, "text")
            problems.append((key, f"{key} {value!r} is not {kind.__name__}", f"write {key}: {hint}"))
    allowed = list(allowed_categories)
    for key in ("categories", "tags", "authors"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append((key, f"{key} {value!r} is not a list of names", f"write {key}: [a, b]"))
        elif key == "categories" and allowed:
            for name in value:
                if name not in allowed:
                    problems.append(
                        (key, f"category {name!r} is not allowed", "use one of " + ", ".join(allowed))
                    )
    return [_line(path, front_matter, *p) for p in problems]


def yaml_error_line(front_matter: str) -> int:
    """The file's line where PyYAML stopped reading this front matter (0: no line, or no error)."""
    try:
        boundedyaml.load(front_matter, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return boundedyaml.front_matter_line(exc)
    except ValueError:
        return 0
    return 0


def _check_date(meta: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    value = meta.get("date")
    today = dt.date.today().isoformat()
    if value is None:
        return [("date", "date is missing", f"add date: {today}, unquoted YYYY-MM-DD")]
    if isinstance(value, dict):
        if "created" not in value or value["created"] is None:
            return [("date", "date has no 'created'", f"add created: {today} under date:")]
        return [p for key, v in value.items() for p in _check_one_date(f"date.{key}", v)]
    return _check_one_date("date", value)


def _check_one_date(key: str, value: Any) -> list[tuple[str, str, str]]:
    if isinstance(value, (dt.date, dt.datetime)):
        return []
    name = key.split(".")[-1]
    if isinstance(value, str):
        guess = _guess_date(value)
        if guess and re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}([ T][\d:.]+)?\s*", value):
            return [(key, f"{key} {value!r} is quoted, so it is text", f"write it unquoted: {name}: {guess}")]
        if guess:
            return [(key, f"{key} {value!r} is not a date", f"write {name}: {guess}")]
    return [(key, f"{key} {value!r} is not a date", f"write {name}: YYYY-MM-DD, unquoted, e.g. 2025-03-14")]


def _guess_date(value: str) -> str | None:
    """`2024/01/31`, `2024.1.31`, `"2024-01-31"` -> "2024-01-31"; None when it is no real date."""
    match = re.fullmatch(r"\s*(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T][\d:.]+)?\s*", value)
    if not match:
        return None
    try:
        return dt.date(*(int(g) for g in match.groups())).isoformat()
    except ValueError:
        return None


def _line(
    path: str,
    front_matter: str,
    key: str,
    what: str,
    hint: str,
    *,
    severity: str = "error",
    outcome: str = "the site leaves this note out",
    line: int = 0,
) -> str:
    top = key.split(".")[0]
    if top and not line:
        for number, text in enumerate(front_matter.split("\n"), start=2):  # line 1 is the opening ---
            if re.match(rf"{re.escape(top)}\s*:", text):
                line = number
                break
    where = f"{path}:{line}" if line else path
    return terminal_text(f"{where}: {severity}: {what} ({hint}); {outcome}")


# --------------------------------------------------------------------------------------------------
# Feed helpers


def feed_description(markdown: str, description: str | None = None, limit: int = 300) -> str:
    """Plain text for a feed item: the front-matter description, else the note's excerpt.

    HTML tags are removed from the excerpt (Markdown may hold HTML), never from the description,
    which is text; control characters are dropped (XML cannot carry them).

    No H1, no code, no `$...$` / `$$...$$` (a feed reader shows them raw): inline math keeps its
    TeX source without the dollars, display math is dropped, Markdown marks are removed.
    """
    if description:
        text = str(description)  # plain text already: a `<` in it is a character, not a tag
    else:
        # tags go, but not inside inline code (`Vec<T>`): split keeps code spans at odd positions
        parts = _INLINE_CODE.split(_HTML_COMMENT.sub(" ", make_excerpt(_strip_front_matter(markdown), limit)))
        text = "".join(p if i % 2 else _HTML_TAG.sub(" ", p) for i, p in enumerate(parts))
    text = _DISPLAY_MATH.sub(" ", text)
    text = _INLINE_MATH.sub(lambda m: (m.group(1) or m.group(2) or "").strip(), text)
    text = _LINK.sub(r"\1", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = re.sub(r"(\*\*|__|\*|~~|==)(\S.*?\S|\S)\1", r"\2", text)
    text = re.sub(r"^\s{0,3}(#+|>|[-*+]|\d+\.)\s+", "", text, flags=re.M)
    return plain_text(" ".join(text.split()))


def ensure_excerpt_separator(markdown: str, limit: int = 300) -> str:
    """Insert `<!-- more -->` after the first paragraphs (about `limit` characters) when it is missing.

    Without it, material's blog puts the whole note on the home page. Short notes are left alone.
    """
    if EXCERPT_SEPARATOR in markdown:
        return markdown
    lines = markdown.split("\n")
    fence = ""
    size = 0
    seen_h1 = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = ""
            continue
        match = FENCE_OPEN.match(line)
        if match:
            fence = match["fence"]
            continue
        if not seen_h1 and re.match(r"#\s", stripped):
            seen_h1 = True
            continue
        if stripped and not stripped.startswith(("#", "<", "!!!", "???", "|", "$$")):
            size += len(stripped)
        elif not stripped and size >= limit:
            if len("".join(lines[i:]).strip()) < limit:  # the rest is short: no "read more" needed
                return markdown
            return "\n".join([*lines[:i], "", EXCERPT_SEPARATOR, *lines[i:]])
    return markdown


# --------------------------------------------------------------------------------------------------
# Glue for the kernelnotes mkdocs plugin (duck-typed on mkdocs' and material's objects)


def _blog_config(config: Any) -> Mapping[str, Any] | None:
    plugins = getattr(config, "plugins", None) or {}
    blog = plugins.get("material/blog") if hasattr(plugins, "get") else None
    return getattr(blog, "config", None) if blog is not None else None


def _posts_prefix(config: Any) -> str | None:
    blog = _blog_config(config)
    if not blog or not blog.get("enabled", True):
        return None
    post_dir = str(blog.get("post_dir", "{blog}/posts")).format(blog=blog.get("blog_dir", "blog"))
    return os.path.normpath(post_dir).replace(os.sep, "/") + "/"


def unknown_categories(
    path: str, meta: Mapping[str, Any] | None, front_matter: str, known: Iterable[str]
) -> list[str]:
    """One warning line per category of a post outside `known` (the post is still published).

    The blog's own `categories_allowed` is an allow-list that drops the post (`validate_post`);
    this is the gentler check an adopted blog gets: a typo is reported, nothing disappears.
    """
    known = list(known)
    value = (meta or {}).get("categories")
    if not known or not isinstance(value, list):
        return []
    hint = "add it to the kernelnotes plugin's `categories` in mkdocs.yml, or fix its spelling"
    return [
        _line(
            path,
            front_matter,
            "categories",
            f"category {name!r} is not one of the known categories",
            hint,
            severity="warning",
            outcome="published anyway",
        )
        for name in value
        if isinstance(name, str) and name not in known
    ]


def exclude_invalid_posts(files: Any, config: Any, known_categories: Iterable[str] = ()) -> list[str]:
    """Remove the posts material's blog would crash on from `files`; one line per problem.

    A category outside the blog's `categories_allowed` drops the post (material would stop the
    build); one outside `known_categories` is only reported. Call from `on_files` of a plugin that
    runs before the blog (any priority above -50).
    """
    prefix = _posts_prefix(config)
    if prefix is None:
        return []
    allowed = (_blog_config(config) or {}).get("categories_allowed") or ()
    messages: list[str] = []
    for file in list(files):
        src = file.src_uri
        if not (src.startswith(prefix) and src.endswith(".md")) or not file.abs_src_path:
            continue
        try:
            with open(file.abs_src_path, encoding="utf-8-sig") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            problems = [terminal_text(f"{src}: error: cannot read ({exc}); the site leaves this note out")]
        else:
            meta, front, error = read_front_matter(text)
            problems = validate_post(src, meta, front, allowed_categories=allowed, error=error)
            if not problems:
                messages.extend(unknown_categories(src, meta, front, known_categories))
        if problems:
            files.remove(file)
            messages.extend(problems)
    return messages


def derive_feed_settings(config: Any) -> list[str]:
    """Make the RSS plugin's settings follow the blog's instead of repeating them; one line per change.

    - `match_path` left at its default (every page): the blog's posts folder, from `blog_dir` and
      `post_dir`, so pointing the site at another blog folder keeps the feed full.
    - `date_from_meta` reading `date`: `date.created` / `date.updated`, since `prepare_post` turns
      a post's `date` into that mapping (plain and mapping dates both reach the feed).
    Call from `on_config`; works whether the RSS plugin's own `on_config` ran before or not.
    """
    prefix = _posts_prefix(config)
    plugins = getattr(config, "plugins", None) or {}
    rss = plugins.get("rss") if hasattr(plugins, "get") else None
    if prefix is None or rss is None:
        return []
    messages = []
    options = rss.config
    if options.get("match_path", ".*") == ".*":
        pattern = re.escape(prefix) + r".*\.md$"
        options["match_path"] = pattern
        if hasattr(rss, "match_path_pattern"):  # the RSS plugin compiled the default already
            rss.match_path_pattern = re.compile(pattern)
        messages.append(f"rss: match_path derived from the blog: {pattern}")
    dates = options.get("date_from_meta")
    for key, field in (("as_creation", "created"), ("as_update", "updated")):
        if dates is not None and dates.get(key) == "date":
            dates[key] = f"date.{field}"
            messages.append(f"rss: date_from_meta.{key} reads date.{field} (post dates are mappings)")
    return messages


def reset_feed_entries(config: Any) -> None:
    """Empty the RSS plugin's per-build lists (call from `on_config`).

    mkdocs-rss-plugin 1.19 collects the pages it has seen and the feed entries in lists it creates
    at startup and never empties, and serve keeps the plugin across rebuilds: every rebuild appended
    the site again, so the served feeds listed each post once per rebuild."""
    plugins = getattr(config, "plugins", None) or {}
    for plugin in plugins.values() if hasattr(plugins, "values") else ():
        if not type(plugin).__module__.startswith("mkdocs_rss_plugin"):
            continue
        lists = [getattr(plugin, "pages_to_filter", None)]
        lists += [
            getattr(getattr(plugin, name, None), "entries", None) for name in ("feed_created", "feed_updated")
        ]
        for items in lists:
            if isinstance(items, list):
                items.clear()


_FRESH_EXCERPTS = False


def fresh_excerpts() -> None:
    """Make material's blog render each excerpt as a document of its own (call from `on_config`,
    before kernelnotes.site_cache patches the same method).

    material keeps one Markdown parser per post's excerpt and converts it again for each listing
    that shows the post, never resetting it: Python-Markdown's footnotes count the references they
    have seen, so the second listing got `fnref2:1` where the first got `fnref:1`. A page's bytes
    then depended on how many listings the build had rendered before it. (Not undone: footnotes'
    UNIQUE_IDS option, off by default, numbers documents by how many resets came before.)"""
    global _FRESH_EXCERPTS
    try:
        from material.plugins.blog.structure import Excerpt
    except ImportError:
        return
    if _FRESH_EXCERPTS:
        return
    _FRESH_EXCERPTS = True
    original = Excerpt.render

    def render(self: Any, page: Any, separator: str) -> Any:
        self.md.reset()
        return original(self, page, separator)

    Excerpt.render = render


def hide_notebooks_from_blog(files: Any, config: Any) -> list[Any]:
    """Exclude notebooks under the posts folder for the blog's `on_files`; return them for `show_notebooks`.

    Call between mkdocs-jupyter's `on_files` (priority 0) and the blog's (-50), e.g. at -40.
    """
    from mkdocs.structure.files import InclusionLevel  # only when mkdocs runs

    prefix = _posts_prefix(config)
    if prefix is None:
        return []
    hidden = []
    for file in files:
        if file.src_uri.startswith(prefix) and file.src_uri.endswith(".ipynb"):
            hidden.append((file, file.inclusion))
            file.inclusion = InclusionLevel.EXCLUDED
    return hidden


def show_notebooks(hidden: list[Any]) -> None:
    """Undo `hide_notebooks_from_blog` after the blog's `on_files` (priority below -50, e.g. -60)."""
    for file, inclusion in hidden:
        file.inclusion = inclusion


def _is_post(page: Any) -> bool:
    try:
        from material.plugins.blog.structure import Post
    except ImportError:  # pragma: no cover - material is a dependency
        return False
    return isinstance(page, Post)


def prepare_post(page: Any, markdown: str) -> str:
    """Call from `on_page_markdown` (before the blog's, which runs at -50); returns the markdown.

    For a blog post: reading time unless the note sets `readtime:`; `page.meta["date"]` as a mapping
    with `created` and `updated` (the RSS plugin reads `date.created` / `date.updated` and would
    otherwise fall back to the build time); a feed description without math or H1; an excerpt
    separator when the note has none. Other pages pass through unchanged. Safe to call twice.
    """
    if not _is_post(page):
        return markdown
    meta: MutableMapping[str, Any] = page.meta
    if meta.get("readtime") is None:
        page.config.readtime = reading_time(markdown)
    created = page.config.date.created
    updated = page.config.date.get("updated") or created
    previous = meta.get("date")
    meta["date"] = {
        **(previous if isinstance(previous, dict) else {}),
        "created": created,
        "updated": updated,
    }
    rss_meta = meta.get("rss")
    rss: dict[str, Any] = rss_meta if isinstance(rss_meta, dict) else {}
    if not rss.get("feed_description"):
        # feeds carry the description as HTML (RSS <description>, JSON Feed content_html): escape the text
        text = feed_description(markdown, meta.get("description"))
        meta["rss"] = {**rss, "feed_description": html.escape(text, quote=False)}
    return ensure_excerpt_separator(markdown)
