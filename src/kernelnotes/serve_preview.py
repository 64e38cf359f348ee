"""Under `mkdocs serve`, the pages an edit changes are shown before the rest of the site is rebuilt.

A save makes serve rebuild every page (seconds at a few hundred notes), and the browser reloads
only once all of them are written. Two steps shorten that wait:

- `Preview`: when the only files changed since the last build began are notes whose front matter
  is unchanged, just those pages are rendered first, through the same mkdocs functions and plugin
  events a build runs, with the last build's file list, navigation and theme environment (nothing
  else serve watches changed); written; and the browsers reload. Then the full build runs.
- `FirstPages`: in the full build, once every page is read (what any page shows of the others is
  known then), the pages an edit of notes can change are built first — the notes, their neighbours,
  the listings that show them or whose notes changed, the tags listings — and the browsers reload
  if any of them changed; then the other pages. This is what shows a title, date or tag edit, a new
  or deleted note, early.

The full build stays the authority: it writes only the files whose bytes changed
(kernelnotes.site_writes), and when it changed a page after the browsers were shown the edit, they
reload again. So what serve shows ends as what a clean build makes; an early page is at most early.
A preview skips itself on any exception (the full build reports the note's problem), and pages go
first only where they can be found (else mkdocs' order); a version of mkdocs other than the one
tested turns both off, and material's blog listings are read only in its tested range.

Once the browsers were shown an edit, serve answers requests from the folder as it stands (mkdocs
would make them wait until the build ends): the pages shown are new, the others at most one build
old, and each reloads when the build changed it. site_writes writes each file by an atomic rename,
so no reader sees half.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelnotes import site_cache, site_writes

log = logging.getLogger("mkdocs.plugins.kernelnotes")

MKDOCS_RANGE = ((1, 6), (1, 7))  # the private functions and server fields used below (as site_writes)
# material's blog internals read by `listings`: in the range the site cache is tested with
_MATERIAL_TESTED = site_cache._in_range(site_cache._version("mkdocs-material"), site_cache.MATERIAL_RANGE)
MAX_NOTES = 3  # more changed notes at once (a checkout, a search-and-replace): just the full build
# mkdocs' front matter: YAML between --- lines, else MultiMarkdown `key: value` lines up to a blank line
_YAML = re.compile(r"\A-{3}[ \t]*\n.*?\n(?:\.{3}|-{3})[ \t]*\n", re.S)
_HEAD = re.compile(r"\A.*?(?:\n[ \t]*\n|\Z)", re.S)

Stat = tuple[int, int]


def front_matter(path: str) -> str | None:
    """What mkdocs reads as a note's metadata, as text (None when the file cannot be read)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    found = _YAML.match(text) or _HEAD.match(text)
    return found[0] if found else ""


def snapshot(roots: Iterable[str]) -> dict[str, Stat]:
    """Every file under the watched paths, with its mtime and size; not hidden files and folders
    (mkdocs leaves them out, includes cannot name them, editors keep swap files there) nor the
    bytecode Python writes when a block imports a snippet module."""
    found: dict[str, Stat] = {}
    for root in roots:
        if os.path.isfile(root):
            st = os.stat(root)
            found[os.path.abspath(root)] = (st.st_mtime_ns, st.st_size)
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            for name in names:
                if name.startswith("."):
                    continue
                path = os.path.abspath(os.path.join(folder, name))
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found[path] = (st.st_mtime_ns, st.st_size)
    return found


@dataclass
class Built:
    """The objects of the last completed build that a page's render reads."""

    config: Any
    files: Any
    nav: Any
    env: Any


