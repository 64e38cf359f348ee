"""Front-matter metadata on the site: plain text for the feeds, escaped once for every HTML page.

The root cause: MkDocs' Jinja environment does not autoescape, and mkdocs-material prints
`page.title`, `page.meta.title` and `page.meta.description` raw (in `<title>`, `<meta content>`,
headings, listings, prev/next links, the tags page), as does its search plugin (which stores titles
as HTML) and its blog (which writes `# {title}` into each excerpt's Markdown). MkDocs itself is not
consistent either: a title from front matter is plain text, one taken from the rendered H1 is HTML.

The fix is in one place, three steps of the kernelnotes plugin, for every page:

1. `clean_meta` (`on_page_markdown`, before everyone): control characters out of the metadata,
   so feeds stay valid XML and no page carries ESC sequences; tags escaped for the tags plugin,
   which prints their names into tables of contents (HTML) as they are; and `title_heading`: a
   post titled only in front matter gets an H1 of Markdown-inert text, which the blog's excerpt
   then uses instead of pasting the raw title into Markdown;
2. `for_feeds` (`on_page_content`, just before the RSS plugin reads pages at -75): titles are plain
   text, which the RSS template escapes (and the JSON feed carries as is); tags and categories,
   which it prints raw, are escaped (and unescaped again in the JSON feed after the build);
3. `escape_pages` (`on_env`, after every page was read and before any template renders): titles,
   `meta.title`, `meta.description` and `meta.subtitle` become `markupsafe.Markup` escaped once. A
   non-autoescaping template prints them as text; `|e` and autoescaping templates leave Markup as
   it is, so nothing is escaped twice. Jinja's `striptags` filter unescapes what it strips, so it
   is replaced by one that returns escaped text.

Also here, because it is about front matter the site reads with plain PyYAML: `exclude_yaml_bombs`.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterable
from typing import Any

import yaml
from markupsafe import Markup

from kernelnotes import boundedyaml
from kernelnotes.blog import _is_post
from kernelnotes.parse import FRONT_MATTER, split_code
from kernelnotes.safetext import html_text, plain_text, terminal_text

HTML_META_KEYS = ("title", "description", "subtitle")  # printed into HTML by material's templates
_MARKDOWN_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")  # ASCII punctuation, `<` and `&` included
_ATX_H1 = re.compile(r"^ {0,3}#(?:[ \t]|$)", re.M)
_SETEXT_H1 = re.compile(r"^ {0,3}\S.*\n {0,3}=+[ \t]*$", re.M)


def exclude_yaml_bombs(files: Any) -> list[str]:
    """Leave out pages whose front matter is a YAML bomb; one line each. Call first in `on_files`.

    MkDocs, material's blog and the tags plugin load front matter with plain PyYAML: the load is
    instant, but walking the result (tags, templates, the index's JSON) never ends.
    """
    messages = []
    for file in list(files.documentation_pages()):
        if not file.src_uri.endswith(".md") or not file.abs_src_path:
            continue
        try:
            with open(file.abs_src_path, encoding="utf-8-sig", errors="replace") as handle:
                match = FRONT_MATTER.match(handle.read())
        except OSError:
            continue  # mkdocs reports an unreadable page itself
        if not match or "*" not in (match.group(1) or ""):
            continue  # no alias, nothing to expand
        try:
            boundedyaml.load(match.group(1), yaml.SafeLoader)
        except boundedyaml.AliasBombError as exc:
            line = boundedyaml.front_matter_line(exc, default=1)
            messages.append(
                terminal_text(
                    f"{file.src_uri}:{line}: error: front matter: {exc.problem} (write the values out"
                    " instead of YAML aliases); the site leaves this page out"
                )
            )
            files.remove(file)
        except yaml.YAMLError:
            continue  # an ordinary YAML error: reported by whoever reads the page
    return messages


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str) and not isinstance(value, Markup):
        return plain_text(value)
    if depth < 3 and isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    if depth < 3 and isinstance(value, dict):
        return {k: _clean(v, depth + 1) for k, v in value.items()}
    return value


def clean_meta(page: Any) -> None:
    """Drop control characters from every text value of the page's front matter (in place).

    Tags become escaped `Markup` here: the tags plugin reads them next and puts their names into
    pages and tables of contents as they are (a table of contents holds HTML); they stay escaped.
    """
    meta = page.meta
    for key in list(meta):
        meta[key] = _clean(meta[key])
    if isinstance(meta.get("tags"), list):
        meta["tags"] = [html_text(t) if isinstance(t, str) else t for t in meta["tags"]]


def markdown_text(value: Any) -> str:
    """Text that Markdown renders as itself: every ASCII punctuation character as a numeric entity.

    Entities, not backslashes: with arithmatex `\\(` starts a formula, and extensions differ in
    what they unescape; an entity is text to all of them.
    """
    return _MARKDOWN_PUNCTUATION.sub(lambda m: f"&#{ord(m.group())};", plain_text(value))


def title_heading(page: Any, markdown: str) -> str:
    """A post whose title is only in its front matter gets it as an H1 written as Markdown text.

    Otherwise material's blog writes `# {title}` into the excerpt's Markdown as it is, and Markdown
    in a title becomes HTML on the home page: a `javascript:` link, or attributes such as
    `{: onclick=... }` through attr_list. Call from `on_page_markdown` before the blog (-50).
    """
    title = page.meta.get("title")
    if not title or not _is_post(page):
        return markdown
    prose = split_code(markdown)[0]
    if _ATX_H1.search(prose) or _SETEXT_H1.search(prose):
        return markdown
    return f"# {markdown_text(title)}\n\n{markdown}"


def for_feeds(page: Any) -> None:
    """Title as plain text, tags and categories escaped, for the RSS plugin (which reads them next).

    Its template escapes titles (`|e`) but prints categories raw (autoescape is off: the template's
    name ends in .jinja2), so a tag `A & B` would make the feed invalid XML. A title MkDocs took
    from the rendered H1 is HTML. `unescape_json_feed_tags` undoes the tags' escaping in JSON.
    """
    for key in ("tags", "categories"):
        if isinstance(page.meta.get(key), list):
            page.meta[key] = [html_text(t) if isinstance(t, str) else t for t in page.meta[key]]
    if isinstance(page.title, Markup) or "title" in page.meta:
        return
    rendered = getattr(page, "_title_from_render", None)
    if rendered and page.title == rendered:
        page.title = plain_text(html.unescape(rendered))


def unescape_json_feed_tags(config: Any) -> None:
    """JSON Feed tags are text: undo the escaping `for_feeds` gave the RSS template. Call after the
    RSS plugin's `on_post_build`."""
    rss = config.plugins.get("rss") if hasattr(config.plugins, "get") else None
    if rss is None or not rss.config.get("json_feed_enabled"):
        return
    names = rss.config.feeds_filenames
    for name in (names.json_created, names.json_updated):
        path = os.path.join(config.site_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            feed = json.load(handle)
        for item in feed.get("items", []):
            item["tags"] = [html.unescape(t) if isinstance(t, str) else t for t in item.get("tags") or []]
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(feed, handle, indent=4 if rss.config.get("pretty_print") else None)


def escape_page(page: Any) -> None:
    """Titles and the metadata material prints raw, escaped once for HTML (idempotent)."""
    if page.title is not None:
        page.title = html_text(page.title)
    for key in HTML_META_KEYS:
        value = page.meta.get(key)
        if isinstance(value, str):
            page.meta[key] = html_text(value)


def escape_pages(pages: Iterable[Any]) -> None:
    for page in pages:
        if page is not None:
            escape_page(page)


def striptags(value: Any) -> Markup:
    """Jinja's `striptags`, but the text it returns stays escaped (the original unescapes it)."""
    return Markup.escape(Markup(str(value)).striptags())


def install(env: Any, files: Any) -> None:
    """Call from `on_env` with a high priority: escape every page, replace `striptags`."""
    escape_pages(file.page for file in files.documentation_pages())
    env.filters["striptags"] = striptags
