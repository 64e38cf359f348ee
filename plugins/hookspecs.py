"""The hooks KernelNotes calls. Built-in features implement them exactly as third-party plugins do.

Every hook here must be documented in README.md and exercised by tests/test_plugins.py; meta-tests
fail otherwise. Threads: `choose_runner`, `store_result` and `Runner.run_session` are called from the
pipeline's job threads (`jobs` > 1), `choose_runner` and `store_result` under `context.lock`;
`check_snippet` and `collect_figures` run in the snippet worker process; every other hook in the main
thread of the front end's process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from kernelnotes.blockattrs import AttributeSpec
    from kernelnotes.kernelspec import KernelSpec
    from kernelnotes.note import Note, Snippet
    from kernelnotes.pipeline import Outcome, RunContext, Runner
    from kernelnotes.results import CheckCase, Figure

PROJECT = "kernelnotes"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_kernels() -> list[KernelSpec]:  # type: ignore[empty-body]
    """Return reference kernels (KernelSpec) that notes can check against by name (`check="NAME"`)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `kn` command-line group `cli` (a click.Group)."""


@hookspec
def block_attributes() -> list[AttributeSpec]:  # type: ignore[empty-body]
    """Return the code-block attributes this plugin reads (AttributeSpec: name, parser, help,
    render_only). They are validated with the built-in ones, reach runners as
    `context.block_options(snippet).extra[name]`, and enter the cache key unless `render_only`."""


@hookspec
def collect_snippets(note: Note) -> list[Snippet]:  # type: ignore[empty-body]
    """Return the snippets of the parsed `note` that the pipeline should execute, in page order."""


@hookspec
def exec_languages() -> list[str]:  # type: ignore[empty-body]
    """Return the fence languages whose exec blocks this plugin's runner executes (e.g. ["bash"]);
    the result fence (kernelnotes.mdext) renders results under blocks of these languages."""


@hookspec(firstresult=True)
def choose_runner(snippet: Snippet, context: RunContext) -> Runner | None:
    """Return the runner that executes the session starting with `snippet`; the first non-None answer
    wins. `context` (RunContext) holds the settings, run options, a `stash` for long-lived runner
    state and its `lock`. Called from job threads, under `context.lock`."""


@hookspec(firstresult=True)
def check_snippet(
    function: Callable[..., object], kernel: KernelSpec, device: str, bench: bool
) -> list[CheckCase] | None:
    """Compare a snippet's `function` with the reference `kernel` on the kernel's examples on `device`
    ("cpu" or "cuda"), timing more repeats when `bench`; return one CheckCase per example and dtype.
    Called in the snippet worker process."""


@hookspec
def collect_figures() -> list[Figure]:  # type: ignore[empty-body]
    """Return the figures a snippet left open and close them (called in the worker after each block)."""


@hookspec(firstresult=True)
def render_result(outcome: Outcome, figure_link: Callable[[Figure], str] | None, language: str) -> str | None:
    """Return the Markdown that shows `outcome` (a block with its result) right after the block.

    `figure_link(figure)` gives the URL a figure is published at; None means embed it in the page.
    `language` is the site's language (mkdocs.yml `theme.language`, e.g. "zh"): write page text in
    it (kernelnotes.i18n's catalogs).
    The fence converts the Markdown to HTML with admonition, details, tables and superfences.
    """


@hookspec
def store_result(outcome: Outcome, context: RunContext) -> None:
    """Persist a freshly computed `outcome` (the built-in writes it to `context.store`, the runs
    table). Called from job threads, under `context.lock`."""
