"""The application object: settings + plugin manager + index + results store, one per process.

Every front end builds it the same way (`App.load(...)`, from mkdocs.yml and command-line overrides):
the `kn` CLI, the mkdocs plugin, the pytest plugin, the Markdown fence and, from the settings it is
handed, the worker. So a kernel or a command from a `plugins_dir` plugin or an installed entry point is
seen by all of them, and the cache key covers the code of every registered plugin
(datasette's `Datasette` and pytest's `Config` play this role there).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from kernelnotes.blockattrs import AttributeSpec, BlockOptions, parse_options
from kernelnotes.settings import Settings, load_settings

if TYPE_CHECKING:
    from kernelnotes.index import Index, IndexReport
    from kernelnotes.kernelspec import KernelSpec
    from kernelnotes.note import Snippet
    from kernelnotes.parse import IncludeResolver
    from kernelnotes.pipeline import Pipeline, RunOptions
    from kernelnotes.runs import RunStore


class App:
    """Lazily opened parts of one KernelNotes project; `close()` releases the index and workers."""

    def __init__(
        self, settings: Settings, pm: pluggy.PluginManager | None = None, index: Index | None = None
    ) -> None:
        self.settings = settings
        self._pm = pm
        if index is not None:
            self.__dict__["index"] = index  # an index opened by the caller (tests: in memory)

    @classmethod
    def load(
        cls,
        config: Path | None = None,
        notes: Path | None = None,
        db: Path | None = None,
        cwd: Path | None = None,
        **overrides: Any,
    ) -> App:
        """Settings from mkdocs.yml (given, or the one in `cwd`), then `overrides` (e.g. device="cpu")."""
        settings = load_settings(config, notes, db, cwd)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return cls(replace(settings, **overrides) if overrides else settings)

    # ---- the parts ------------------------------------------------------------------------------

    @property
    def pm(self) -> pluggy.PluginManager:
        """Built-ins, installed entry points and `plugins_dir`, registered through one path."""
        if self._pm is None:
            from kernelnotes.plugins.manager import get_plugin_manager

            self._pm = get_plugin_manager(self.settings.plugins_dir)
        return self._pm

    @cached_property
    def index(self) -> Index:
        from kernelnotes.index import Index

        return Index(self.settings.db_path)

    def open_index(self, verify: bool = False) -> Index:
        """The index; opened with `verify` (a whole-file check: a corrupt file is moved aside and
        rebuilt, `index.notices` says so) when this App has not opened it yet. An index already open
        stays: the pipeline and its results store use that connection (mkdocs serve's rebuilds)."""
        from kernelnotes.index import Index

        if "index" not in self.__dict__:
            self.__dict__["index"] = Index(self.settings.db_path, verify=verify)
        return self.index

    @cached_property
    def store(self) -> RunStore:
        from kernelnotes.runs import RunStore

        return RunStore(self.index.db)

    @cached_property
    def resolver(self) -> IncludeResolver:
        """The one include resolver, shared by the index, the pipeline and the site."""
        from kernelnotes.parse import IncludeResolver

        return IncludeResolver(self.settings.root, self.settings.snippets_dir)

    @cached_property
    def attribute_specs(self) -> tuple[AttributeSpec, ...]:
        """Block attributes declared by plugins (the built-in ones live in kernelnotes.blockattrs)."""
        return tuple(spec for group in self.pm.hook.block_attributes() for spec in group or [])

    def block_options(self, snippet: Snippet) -> BlockOptions:
        """A block's attributes typed by the one schema, plugin-declared attributes included."""
        if not self.attribute_specs:
            return snippet.options
        return parse_options(snippet.attrs, self.attribute_specs)

    def kernels(self) -> dict[str, KernelSpec]:
        """Every registered kernel by name (imports torch: call it only where kernels are needed)."""
        from kernelnotes.registry import load_kernels

        return load_kernels(self.pm)

    def plugin_sources(self) -> list[Path]:
        """Source files of the code a result can depend on (the cache key hashes them)."""
        from kernelnotes.plugins.manager import plugin_sources

        return plugin_sources(self.pm, self.settings.plugins_dir)

    # ---- what the front ends do -----------------------------------------------------------------

    def update_index(self) -> IndexReport:
        """Bring the index up to date with notes/ (incremental) and merge recorded results."""
        self.resolver.clear()  # included files may have changed since the last update (mkdocs serve)
        report = self.index.update(
            self.settings.notes_dir, self.resolver, max_note_bytes=int(self.settings.max_note_mb * 1e6)
        )
        results = self.settings.results_dir
        if results is not None and results.is_dir():
            # one problem line per malformed results file; the others are imported
            report.problems += self.store.import_(results).problems
        return report

    def run_options(self, **overrides: Any) -> RunOptions:
        """Execution options from the settings, with front-end overrides (None keeps the setting)."""
        from kernelnotes.pipeline import RunOptions

        s = self.settings
        base = RunOptions(
            device=s.device,
            timeout=s.timeout,
            jobs=s.jobs,
            execute=s.execute,
            memory_limit_mb=s.memory_limit_mb,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def pipeline(self, options: RunOptions | None = None) -> Pipeline:
        from kernelnotes.pipeline import Pipeline

        return Pipeline(self, options or self.run_options())

    def close(self) -> None:
        if "index" in self.__dict__:
            self.index.db.close()
            del self.__dict__["index"]
            self.__dict__.pop("store", None)
