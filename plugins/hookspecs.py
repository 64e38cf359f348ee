"""The hooks KernelNotes calls. Built-in features implement them exactly as third-party plugins do.

Every hook here must be documented in README.md and exercised by tests/test_plugins.py; meta-tests
fail otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from kernelnotes.kernelspec import KernelSpec

PROJECT = "kernelnotes"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_kernels() -> list[KernelSpec]:  # type: ignore[empty-body]
    """Return reference kernels (KernelSpec) that notes can check against by name."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `kn` command-line group."""
