"""Built-in plugin: fresh results go to the runs table of the index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernelnotes.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from kernelnotes.pipeline import Outcome, RunContext


@hookimpl
def store_result(outcome: Outcome, context: RunContext) -> None:
    if outcome.result is not None:
        context.store.save(
            outcome.note_path, outcome.snippet.index, outcome.snippet.start_line, outcome.result
        )
