"""The public API for plugin authors: what a KernelNotes plugin may import. Everything else is internal.

```python
from kernelnotes.api import hookimpl, KernelSpec, Example, Tolerance

@hookimpl
def register_kernels():
    return [KernelSpec(name="my_op", reference=..., implementation=..., examples=..., tolerances=...)]
```
"""

from __future__ import annotations

import click

from kernelnotes.app import App
from kernelnotes.blockattrs import AttributeSpec, BadAttribute, BlockOptions, parse_bool
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance
from kernelnotes.note import Include, Note, Snippet
from kernelnotes.pipeline import Outcome, RunContext, Runner, RunOptions
from kernelnotes.plugins.hookspecs import hookimpl
from kernelnotes.results import FAILED, PASSED, CheckCase, Figure, RunResult
from kernelnotes.settings import Settings

__all__ = [
    "FAILED",
    "PASSED",
    "App",
    "AttributeSpec",
    "BadAttribute",
    "BlockOptions",
    "CheckCase",
    "Example",
    "Figure",
    "Include",
    "KernelSpec",
    "Note",
    "Outcome",
    "RunContext",
    "RunOptions",
    "RunResult",
    "Runner",
    "Settings",
    "Snippet",
    "Tolerance",
    "current_app",
    "hookimpl",
    "parse_bool",
]


def current_app() -> App:
    """The App of the running `kn` command (for commands added through `register_commands`)."""
    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    app = getattr(obj, "app", None)
    if not isinstance(app, App):
        raise RuntimeError("current_app() is only available inside a `kn` command")
    return app
