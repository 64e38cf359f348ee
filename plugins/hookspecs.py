"""The hooks KernelNotes calls. Built-in features implement them exactly as third-party plugins do.

Every hook here must be documented in README.md and exercised by tests/test_plugins.py; meta-tests
fail otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from kernelnotes.kernelspec import KernelSpec
    from kernelnotes.note import Note, Snippet
    from kernelnotes.pipeline import Outcome, Pipeline, Runner
    from kernelnotes.results import CheckCase, Figure

PROJECT = "kernelnotes"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_kernels() -> list[KernelSpec]:  # type: ignore[empty-body]
    """Return reference kernels (KernelSpec) that notes can check against by name."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `kn` command-line group."""


@hookspec
def collect_snippets(note: Note) -> list[Snippet]:  # type: ignore[empty-body]
    """Return the snippets of a parsed note that the pipeline should execute, in page order."""


@hookspec(firstresult=True)
def choose_runner(snippet: Snippet, pipeline: Pipeline) -> Runner | None:
    """Return the runner that executes this snippet's session; the first non-None answer wins."""


@hookspec(firstresult=True)
def check_snippet(
    function: Callable[..., object], kernel: KernelSpec, device: str, bench: bool
) -> list[CheckCase] | None:
    """Compare a snippet's function with a reference kernel on the kernel's examples (in the worker)."""


@hookspec
def collect_figures() -> list[Figure]:  # type: ignore[empty-body]
    """Return the figures a snippet left open and close them (called in the worker after each block)."""


@hookspec(firstresult=True)
def render_result(outcome: Outcome, figure_link: Callable[[Figure], str] | None) -> str | None:
    """Return the Markdown/HTML that shows a snippet's result right after it in its page.

    `figure_link(figure)` gives the URL a figure is published at; None means embed it in the page.
    """


@hookspec
def store_result(outcome: Outcome, pipeline: Pipeline) -> None:
    """Persist a freshly computed result (the built-in writes it to the runs table)."""
