"""The note model: what a parsed note holds, independent of mkdocs and of the index."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kernelnotes.blockattrs import BlockOptions, parse_options

AttrValue = str | bool


@dataclass(frozen=True)
class Include:
    """A file pulled into a snippet with `--8<-- "path"` (pymdownx.snippets syntax)."""

    spec: str  # as written, e.g. "snippets/online_softmax.py:3:10"
    path: str  # resolved, relative to the project root ("" when not found)
    line: int  # line of the include directive in the note
    sha: str = ""  # content hash of the included file ("" when missing)


@dataclass(frozen=True)
class Snippet:
    """A fenced code block of a note (or a code cell of a notebook)."""

    index: int  # 0-based position among the note's snippets
    language: str
    attrs: dict[str, AttrValue]
    start_line: int  # 1-based line of the opening fence (cell number for notebooks)
    end_line: int  # 1-based line of the closing fence
    code: str  # with includes resolved
    includes: tuple[Include, ...] = ()
    # where each line of `code` comes from: ("", line) is the note itself, ("snippets/x.py", line) an
    # include; tracebacks use it to name the note's own line numbers
    source_map: tuple[tuple[str, int], ...] = ()

    @cached_property
    def options(self) -> BlockOptions:
        """The block's attributes typed by the one schema (kernelnotes.blockattrs)."""
        return parse_options(self.attrs)

    @property
    def session(self) -> str:
        """The namespace this block runs in: its `session` attribute, else a name of its own."""
        return f"session:{self.options.session}" if self.options.session else f"block:{self.index}"

    @property
    def executable(self) -> bool:
        return self.options.exec


@dataclass
class Note:
    """A parsed note. `path` is relative to the notes folder, with forward slashes."""

    path: str
    kind: str  # "markdown" or "notebook"
    title: str
    slug: str
    body: str
    excerpt: str
    date: dt.datetime | None = None
    updated: dt.datetime | None = None
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    draft: bool = False
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # every front-matter key, unknown ones included
    snippets: list[Snippet] = field(default_factory=list)
    body_line: int = 1  # line in the file where the body (after front matter) starts

    @property
    def includes(self) -> dict[str, str]:
        """Included files this note depends on: path -> content hash ("" for a file that is missing,
        so that creating it later re-indexes the note)."""
        return {inc.path or inc.spec.partition(":")[0]: inc.sha for s in self.snippets for inc in s.includes}
