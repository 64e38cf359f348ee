"""The mkdocs plugin: a thin adapter that hands mkdocs' events to the core.

Kept thin on purpose (mkdocs-material is in maintenance mode; this is the part a move to another
site generator would replace). State lives on the plugin instance and is rebuilt on every
`on_config`, so `mkdocs serve` rebuilds never see a previous build's state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mkdocs.config import config_options as c
from mkdocs.config.base import Config
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import BasePlugin

from kernelnotes.index import Index
from kernelnotes.parse import IncludeResolver
from kernelnotes.settings import DEFAULT_DB

log = logging.getLogger("mkdocs.plugins.kernelnotes")


class KernelNotesConfig(Config):
    enabled = c.Type(bool, default=True)
    db = c.Type(str, default=DEFAULT_DB)
    snippets_dir = c.Type(str, default="snippets")
    plugins_dir = c.Optional(c.Type(str))


class KernelNotesPlugin(BasePlugin[KernelNotesConfig]):
    def __init__(self) -> None:
        self.index: Index | None = None

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig | None:
        self.index = None  # fresh state for every build, including serve rebuilds
        return config

    def on_pre_build(self, config: MkDocsConfig) -> None:
        """Bring the note index up to date and report each note's problems as one line."""
        if not self.config.enabled:
            return
        root = Path(config.config_file_path).parent
        self.index = Index(root / self.config.db)
        report = self.index.update(
            Path(config.docs_dir), IncludeResolver(root, root / self.config.snippets_dir)
        )
        for problem in report.problems:
            # errors become warnings, so `mkdocs build --strict` fails on a broken note
            (log.warning if problem.severity == "error" else log.info)(str(problem))

    def on_serve(self, server: Any, config: MkDocsConfig, builder: Any) -> Any:
        """Rebuild when an included snippet file changes, not only when a note does."""
        snippets = Path(config.config_file_path).parent / self.config.snippets_dir
        if self.config.enabled and snippets.is_dir():
            server.watch(str(snippets))
        return server