class Preview:
    """Wraps serve's builder: preview the edited notes, then run the full build."""

    def __init__(
        self,
        refresh: Callable[[list[str], Any], Callable[[bool], None]],
        publish: Callable[[Any], None],
    ) -> None:
        # refresh(notes, config) brings the plugin's results for these notes (paths in docs_dir) up
        # to date before their pages render; what it returns is called after (True: they rendered)
        self.refresh = refresh
        # publish(config) writes what the pages link to that a build writes only at its end (figures)
        self.publish = publish
        self.built: Built | None = None
        self.roots: list[str] = []
        self.docs_dir = ""
        self.sources: dict[str, Stat] | None = None  # when the last build began
        self.fronts: dict[str, str | None] = {}  # the notes' front matter then (read lazily, kept)
        self.server: Any = None
        self.layout: dict[str, tuple[str, ...]] = {}  # the last build's (see `layout`)
        self.early = False  # this build showed browsers an edit before it ended

    @staticmethod
    def supported() -> bool:
        return site_cache._in_range(site_cache._version("mkdocs"), MKDOCS_RANGE)

    def begin(self, roots: list[str], docs_dir: str) -> None:
        """Note the sources as the first build begins, before it reads them (its on_pre_build)."""
        if self.sources is None:
            self.roots, self.docs_dir = roots, os.path.abspath(docs_dir)
            self._note_sources(snapshot(roots))

    def _note_sources(self, sources: dict[str, Stat]) -> None:
        old = self.sources or {}
        self.sources = sources
        for path, stat in sources.items():  # a note's front matter as this build reads it
            if path.endswith(".md") and (old.get(path) != stat or path not in self.fronts):
                if path.startswith(self.docs_dir + os.sep):
                    self.fronts[path] = front_matter(path)
        for path in [p for p in self.fronts if p not in sources]:
            del self.fronts[path]

    def remember(self, built: Built) -> None:
        """The last build completed: its objects are what a preview renders with."""
        self.built = built
        try:
            from mkdocs.structure.files import InclusionLevel

            pages = built.files.documentation_pages(inclusion=InclusionLevel.is_in_serve)
            self.layout = layout(built.config, pages)
        except Exception as error:  # a blog plugin other than the version tested
            log.debug(f"kernelnotes: no layout: {error!r}")
            self.layout = {}

    def attach(self, server: Any, builder: Callable[[], None]) -> bool:
        """Put the preview in front of serve's builder; False (and nothing changed) where mkdocs'
        server lacks what this relies on."""
        needed = ("builder", "_wanted_epoch", "_visible_epoch", "_epoch_cond", "_watched_paths")
        if not self.supported() or not all(hasattr(server, name) for name in needed):
            log.info("kernelnotes: this mkdocs serve cannot show a note before the full rebuild")
            return False
        self.server = server

        def rebuild() -> None:
            self.rebuild(builder)

        server.builder = rebuild
        return True

    def rebuild(self, builder: Callable[[], None]) -> None:
        """What serve runs for each change: a preview of the edited notes, then the full build,
        which writes the pages the edit changes first (`FirstPages`)."""
        roots = sorted({*self.roots, *map(str, self.server._watched_paths)})
        sources = snapshot(roots)  # before the build reads anything: a later save is seen next time
        # both need site_writes: it tells which pages a build changed, and writes them atomically
        changed = self._changed_paths(sources) if site_writes.STATE.installed else set()
        shown = self._try_preview(changed)
        self.roots = roots
        self._note_sources(sources)
        first = FirstPages(changed, self.layout, self._show_first)
        self.early = bool(shown)
        try:
            with first.installed():
                builder()  # its clean_directory restarts site_writes' list of changed files
        except BaseException:
            if self.early:  # requests wait again, as mkdocs makes them wait after a failed build
                self._new_epoch()
            raise
        pages = _pages(site_writes.track_changes())
        if self.early and pages:
            # the build changed a page after the browsers were shown the edit: reload again
            log.info(f"kernelnotes: the rebuild changed {len(pages)} more page(s): browsers reload again")
            log.debug(f"kernelnotes: changed after the preview: {pages[:20]}")
            self._new_epoch()

    def _show_first(self, config: Any) -> None:
        """The pages the edit changes are written, the rest of the build is not: show them."""
        self.publish(config)
        pages = _pages(site_writes.track_changes())
        if not pages:
            return  # nothing new to see: mkdocs reloads when the build ends, if it must
        if self.early:
            self._new_epoch()
        self._reload()
        self.early = True
        log.info(f"kernelnotes: {len(pages)} page(s) the edit changes shown; writing the others")

    def _new_epoch(self) -> None:
        """A version of the site newer than the one browsers were shown: they reload when it is made
        visible (by mkdocs when the build ends, or `_reload`)."""
        self.server._wanted_epoch = max(self.server._wanted_epoch + 1, _timestamp())

    def _try_preview(self, changed: set[str]) -> list[str]:
        """Preview the changed notes, if that is all that changed; the notes shown."""
        built, self.built = self.built, None  # the full build makes new objects: drop the old ones
        if built is None or self.sources is None:
            return []
        started = time.perf_counter()
        try:
            shown = self._preview(built, self._changed_notes(built, changed))
        except Exception as error:  # the full build that follows reports the note's problem
            log.debug(f"kernelnotes: no preview: {error!r}")
            return []
        if shown and not _pages(site_writes.track_changes()):
            return []  # saved unchanged: the pages are as the browsers have them
        if shown:
            self._reload()
            log.info(
                f"kernelnotes: {', '.join(shown)} shown in {time.perf_counter() - started:.2f} s; "
                "rebuilding the site"
            )
        return shown

    def _changed_paths(self, sources: dict[str, Stat]) -> set[str]:
        """The files changed, added or deleted since the last build began."""
        old = self.sources or {}
        # a folder watched only since the last snapshot (a plugin's on_serve adds some): its files
        # are not news; the full build reads them anyway
        added = [r for r in getattr(self.server, "_watched_paths", {}) if r not in self.roots]
        under = tuple(os.path.join(r, "") for r in added)
        return {
            p
            for p in sources.keys() | old.keys()
            if sources.get(p) != old.get(p) and not (p not in old and (p in added or p.startswith(under)))
        }

    def _changed_notes(self, built: Built, changed: set[str]) -> list[Any]:
        """The changed files' pages when nothing else changed and their front matter did not."""
        if not changed or len(changed) > MAX_NOTES:
            return []
        pages = []
        for path in changed:
            file = _file_at(built.files, path)
            if file is None or file.page is None or not path.endswith(".md") or not os.path.isfile(path):
                return []  # a new, deleted or non-note file: only a full build knows its effects
            if front_matter(path) != self.fronts.get(path):
                return []  # title, date, tags, draft...: listings and navigation change
            pages.append(file.page)
        return pages

    def _preview(self, built: Built, pages: list[Any]) -> list[str]:
        if not pages:
            return []
        from mkdocs.commands.build import _build_page, _populate_page
        from mkdocs.structure.files import InclusionLevel

        config, files = built.config, built.files
        finish = self.refresh([p.file.src_uri for p in pages], config)
        ok = False
        try:
            doc_files = files.documentation_pages(inclusion=InclusionLevel.is_in_serve)
            with _quiet(), site_cache.new_build():
                fresh = [_fresh_page(page, config, files) for page in pages]
                for page in fresh:
                    _populate_page(page, config, files)
                for page in fresh:
                    excluded = page.file.inclusion.is_excluded()
                    _build_page(page, config, doc_files, built.nav, built.env, excluded=excluded)
            ok = True
        finally:
            finish(ok)
        return [p.file.src_uri for p in fresh]

    def _reload(self) -> None:
        server = self.server
        with server._epoch_cond:
            server._visible_epoch = server._wanted_epoch
            server._epoch_cond.notify_all()


