"""The mkdocs plugin: a thin adapter that hands mkdocs' events to the core.

Kept thin on purpose (mkdocs-material is in maintenance mode; this is the part a move to another
site generator would replace). Per-build state is reset in `on_config`, so `mkdocs serve` rebuilds
never see a previous build's results; only the worker processes live on between rebuilds, and they
restart when the project's code changes and reset their namespaces for every session.
"""

from __future__ import annotations

import base64
import hashlib
import logging
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

from kernelnotes import blog, site_cache
from kernelnotes.index import Index
from kernelnotes.inline import inline_results, report_markdown
from kernelnotes.parse import IncludeResolver
from kernelnotes.pipeline import Outcome, Pipeline, RunOptions
from kernelnotes.results import Figure
from kernelnotes.running import load_notes, make_pipeline
from kernelnotes.runs import RunStore
from kernelnotes.settings import DEFAULT_DB, load_settings

log = logging.getLogger("mkdocs.plugins.kernelnotes")
FIGURES_DIR = "assets/kernelnotes/figures"


class KernelNotesConfig(Config):
    enabled = c.Type(bool, default=True)
    db = c.Type(str, default=DEFAULT_DB)
    snippets_dir = c.Type(str, default="snippets")
    plugins_dir = c.Optional(c.Type(str))
    execute = c.Type(bool, default=True)  # False: show recorded results only, run nothing
    strict = c.Type(bool, default=False)  # fail the build on any failed snippet, even without --strict
    device = c.Choice(("cpu", "cuda", "auto"), default="auto")
    jobs = c.Type(int, default=1)
    timeout = c.Type(int, default=60)
    memory_limit_mb = c.Type(int, default=0)  # address-space limit of CPU workers (0: none)
    report_page = c.Type(str, default="execution.md")
    results_dir = c.Optional(c.Type(str))  # committed results (`kn results export`) merged at each build
    site_cache = c.Type(bool, default=True)  # memoise page renders, excerpts, search entries (site_cache.py)


