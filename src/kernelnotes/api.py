"""The public API: what code outside KernelNotes's core may import. Everything else is internal.

- Plugin authors: `hookimpl`, the kernel description (`KernelSpec`, `Example`, `Tolerance`), the note
  model (`Note`, `Snippet`), what runners receive and return (`RunContext`, `RunOptions`,
  `RunResult`, `CheckCase`, `Figure`, `Outcome`), block attributes (`AttributeSpec`, `BadAttribute`,
  `BlockOptions`), the application object (`App`, `current_app()` inside a `kn` command).
- Readers of an exported note: `check` is what a `check=` block does on a page, callable from any
  Python session: the exported notebooks and scripts (`kn export`) call it, so a reader who runs a
  note with `pip install kernelnotes` sees the same pass/fail table as the site.

```python
from kernelnotes.api import hookimpl, KernelSpec, Example, Tolerance

@hookimpl
def register_kernels():
    return [KernelSpec(name="my_op", reference=..., implementation=..., examples=..., tolerances=...)]
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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
    "check",
    "check_table",
    "current_app",
    "hookimpl",
    "parse_bool",
]

_COLUMNS = (
    "case",
    "dtype",
    "shapes",
    "max abs err",
    "max rel err",
    "tolerance",
    "result",
    "snippet ms",
    "torch ms",
    "Triton ms",
)


def current_app() -> App:
    """The App of the running `kn` command (for commands added through `register_commands`)."""
    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    app = getattr(obj, "app", None)
    if not isinstance(app, App):
        raise RuntimeError("current_app() is only available inside a `kn` command")
    return app


def check(
    function: Callable[..., Any],
    kernel: str,
    device: str | None = None,
    *,
    bench: bool = False,
    quiet: bool = False,
) -> list[CheckCase]:
    """Compare `function` with the registered reference kernel `kernel` on the kernel's examples.

    The same comparison as a block with `check="kernel:function"`: every dtype of the kernel, the
    kernel's tolerance, timings of the function, the torch reference and the Triton kernel (median of
    5 with `bench=True`). `device` defaults to cuda when torch sees one, else cpu (Triton kernels then
    run under its interpreter). Prints the pass/fail table unless `quiet`; never raises for a failing
    case: the returned cases say which passed.
    """
    from kernelnotes.plugins.manager import get_plugin_manager
    from kernelnotes.registry import load_kernels

    pm = get_plugin_manager()
    kernels = load_kernels(pm)  # imports kernelnotes.kernels, which picks Triton's interpreter on CPU
    if kernel not in kernels:
        raise LookupError(f"unknown kernel {kernel!r}; known kernels: {', '.join(sorted(kernels))}")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    # the built-in checker (or a plugin's) answers through the same hook the snippet worker calls
    cases: list[CheckCase] = (
        pm.hook.check_snippet(function=function, kernel=kernels[kernel], device=device, bench=bench) or []
    )
    if not quiet:
        print(check_table(kernel, cases, device))
    return cases


def check_table(name: str, cases: Sequence[CheckCase], device: str = "cpu") -> str:
    """The check's result as plain text: a heading with the pass count, then one row per case.

    On CPU the Triton kernel runs under Triton's interpreter, which times Python, not the kernel: its
    column then says "interpreter" instead of a time (as on the site).
    """
    rows = [
        [
            c.label,
            c.dtype,
            c.shape,
            _num(c.max_abs),
            _num(c.max_rel),
            _num(c.bound),
            "pass" if c.ok else "FAIL",
            _ms(c.snippet_ms),
            _ms(c.reference_ms),
            _ms(c.kernel_ms) if device == "cuda" else "interpreter",
        ]
        for c in cases
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    passed = sum(c.ok for c in cases)
    out = [f"check {name}: {passed}/{len(cases)} cases pass", line(_COLUMNS)]
    out += [line(r) for r in rows]
    # why a case failed can be long: below the table, not in it
    out += [f"{c.label} {c.dtype}: {' '.join(c.message.split())}" for c in cases if c.message]
    return "\n".join(out)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