MAX_FIRST = 40  # pages written before the browsers reload; an edit that changes more shows them later


class FirstPages:
    """For one serve build, mkdocs' `_build_page` with the pages the edit changes first.

    At the first call every page is read and every plugin has seen it: the changed notes, and the
    pages that show one of them or whose neighbours or listed notes differ from the last build's
    (`layout`), are built; `shown(config)` is called (serve reloads the browsers); then the other
    pages are built in mkdocs' order. Each page is built once, with every plugin event. Of what
    those events do, two things depended on the order: the search index, whose entries are put back
    in mkdocs' order after the last page, and material's excerpts (see kernelnotes.blog's
    `fresh_excerpts`); tests/test_serve_preview.py builds with a random half of the pages first and
    compares every file with mkdocs' order. When finding the pages raises, mkdocs' order is kept."""

    def __init__(
        self, changed: Iterable[str], before: dict[str, tuple[str, ...]], shown: Callable[[Any], None]
    ) -> None:
        self.changed = set(changed)
        self.before = before  # the last build's `layout`
        self.shown = shown
        self.started = False
        self.first: dict[int, Any] = {}  # id(page) -> page, built ahead of mkdocs' order
        self.entries: list[tuple[list[Any], int]] = []  # search indexes' entry lists, their length
        self.added: dict[int, list[list[Any]]] = {}  # id(page) -> the entries it added, per index
        self.real: Callable[..., None] | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        if not self.changed:
            yield
            return
        from mkdocs.commands import build

        self.real = build._build_page
        build._build_page = self
        try:
            yield
        finally:
            build._build_page = self.real

    def __call__(self, page: Any, config: Any, doc_files: Any, *args: Any, **kwargs: Any) -> None:
        if not self.started:
            self.started = True
            self._start(config, doc_files, args, kwargs)
        if id(page) not in self.first:  # else built ahead
            self._build(page, config, doc_files, args, kwargs)
        if self.first and page is doc_files[-1].page:
            self._restore_order(doc_files)

    def _start(self, config: Any, doc_files: Any, args: tuple, kwargs: dict) -> None:
        try:
            pages = first_pages(config, doc_files, self.changed, self.before)
            self.entries = [(entries, len(entries)) for entries in _search_entries(config)]
        except Exception as error:  # a plugin other than the versions tested: mkdocs' order
            log.debug(f"kernelnotes: no pages first: {error!r}")
            return
        if not pages:
            return
        site_writes.track_changes()  # what was written before (404.html, the sitemap) is not news
        self.first = {id(page): page for page in pages}
        for page in pages:
            excluded = page.file.inclusion.is_excluded()
            self._build(page, config, doc_files, args, {**kwargs, "excluded": excluded})
        self.shown(config)

    def _build(self, page: Any, config: Any, doc_files: Any, args: tuple, kwargs: dict) -> None:
        sizes = [len(entries) for entries, _ in self.entries]
        assert self.real is not None
        self.real(page, config, doc_files, *args, **kwargs)
        self.added[id(page)] = [entries[n:] for (entries, _), n in zip(self.entries, sizes)]

    def _restore_order(self, doc_files: Any) -> None:
        for k, (entries, start) in enumerate(self.entries):
            entries[start:] = [
                e for f in doc_files if id(f.page) in self.added for e in self.added[id(f.page)][k]
            ]


