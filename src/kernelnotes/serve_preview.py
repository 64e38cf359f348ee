"""Under `mkdocs serve`, an edited note's page is shown before the rest of the site is rebuilt.

A save makes serve rebuild every page (seconds at a few hundred notes), and the browser reloads
only once all of them are written. When the only files changed since the last build began are
notes whose front matter is unchanged, `Preview` first renders just those pages, through the same
mkdocs functions and plugin events a build runs, with the last build's file list, navigation and
theme environment (nothing else serve watches changed); writes them; and reloads the browsers.
Then the full build runs as before.

The full build stays the authority: it writes only the files whose bytes changed
(kernelnotes.site_writes), and when it changed a page — the preview differed, or a listing shows
the note's excerpt, or its title moved — the browsers reload again. So what serve shows ends as
what a clean build makes; a preview is at most early. Anything unexpected (a plugin raising, a
version of mkdocs whose private functions differ) skips the preview and leaves the full build.

While the full build runs, serve answers requests from the folder as it stands (mkdocs would make
them wait): the previewed pages are new, the others at most one build old, and each reloads when
the build changed it. site_writes writes each file by an atomic rename, so no reader sees half.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelnotes import site_cache, site_writes

log = logging.getLogger("mkdocs.plugins.kernelnotes")

MKDOCS_RANGE = ((1, 6), (1, 7))  # the private functions and server fields used below (as site_writes)
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

    def __init__(self, refresh: Callable[[list[str], Any], Callable[[bool], None]]) -> None:
        # refresh(notes, config) brings the plugin's results for these notes (paths in docs_dir) up
        # to date before their pages render; what it returns is called after (True: they rendered)
        self.refresh = refresh
        self.built: Built | None = None
        self.roots: list[str] = []
        self.docs_dir = ""
        self.sources: dict[str, Stat] | None = None  # when the last build began
        self.fronts: dict[str, str | None] = {}  # the notes' front matter then (read lazily, kept)
        self.server: Any = None

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
        """What serve runs for each change: a preview of the edited notes, then the full build."""
        roots = sorted({*self.roots, *map(str, self.server._watched_paths)})
        sources = snapshot(roots)  # before the build reads anything: a later save is seen next time
        shown = self._try_preview(sources) if site_writes.STATE.installed else []
        self.roots = roots
        self._note_sources(sources)
        try:
            builder()  # its clean_directory restarts site_writes' list of changed files
        except BaseException:
            if shown:  # requests wait again, as mkdocs makes them wait after a failed build
                self._new_epoch()
            raise
        pages = [path for path in site_writes.track_changes() if path.endswith(".html")]
        if shown and pages:
            # the build changed a page after the preview (a listing, the preview itself): reload again
            log.info(f"kernelnotes: the rebuild changed {len(pages)} more page(s): browsers reload again")
            log.debug(f"kernelnotes: changed after the preview: {pages[:20]}")
            self._new_epoch()

    def _new_epoch(self) -> None:
        """A version of the site newer than the preview's: browsers reload when the build ends."""
        self.server._wanted_epoch = max(self.server._wanted_epoch + 1, _timestamp())

    def _try_preview(self, sources: dict[str, Stat]) -> list[str]:
        """Preview the changed notes, if that is all that changed; the notes shown."""
        built, self.built = self.built, None  # the full build makes new objects: drop the old ones
        if built is None or self.sources is None:
            return []
        started = time.perf_counter()
        try:
            shown = self._preview(built, self._changed_notes(built, sources))
        except Exception as error:  # the full build that follows reports the note's problem
            log.debug(f"kernelnotes: no preview: {error!r}")
            return []
        if shown:
            self._reload()
            log.info(
                f"kernelnotes: {', '.join(shown)} shown in {time.perf_counter() - started:.2f} s; "
                "rebuilding the site"
            )
        return shown

    def _changed_notes(self, built: Built, sources: dict[str, Stat]) -> list[Any]:
        """The changed files' pages when nothing else changed and their front matter did not."""
        old = self.sources or {}
        # a folder watched only since the last snapshot (a plugin's on_serve adds some): its files
        # are not news; the full build reads them anyway
        added = [r for r in getattr(self.server, "_watched_paths", {}) if r not in self.roots]
        under = tuple(os.path.join(r, "") for r in added)
        changed = [
            p
            for p in sources.keys() | old.keys()
            if sources.get(p) != old.get(p) and not (p not in old and (p in added or p.startswith(under)))
        ]
        if not changed or len(changed) > MAX_NOTES:
            return []
        pages = []
        for path in changed:
            file = _file_at(built.files, path)
            if file is None or file.page is None or not path.endswith(".md") or path not in sources:
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