class KernelNotesPlugin(BasePlugin[KernelNotesConfig]):
    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.outcomes: dict[str, list[Outcome]] = {}
        self.serving = False
        self._hidden_notebooks: list[Any] = []
        self.figures: dict[str, bytes] = {}  # published file name -> content, written after the build
        self._figure_base = f"/{FIGURES_DIR}/"
        self._site_cache_path: Path | None = None

    def on_startup(self, *, command: str, dirty: bool) -> None:
        self.serving = command == "serve"

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig | None:
        self.outcomes = {}  # fresh state for every build, including serve rebuilds
        self.figures = {}
        if "pymdownx.superfences" in config.markdown_extensions:
            # superfences rejects a fence with options it does not know (exec, session, check...) and
            # prints the block as a paragraph, raw HTML included; relaxed, it highlights the code.
            config.mdx_configs.setdefault("pymdownx.superfences", {})["relaxed_headers"] = True
        self._figure_base = (urlsplit(config.site_url or "").path or "/").rstrip("/") + f"/{FIGURES_DIR}/"
        self._configure_site_cache(config)
        return config

    def _configure_site_cache(self, config: MkDocsConfig) -> None:
        if self.config.site_cache:
            site_cache.install()
            site_cache.configure(config, page_salt=self._page_salt)
            site_cache.load(self._site_cache_file(config))
        else:
            site_cache.uninstall()

    def on_env(self, env: Any, *, config: MkDocsConfig, files: Files) -> Any:
        if self.config.site_cache:
            site_cache.cache_templates(env)
        return env

    def _site_cache_file(self, config: MkDocsConfig) -> Path:
        return Path(config.config_file_path).parent / Path(self.config.db).parent / "cache" / "site.json"

    def _page_salt(self, page: Page) -> str:
        """What a page's HTML depends on besides its Markdown: the results shown in it."""
        outcomes = self.outcomes.get(page.file.src_uri) or []
        return repr([(o.key, o.stale, o.result.created_at if o.result else "") for o in outcomes])

    def on_pre_build(self, config: MkDocsConfig) -> None:
        """Bring the note index up to date and report each note's problems as one line."""
        if not self.config.enabled:
            return
        root = Path(config.config_file_path).parent
        index = Index(root / self.config.db)
        report = index.update(Path(config.docs_dir), IncludeResolver(root, root / self.config.snippets_dir))
        if self.config.results_dir and (root / self.config.results_dir).is_dir():
            # results recorded elsewhere (a GPU runner), shown with their device and date
            RunStore(index.db).import_(root / self.config.results_dir)
        index.db.close()
        for problem in report.problems:
            # errors become warnings, so `mkdocs build --strict` fails on a broken note
            (log.warning if problem.severity == "error" else log.info)(str(problem))

    def _on_files(self, files: Files, *, config: MkDocsConfig) -> Files:
        """Leave out posts material's blog would crash on; run every note's snippets up front
        (cached ones cost nothing) and add the execution report page."""
        for message in blog.exclude_invalid_posts(files, config):
            log.warning(message)  # --strict fails; serve goes on without the broken note
        if not self.config.enabled:
            return files
        pipeline = self._pipeline(config)
        notes, _ = load_notes(pipeline.settings)  # problems were reported by on_pre_build
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
                    f"{outcome.note_path}:{outcome.snippet.start_line}: snippet failed: {outcome.failure_line()}"
                )
        if self.config.report_page and not files.get_file_from_path(self.config.report_page):
            files.append(File.generated(config, self.config.report_page, content=report_markdown(outcomes)))
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
                    f"{outcome.snippet.start_line} ({outcome.result.duration:.2f} s)"
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

    on_files = CombinedEvent(_on_files, _hide_notebooks, _show_notebooks)

    # Before every other plugin (the RSS plugin reads `date` in its own on_page_markdown, the blog
    # reads the reading time at -50): reading time, feed dates and description, excerpt separator.
    @event_priority(50)
    def _prepare_post(self, markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        return blog.prepare_post(page, markdown)

    def _inline_results(self, markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        outcomes = self.outcomes.get(page.file.src_uri)
        if not outcomes or self.pipeline is None:
            return markdown
        return inline_results(markdown, page.file.src_uri, outcomes, self.pipeline.pm, self._figure_link)

    def _figure_link(self, figure: Figure) -> str:
        """Publish a figure as a file (content-addressed) and return its site-absolute URL."""
        data = base64.b64decode(figure.data) if figure.format == "png" else figure.data.encode("utf-8")
        name = f"{hashlib.sha256(data).hexdigest()[:20]}.{figure.format}"
        self.figures[name] = data
        return self._figure_base + name

    on_page_markdown = CombinedEvent(_prepare_post, _inline_results)

    def on_post_build(self, *, config: MkDocsConfig) -> None:
        folder = Path(config.site_dir) / FIGURES_DIR
        if self.figures:
            folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.figures.items():
            (folder / name).write_bytes(data)
        if self.config.site_cache:
            log.info(f"kernelnotes: site cache: {site_cache.summary() or 'unused'}")
            self._site_cache_path = self._site_cache_file(config)
            if not self.serving:  # serve saves once, when it stops: writing costs a save its time
                site_cache.save(self._site_cache_path)
        failed = [o for group in self.outcomes.values() for o in group if o.failed]
        if not self.serving:
            self._close()
        # Raised, not logged: `--strict -q` hides warnings, and a failed snippet must still fail it.
        if failed and (self.config.strict or config.strict):
            where = ", ".join(f"{o.note_path}:{o.snippet.start_line}" for o in failed[:10])
            raise PluginError(f"{len(failed)} snippet(s) failed: {where}")

    def on_serve(self, server: Any, *, config: MkDocsConfig, builder: Any) -> Any:
        """Rebuild when a snippet file or a kernel changes, not only when a note does."""
        root = Path(config.config_file_path).parent
        for folder in (root / self.config.snippets_dir, root / "kernels"):
            if self.config.enabled and folder.is_dir():
                server.watch(str(folder))
        return server

    def on_shutdown(self) -> None:
        if self.serving and self._site_cache_path is not None:
            site_cache.save(self._site_cache_path)
        self._close()

    def _pipeline(self, config: MkDocsConfig) -> Pipeline:
        options = RunOptions(
            device=self.config.device,
            timeout=float(self.config.timeout),
            jobs=max(1, self.config.jobs),
            execute=self.config.execute,
            memory_limit_mb=self.config.memory_limit_mb,
        )
        if self.pipeline is not None and options != self.pipeline.options:
            self._close()  # serve keeps this plugin across rebuilds: an edited option needs a new pipeline
        if self.pipeline is None:
            root = Path(config.config_file_path).parent
            settings = load_settings(
                Path(config.config_file_path), Path(config.docs_dir), root / self.config.db
            )
            self.pipeline = make_pipeline(settings, Index(settings.db_path), options)
        return self.pipeline

    def _close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