def first_pages(
    config: Any, doc_files: Any, changed: set[str], before: dict[str, tuple[str, ...]]
) -> list[Any]:
    """The pages an edit of the files at `changed` (absolute paths) changes, at most MAX_FIRST: the
    notes among them; the pages that show one of them as a neighbour or in a listing, or whose
    neighbours or listed notes differ from `before` (a new, deleted or moved note); and, if any,
    the tags listings."""
    by_src = {f.src_uri: f.page for f in doc_files if f.page is not None}
    notes = [f.src_uri for f in doc_files if f.abs_src_path and os.path.abspath(f.abs_src_path) in changed]
    changed_notes = set(notes)
    now = layout(config, doc_files)
    wanted = notes + [
        src for src, shows in now.items() if before.get(src) != shows or changed_notes.intersection(shows)
    ]
    if not wanted:
        return []  # no page shows a note that changed (mkdocs.yml, a snippet file)
    for plugin in config.plugins.values():  # material's tags: each page that lists tags
        listing_pages = getattr(getattr(plugin, "listings", None), "data", ())
        wanted += sorted(listing.page.file.src_uri for listing in listing_pages)
    return [by_src[src] for src in dict.fromkeys(wanted) if src in by_src][:MAX_FIRST]


def layout(config: Any, doc_files: Iterable[Any]) -> dict[str, tuple[str, ...]]:
    """What each page shows of the others by name: its neighbours (the footer's previous and next
    links), and the notes a blog listing lists."""
    listed = listings(config)
    found: dict[str, tuple[str, ...]] = {}
    for file in doc_files:
        page = file.page
        if page is None:
            continue
        near = [getattr(page, name, None) for name in ("previous_page", "next_page")]
        names = tuple(getattr(getattr(p, "file", None), "src_uri", "") for p in near)
        found[file.src_uri] = names + listed.get(file.src_uri, ())
    return found


