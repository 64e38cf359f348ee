"""pytest front end: `pytest notes/` turns every exec="on" block of the notes into a test item.

Docs and tests share one execution path: items run through the same pipeline, worker and cache as
`kn run` and the site, so a block that is green on the site is green here, and vice versa.
Loaded through the `pytest11` entry point; it only collects files under the configured notes folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelnotes.index import Index
from kernelnotes.pipeline import Outcome, Pipeline, RunOptions
from kernelnotes.settings import Settings, SettingsError, load_settings

SETTINGS = pytest.StashKey[Settings | None]()
PIPELINE = pytest.StashKey[Pipeline]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kernelnotes")
    group.addoption(
        "--kn-device",
        default=None,
        choices=("cpu", "cuda", "auto"),
        help="device for note blocks without device= (default: mkdocs.yml's, else auto)",
    )
    group.addoption(
        "--kn-force", action="store_true", help="run note blocks even when a cached result exists"
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".md", ".ipynb"):
        return None
    settings = _settings(parent.config)
    if settings is None or not file_path.resolve().is_relative_to(settings.notes_dir):
        return None
    return NoteFile.from_parent(parent, path=file_path)


def pytest_unconfigure(config: pytest.Config) -> None:
    pipeline = config.stash.get(PIPELINE, None)
    if pipeline is not None:
        pipeline.close()


def _settings(config: pytest.Config) -> Settings | None:
    if SETTINGS not in config.stash:
        try:
            config.stash[SETTINGS] = load_settings(cwd=config.rootpath)
        except SettingsError:
            config.stash[SETTINGS] = None
    return config.stash[SETTINGS]


def _pipeline(config: pytest.Config) -> Pipeline:
    if PIPELINE not in config.stash:
        from kernelnotes.running import make_pipeline

        settings = _settings(config)
        assert settings is not None
        options = RunOptions(
            device=config.getoption("--kn-device") or settings.device,
            force=config.getoption("--kn-force"),
            timeout=settings.timeout,
            memory_limit_mb=settings.memory_limit_mb,
        )
        config.stash[PIPELINE] = make_pipeline(settings, Index(settings.db_path), options)
    return config.stash[PIPELINE]


class NoteFile(pytest.File):
    """A note; its items are its executable blocks, run together on first use (sessions need it)."""

    outcomes: dict[int, Outcome] | None = None

    def collect(self) -> Iterator[pytest.Item]:
        from kernelnotes.running import load_notes

        settings = _settings(self.config)
        assert settings is not None
        notes, problems = load_notes(settings, [self.path])
        if problems and not notes:
            raise self.CollectError("\n".join(str(p) for p in problems))
        for note in notes:
            self.note = note
            for snippet in _pipeline(self.config).snippets(note):
                yield SnippetItem.from_parent(self, name=f"line {snippet.start_line}", index=snippet.index)

    def outcome(self, index: int) -> Outcome:
        if self.outcomes is None:
            self.outcomes = {o.snippet.index: o for o in _pipeline(self.config).run([self.note])}
        return self.outcomes[index]


class SnippetFailed(Exception):
    pass


class SnippetItem(pytest.Item):
    def __init__(self, *, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index

    def runtest(self) -> None:
        assert isinstance(self.parent, NoteFile)
        outcome = self.parent.outcome(self.index)
        if outcome.result is None or outcome.failed:
            raise SnippetFailed(outcome)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if not isinstance(excinfo.value, SnippetFailed):
            return str(super().repr_failure(excinfo))
        outcome: Outcome = excinfo.value.args[0]
        r = outcome.result
        if r is None:
            return "not run"
        lines = [r.error] if r.error else []
        lines += [
            f"{c.label} {c.dtype} {c.shape}: max abs err {c.max_abs} > {c.bound} {c.message}"
            for c in r.check
            if not c.ok
        ]
        return "\n".join(lines) or r.status

    def reportinfo(self) -> tuple[Path, int, str]:
        assert isinstance(self.parent, NoteFile)
        line = self.parent.note.snippets[self.index].start_line
        return self.path, line - 1, f"{self.path.name}:{line}"
