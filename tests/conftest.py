"""Shared fixtures: a throwaway project folder and an in-memory index."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

# Plugins installed on a developer's machine must not change test outcomes (datasette's rule).
os.environ["KERNELNOTES_LOAD_PLUGINS"] = "0"

REPO = Path(__file__).resolve().parent.parent


class Project:
    """A project folder (notes/, snippets/) under tmp_path with helpers to write files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notes = root / "notes"
        self.snippets = root / "snippets"
        self.notes.mkdir()
        self.snippets.mkdir()

    def note(self, rel: str, text: str) -> Path:
        path = self.notes / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def snippet(self, rel: str, text: str) -> Path:
        path = self.snippets / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def resolver(self):  # type: ignore[no-untyped-def]
        from kernelnotes.parse import IncludeResolver

        return IncludeResolver(self.root, self.snippets)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def index():  # type: ignore[no-untyped-def]
    from kernelnotes.index import Index

    return Index(None)  # in memory


pytest_plugins = ["pytester"]