def listings(config: Any) -> dict[str, tuple[str, ...]]:
    """Every page of material's blog listings (home, archive, categories, each page of their
    pagination), with the notes it shows (none outside the material versions tested)."""
    found: dict[str, tuple[str, ...]] = {}
    if not _MATERIAL_TESTED:
        return found
    for plugin in config.plugins.values():
        blog = getattr(plugin, "blog", None)
        if blog is None or not hasattr(plugin, "_resolve_views"):
            continue
        for view in plugin._resolve_views(blog):
            posts = [p.file.src_uri for p in view.posts]
            if not plugin._config_pagination(view):
                found[view.file.src_uri] = tuple(posts)
                continue
            step = plugin._config_pagination_per_page(view)
            for at, page in enumerate(view.pages):
                found[page.file.src_uri] = tuple(posts[at * step : at * step + step])
    return found


def _search_entries(config: Any) -> list[list[Any]]:
    """The entry lists of the search indexes (material's, mkdocs' own) a build fills page by page."""
    found = []
    for plugin in config.plugins.values():
        index = getattr(plugin, "search_index", None)
        for name in ("entries", "_entries"):
            entries = getattr(index, name, None)
            if isinstance(entries, list):
                found.append(entries)
                break
    return found


def _pages(paths: list[str]) -> list[str]:
    return [path for path in paths if path.endswith(".html")]


def _timestamp() -> int:
    return round(time.monotonic() * 1000)  # mkdocs.livereload's epochs


def _file_at(files: Any, path: str) -> Any:
    for file in files.documentation_pages():
        if os.path.abspath(file.abs_src_path) == path:
            return file
    return None


def _fresh_page(page: Any, config: Any, files: Any) -> Any:
    """A page object to render the note again. material's blog reads a post in its constructor and
    fills it through the build: a new Post gets the old one's place (parent, neighbours, categories)
    and its resolved links; a plain page is read again by mkdocs itself."""
    try:
        from material.plugins.blog.structure import Post
    except ImportError:
        return page
    if not isinstance(page, Post):
        return page
    post = type(page)(page.file, config)
    for name in ("parent", "previous_page", "next_page"):
        setattr(post, name, getattr(page, name))
    post.categories = list(page.categories)
    for plugin in config.plugins.values():
        blog = getattr(plugin, "blog", None)
        if blog is not None and hasattr(plugin, "_generate_links") and post in getattr(blog, "posts", ()):
            plugin._generate_links(post, config, files)
    return post


class _quiet:
    """Hold back the preview's own mkdocs log lines (the full build right after says them all) but
    block progress; lines from other threads (serve's HTTP requests) pass."""

    def __enter__(self) -> None:
        self.handlers = list(logging.getLogger("mkdocs").handlers)
        self.thread = threading.get_ident()
        for handler in self.handlers:
            handler.addFilter(self.keep)

    def __exit__(self, *exc: object) -> None:
        for handler in self.handlers:
            handler.removeFilter(self.keep)

    def keep(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread or bool(getattr(record, "kn_progress", False))


def watched_roots(config: Any, extra: Iterable[Path | str]) -> list[str]:
    """What serve watches: the notes, mkdocs.yml, its `watch` list and the plugin's own folders."""
    roots = [config.docs_dir, config.config_file_path, *(config.watch or []), *map(str, extra)]
    return [os.path.abspath(r) for r in roots if r and os.path.exists(r)]
