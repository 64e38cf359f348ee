"""Built-in plugin: a block runs when its info string says exec="on" (markdown-exec's convention)."""

from __future__ import annotations

from kernelnotes.note import Note, Snippet
from kernelnotes.plugins.hookspecs import hookimpl


@hookimpl
def collect_snippets(note: Note) -> list[Snippet]:
    return [s for s in note.snippets if s.executable]
