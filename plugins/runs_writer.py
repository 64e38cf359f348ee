"""Built-in plugin: fresh results go to the runs table of the index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernelnotes.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from kernelnotes.pipeline import Outcome, Pipeline


@hookimpl
def store_result(outcome: Outcome, pipeline: Pipeline) -> None:
    if outcome.result is not None:
        pipeline.store.save(
            outcome.note_path, outcome.snippet.index, outcome.snippet.start_line, outcome.result
        )
