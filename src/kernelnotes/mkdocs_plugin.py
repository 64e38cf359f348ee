"""The mkdocs plugin: a thin adapter that hands mkdocs' events to the core.

Kept thin on purpose (mkdocs-material is in maintenance mode; this is the part a move to another
site generator would replace). Results reach the page through the fence (kernelnotes.mdext and
kernelnotes.fence), which works without this plugin too; what only the plugin adds is listed in the
README ("What the mkdocs plugin adds"): executing blocks during the build, the report page, figures
published as files, CJK reading time and feed dates, and the blog guards of kernelnotes.blog.
Per-build state is reset in `on_config`, so `mkdocs serve` rebuilds never see a previous build's
results; only the worker processes live on between rebuilds, and they restart when the project's
code changes and reset their namespaces for every session.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mkdocs.config import config_options as c
from mkdocs.config.base import Config
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, CombinedEvent, event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from kernelnotes import blog, site_cache, site_metadata, site_writes
from kernelnotes.app import App
from kernelnotes.fence import ResultsView
from kernelnotes.i18n import translator
from kernelnotes.parse import parse_file
from kernelnotes.pipeline import Outcome, Pipeline
from kernelnotes.report import fill_report, report_markdown
from kernelnotes.results import Figure
from kernelnotes.safetext import terminal_text
from kernelnotes.serve_preview import Built, Preview, watched_roots
from kernelnotes.settings import DEVICE_CHOICES, SECTION, SettingsError

log = logging.getLogger("mkdocs.plugins.kernelnotes")
FIGURES_DIR = "assets/kernelnotes/figures"
DOWNLOADS_DIR = "assets/kernelnotes/downloads"  # each note as a notebook and a script (kn export)
# labels are messages of the site's language (kernelnotes.i18n): "下载 Notebook" in zh
DOWNLOADS = (
    ("ipynb", "Download notebook", "notebook-outline"),
    ("py", "Download Python script", "language-python"),
)


def _option(name: str) -> Any:
    """A config option typed and defaulted from the one table of settings (kernelnotes.settings)."""
    kind, default = SECTION[name]
    if kind is list:
        return c.Type(list, default=[])
    if name == "device":
        return c.Choice(DEVICE_CHOICES, default=default)
    if kind is float:
        return c.Type((int, float), default=default)
    return c.Optional(c.Type(kind)) if default is None else c.Type(kind, default=default)


class KernelNotesConfig(Config):
    enabled = _option("enabled")
    db = _option("db")
    snippets_dir = _option("snippets_dir")
    plugins_dir = _option("plugins_dir")
    execute = _option("execute")
    strict = _option("strict")
    device = _option("device")
    jobs = _option("jobs")
    timeout = _option("timeout")
    memory_limit_mb = _option("memory_limit_mb")
    report_page = _option("report_page")
    results_dir = _option("results_dir")
    categories = _option("categories")
    max_note_mb = _option("max_note_mb")
    site_cache = _option("site_cache")


class KernelNotesPlugin(BasePlugin[KernelNotesConfig]):
    def __init__(self) -> None:
        self.app: App | None = None
        self.pipeline: Pipeline | None = None
        self.outcomes: dict[str, list[Outcome]] = {}
        self.report: list[Outcome] | None = None  # the report page's rows (its tables go in as HTML)
        self.serving = False
        self._hidden_notebooks: list[Any] = []
        self._index_problems: list[Any] = []  # this build's index update found them; said in on_files
        self.figures: dict[str, bytes] = {}  # published file name -> content, written after the build
        self.downloads: set[str] = set()  # notes (src_uri) whose pages link to their exports
        self._figure_base = f"/{FIGURES_DIR}/"
        self._site_cache_path: Path | None = None
        self._exports: dict[str, dict[str, str]] = {}  # export key -> text per format (serve keeps it)
        self.preview: Preview | None = None  # serve: an edited note's page before the full rebuild
        self._linked: set[str] | None = None  # figures linked by the page being rendered (site cache)
        self._built: dict[str, Any] = {}  # this build's files, navigation and environment (serve)

    def on_startup(self, *, command: str, dirty: bool) -> None:
        self.serving = command == "serve"
        self.preview = (
            Preview(self._preview_results, self._write_figures) if self.serving and not dirty else None
        )

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig | None:
        self.outcomes = {}  # fresh state for every build, including serve rebuilds
        self.report = None
        self.figures = {}
        self.downloads = set()
        if "pymdownx.superfences" in config.markdown_extensions:
            # superfences rejects a fence with options it does not know (session, title...) and prints
            # the block as a paragraph, raw HTML included; relaxed, it highlights the code
            config.mdx_configs.setdefault("pymdownx.superfences", {})["relaxed_headers"] = True
        self._figure_base = (urlsplit(config.site_url or "").path or "/").rstrip("/") + f"/{FIGURES_DIR}/"
        for message in blog.derive_feed_settings(config):  # the feed follows blog_dir, not a copy of it
            log.debug(message)
        blog.reset_feed_entries(config)  # serve keeps the RSS plugin, and its lists, across rebuilds
        blog.fresh_excerpts()  # with the site cache off too (the cache installs it itself)
        self._configure_site_cache(config)
        if not self.config.enabled:
            return config
        extensions = config.markdown_extensions
        if "pymdownx.superfences" not in extensions:
            extensions.append("pymdownx.superfences")
        if "kernelnotes.mdext" not in extensions:
            extensions.append("kernelnotes.mdext")  # after superfences: it adds the result fence
        config.mdx_configs.setdefault("kernelnotes.mdext", {})["config"] = config.config_file_path
        if "pymdownx.snippets" in extensions:
            # one include resolver: kernelnotes.mdext resolves `--8<--` with the index's rules
            extensions.remove("pymdownx.snippets")
            log.info("kernelnotes: pymdownx.snippets replaced by kernelnotes.mdext's includes")
        try:
            app = App.load(config=Path(config.config_file_path), notes=Path(config.docs_dir))
        except SettingsError as exc:
            raise PluginError(str(exc)) from exc
        if self.app is None or app.settings != self.app.settings:
            self._close()  # serve keeps this plugin across rebuilds: an edited option needs a new app
            self.app = app
        return config

    def _configure_site_cache(self, config: MkDocsConfig) -> None:
        if self.config.site_cache:
            site_cache.install()
            site_cache.configure(config, page_salt=self._page_salt, effects=_FigureEffects(self))
            site_cache.load(self._site_cache_file(config))
        else:
            site_cache.uninstall()
        if self.config.site_cache and self.serving:
            site_writes.install()  # a rebuild writes only the files whose bytes changed
        else:
            site_writes.uninstall()

    def _site_cache_file(self, config: MkDocsConfig) -> Path:
        return Path(config.config_file_path).parent / Path(self.config.db).parent / "cache" / "site.json"

    def _page_salt(self, page: Page) -> str:
        """What a page's HTML depends on besides its Markdown: the results shown in it."""
        return self._results_sig(page.file.src_uri)

    def _results_sig(self, src_uri: str) -> str:
        """The identity of the results shown for a note (a stored result never changes)."""
        return repr(
            [
                (
                    o.key,
                    o.stale,
                    o.result.created_at if o.result else "",
                    [(r.created_at, s) for r, s in o.others],
                )
                for o in self.outcomes.get(src_uri) or []
            ]
        )

    def on_pre_build(self, config: MkDocsConfig) -> None:
        """Bring the note index up to date and report each note's problems as one line."""
        if self.preview is not None and site_writes.STATE.installed:  # before anything is read
            self.preview.begin(watched_roots(config, self._watched(config)), config.docs_dir)
        if not self.config.enabled or self.app is None:
            return
        for line in self.app.open_index(verify=True).notices:  # a corrupt index: moved aside, rebuilt
            log.warning(line)
        self._index_problems = self.app.update_index().problems

    def _on_files(self, files: Files, *, config: MkDocsConfig) -> Files:
        """Leave out posts material's blog would crash on; run every note's snippets up front
        (cached ones cost nothing), hand the outcomes to the fence, add the execution report page."""
        pages = {file.src_uri for file in files.documentation_pages()}
        messages = site_metadata.exclude_yaml_bombs(files) + blog.exclude_invalid_posts(
            files, config, self.config.categories
        )
        left_out = pages - {file.src_uri for file in files.documentation_pages()}
        for problem in self._index_problems:
            if problem.path in left_out:
                continue  # the same front matter, said once: by the line that says the site leaves it out
            # errors become warnings, so `mkdocs build --strict` fails on a broken note
            (log.warning if problem.severity == "error" else log.info)(str(problem))
        self._index_problems = []
        for message in messages:
            log.warning(message)  # --strict fails; serve goes on without the broken note
        if not self.config.enabled or self.app is None:
            return files
        pipeline = self._pipeline()
        notes = self.app.index.parsed_notes(self.app.resolver)  # parsed once, by the index update
        before = pipeline.executed
        outcomes = pipeline.run(notes, progress=self._progress(pipeline, notes))
        log.info(
            f"kernelnotes: {len(outcomes)} blocks, {pipeline.executed - before} executed, "
            f"{sum(o.cached for o in outcomes)} from cache"
        )
        for outcome in outcomes:
            self.outcomes.setdefault(outcome.note_path, []).append(outcome)
            if outcome.failed:
                log.warning(
                    terminal_text(
                        f"{outcome.note_path}:{outcome.snippet.start_line}: snippet failed: {outcome.failure_line()}"
                    )
                )
        if self.serving:  # the author's next code edit finds a worker with torch imported
            pipeline.warm_up(notes)
        ResultsView.activate(ResultsView(self.app, outcomes, self._figure_link))
        if self.config.report_page and not files.get_file_from_path(self.config.report_page):
            self.report = outcomes
            report = File.generated(
                config, self.config.report_page, content=report_markdown(outcomes, self.app.settings.language)
            )
            report.generated_by = "kernelnotes"
            files.append(report)
        return files

    def _progress(self, pipeline: Pipeline, notes: list[Any]) -> Any:
        """A callback that logs each executed block as `blocks done/total` (long rebuilds show life)."""
        total = sum(len(pipeline.snippets(note)) for note in notes)
        done, ran = [0], [pipeline.executed]

        def progress(outcome: Outcome) -> None:
            done[0] += 1
            if pipeline.executed > ran[0] and outcome.result is not None:  # this one ran just now
                ran[0] = pipeline.executed
                log.info(
                    f"kernelnotes: block {done[0]}/{total} ran: {outcome.note_path}:"
                    f"{outcome.snippet.start_line} ({outcome.result.duration:.2f} s)",
                    extra={"kn_progress": True},  # shown during serve's preview too
                )

        return progress

    # material's blog reads every page under posts/ as a post (priority -50) and cannot read a
    # notebook: hide notebooks from it just before, and show them again just after.
    @event_priority(-40)
    def _hide_notebooks(self, files: Files, *, config: MkDocsConfig) -> None:
        self._hidden_notebooks = blog.hide_notebooks_from_blog(files, config)

    @event_priority(-60)
    def _show_notebooks(self, files: Files, *, config: MkDocsConfig) -> None:
        blog.show_notebooks(self._hidden_notebooks)
        self._hidden_notebooks = []
        if self.config.site_cache:
            site_cache.index_blog_posts(config.plugins.values())  # material's blog listed its posts

    on_files = CombinedEvent(_on_files, _hide_notebooks, _show_notebooks)

    # Metadata is untrusted text: cleaned first, plain for the feeds, escaped once for HTML (see
    # kernelnotes.site_metadata for why these three points).
    @event_priority(60)
    def _clean_meta(self, markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        site_metadata.clean_meta(page)
        return site_metadata.title_heading(page, markdown)

    @event_priority(-70)  # just before the RSS plugin (-75) reads the title
    def on_page_content(self, html: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        site_metadata.for_feeds(page)
        if self.app is not None and page.file.generated_by == "kernelnotes" and self.report is not None:
            html = fill_report(
                html, self.report, self.app.settings.language, lambda n: self._href(n, page, files)
            )
        return html

    def _href(self, note_path: str, page: Page, files: Files) -> str | None:
        """A note's URL relative to `page`; None when the note is not a page of this site."""
        file = files.get_file_from_path(note_path)
        if file is None or not file.is_documentation_page():
            return None
        if file.inclusion.is_excluded() and not self.serving:  # a draft: previewed, not published
            return None
        return file.url_relative_to(page.file)

    # What serve's preview renders a page with: the navigation and environment as every plugin left them.
    @event_priority(-10_000)
    def on_nav(self, nav: Any, *, config: MkDocsConfig, files: Files) -> Any:
        if self.preview is not None:
            self._built["nav"] = nav
        return nav

    @event_priority(-10_000)
    def _remember_env(self, env: Any, *, config: MkDocsConfig, files: Files) -> Any:
        if self.preview is not None:
            self._built.update(env=env, files=files)
        return env

    @event_priority(200)  # before the tags plugin renders its listings (its on_env is at 100)
    def _env(self, env: Any, *, config: MkDocsConfig, files: Files) -> Any:
        site_metadata.install(env, files)
        if self.config.site_cache:
            site_cache.cache_templates(env, config, pages=self.serving)  # serve: pages too
        return env

    on_env = CombinedEvent(_env, _remember_env)

    # Before every other plugin (the RSS plugin reads `date` in its own on_page_markdown, the blog
    # reads the reading time at -50): reading time, feed dates and description, excerpt separator.
    @event_priority(50)
    def _prepare_post(self, markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        return blog.prepare_post(page, markdown)

    def _figure_link(self, figure: Figure) -> str:
        """Publish a figure as a file (content-addressed) and return its site-absolute URL."""
        name, data = _figure_file(figure)
        self.figures[name] = data
        if self._linked is not None:
            self._linked.add(name)
        return self._figure_base + name

    def _download_links(self, markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        """Offer a page with executed blocks as a notebook and a script (overrides/partials/actions.html
        shows `page.meta.kernelnotes_downloads`); the files are written after the build."""
        if page.file.src_uri in self.outcomes and self.app is not None:
            stem = page.file.src_uri.rsplit(".", 1)[0]
            t = translator(self.app.settings.language)
            page.meta["kernelnotes_downloads"] = [
                {
                    "url": f"{DOWNLOADS_DIR}/{stem}.{fmt}",
                    "label": t.gettext(label),
                    "icon": icon,
                    "format": fmt,
                }
                for fmt, label, icon in DOWNLOADS
            ]
            self.downloads.add(page.file.src_uri)
        return markdown

    on_page_markdown = CombinedEvent(_clean_meta, _prepare_post, _download_links)

    def _write_downloads(self, config: MkDocsConfig) -> None:
        """Export the pages that link to downloads, from this build's outcomes (no block runs again).

        An export is a pure function of the note's text, its includes and the results shown, so it
        is kept by a hash of those (in the process for serve, on disk for the next build): a save
        exports only the note it changed."""
        if not self.downloads or self.app is None:
            return
        from kernelnotes import export

        docs = Path(config.docs_dir)
        shown = Path(os.path.relpath(docs, Path(config.config_file_path).parent)).as_posix()  # e.g. "notes"
        cache = self._site_cache_file(config).parent / "exports"
        code = hashlib.sha256(Path(export.__file__).read_bytes()).hexdigest()
        notes = self.app.index.parsed_notes(self.app.resolver, sorted(self.downloads))
        used = set()
        for note in notes:
            text = (docs / note.path).read_text(encoding="utf-8")
            key = hashlib.sha256(
                repr(
                    (
                        code,
                        text,
                        shown,
                        note.path,
                        sorted(note.includes.items()),
                        self._results_sig(note.path),
                    )
                ).encode("utf-8", "surrogatepass")
            ).hexdigest()
            texts = self._exports.get(key) or _read_exports(cache, key)
            if texts is None:
                made = export.export_note(note, text, self.outcomes[note.path], f"{shown}/{note.path}")
                for problem in made.problems:
                    log.debug(str(problem))  # failed blocks were warned about; the rest is for `kn export`
                texts = {fmt: made.text(fmt) for fmt, _, _ in DOWNLOADS}
                _write_exports(cache, key, texts)
            self._exports[key] = texts
            used.add(key)
            stem = Path(config.site_dir, DOWNLOADS_DIR, note.path.rsplit(".", 1)[0])
            for fmt, content in texts.items():
                site_writes.write(
                    stem.with_name(f"{stem.name}.{fmt}"), content.encode("utf-8"), f"{key}.{fmt}"
                )
        if not self.serving:  # keep what this build used; serve's edits are pruned by the next build
            self._exports = {k: v for k, v in self._exports.items() if k in used}
            for old in cache.glob("*.*") if cache.is_dir() else ():
                if old.name.split(".", 1)[0] not in used:
                    old.unlink(missing_ok=True)

    @event_priority(-100)  # after the RSS plugin wrote its feeds
    def _fix_json_feeds(self, *, config: MkDocsConfig) -> None:
        site_metadata.unescape_json_feed_tags(config)

    def _post_build(self, *, config: MkDocsConfig) -> None:
        self._write_downloads(config)
        self._write_figures(config)
        ResultsView.activate(None)
        if self.config.site_cache:
            log.info(f"kernelnotes: site cache: {site_cache.summary() or 'unused'}")
            self._site_cache_path = self._site_cache_file(config)
            if not self.serving:  # serve saves once, when it stops: writing costs a save its time
                site_cache.save(self._site_cache_path)
            else:
                site_cache.warm_up()
                site_cache.freeze_startup()
        failed = [o for group in self.outcomes.values() for o in group if o.failed]
        if not self.serving:
            self._close()
        # Raised, not logged: `--strict -q` hides warnings, and a failed snippet must still fail it.
        if failed and (self.config.strict or config.strict):
            where = ", ".join(f"{o.note_path}:{o.snippet.start_line}" for o in failed[:10])
            raise PluginError(f"{len(failed)} snippet(s) failed: {where}")

    @event_priority(-1000)  # last: after every plugin wrote its files
    def _sweep(self, *, config: MkDocsConfig) -> None:
        site_writes.sweep()  # serve: what a clean build would not have written is removed
        if (
            self.preview is not None
            and site_writes.STATE.installed
            and {"files", "nav", "env"} <= self._built.keys()
        ):
            self.preview.remember(Built(config=config, **self._built))
        self._built = {}

    on_post_build = CombinedEvent(_fix_json_feeds, _post_build, _sweep)

    def on_serve(self, server: Any, *, config: MkDocsConfig, builder: Any) -> Any:
        """Rebuild when a snippet file, a kernel or a theme override changes, not only a note; show
        an edited note's page before the rest of the site is rebuilt (kernelnotes.serve_preview)."""
        for path in self._watched(config):
            server.watch(str(path))
        if self.preview is not None and site_writes.STATE.installed:
            self.preview.attach(server, builder)
        return server

    def _watched(self, config: MkDocsConfig) -> list[Path]:
        """What serve watches besides the notes and mkdocs.yml: snippet files, kernels and plugins;
        the files mkdocs.yml INHERITs from and the theme's custom_dir (mkdocs watches those only
        with --watch-theme)."""
        found: list[Path | None] = list(site_cache.config_files(Path(config.config_file_path))[1:])
        if self.app is not None and self.config.enabled:
            settings = self.app.settings
            found += [settings.snippets_dir, settings.root / "kernels", settings.plugins_dir]
        if config.theme.custom_dir:
            found.append(Path(config.theme.custom_dir))
        return [p for p in found if p is not None and p.exists()]

    def _preview_results(self, notes: list[str], config: MkDocsConfig) -> Callable[[bool], None]:
        """Make this plugin show the current results of `notes` (paths in docs_dir) in a preview of
        their pages: parse them (the index is the full build's to update: it reports problems),
        run their blocks (cached ones cost nothing). Returns what writes their figures after the
        pages rendered (their downloads are the full build's: exports read the index's parse).
        Raises when a note cannot be previewed (the full build says why)."""
        if not self.config.enabled or self.app is None:
            return lambda ok: None
        parsed = []
        for rel in notes:
            path = Path(config.docs_dir, rel)
            if path.stat().st_size > self.app.settings.max_note_mb * 1e6:
                raise ValueError(f"{rel}: larger than max_note_mb")
            result = parse_file(path, rel, self.app.resolver)
            if result.note is None or any(p.severity == "error" for p in result.problems):
                raise ValueError(f"{rel}: has problems")
            parsed.append(result.note)
        pipeline = self._pipeline()
        outcomes = pipeline.run(parsed, progress=self._progress(pipeline, parsed), hold=True)
        for rel in notes:
            self.outcomes.pop(rel, None)
        for outcome in outcomes:
            self.outcomes.setdefault(outcome.note_path, []).append(outcome)
        shown = [o for group in self.outcomes.values() for o in group]
        ResultsView.activate(ResultsView(self.app, shown, self._figure_link))

        def finish(ok: bool) -> None:
            ResultsView.activate(None)
            if ok:
                self._write_figures(config)

        return finish

    def _write_figures(self, config: MkDocsConfig) -> None:
        """The figures the rendered pages link to (serve: only those whose bytes changed)."""
        folder = Path(config.site_dir) / FIGURES_DIR
        for name, data in self.figures.items():
            site_writes.write(folder / name, data)

    def on_shutdown(self) -> None:
        if self.serving and self._site_cache_path is not None:
            site_cache.save(self._site_cache_path)
        site_writes.uninstall()
        self._close()

    def _pipeline(self) -> Pipeline:
        assert self.app is not None
        if self.pipeline is None:
            self.pipeline = self.app.pipeline()
        return self.pipeline

    def _close(self) -> None:
        ResultsView.activate(None)
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        if self.app is not None:
            self.app.close()
            self.app = None


def _figure_file(figure: Figure) -> tuple[str, bytes]:
    """A figure's published file: a name from its content, and its bytes."""
    data = base64.b64decode(figure.data) if figure.format == "png" else figure.data.encode("utf-8")
    return f"{hashlib.sha256(data).hexdigest()[:20]}.{figure.format}", data


class _FigureEffects(site_cache.RenderEffects):
    """The figures a page's render published: a cached render publishes them again (they are among
    the results of the page's own blocks, which key the cached render)."""

    def __init__(self, plugin: KernelNotesPlugin) -> None:
        self.plugin = plugin

    def begin(self) -> None:
        self.plugin._linked = set()

    def end(self) -> list[str]:
        names, self.plugin._linked = self.plugin._linked or set(), None
        return sorted(names)

    def replay(self, page: Any, data: Any) -> None:
        wanted = set(data or ())
        for outcome in self.plugin.outcomes.get(page.file.src_uri) or [] if wanted else []:
            for result in [outcome.result, *(r for r, _ in outcome.others)]:
                for figure in result.figures if result is not None else []:
                    name, content = _figure_file(figure)
                    if name in wanted:
                        self.plugin.figures[name] = content


def _read_exports(folder: Path, key: str) -> dict[str, str] | None:
    try:
        return {fmt: (folder / f"{key}.{fmt}").read_text("utf-8") for fmt, _, _ in DOWNLOADS}
    except OSError:
        return None


def _write_exports(folder: Path, key: str, texts: dict[str, str]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for fmt, content in texts.items():
            tmp = folder / f"{key}.{fmt}.tmp"
            tmp.write_text(content, "utf-8")
            tmp.replace(folder / f"{key}.{fmt}")
    except OSError as error:  # a read-only cache costs time, never the build
        log.debug(f"kernelnotes: export cache not written in {folder}: {error}")
