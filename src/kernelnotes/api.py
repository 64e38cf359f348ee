"""The public API: what code outside KernelNotes (an exported notebook, a plugin) may import.

`check` is what a `check=` block does on a page, callable from any Python session: the exported
notebooks and scripts (`kn export`) call it, so a reader who runs a note with `pip install
kernelnotes` sees the same pass/fail table as the site.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kernelnotes.results import CheckCase

__all__ = ["CheckCase", "check", "check_table"]

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
        print(check_table(kernel, cases))
    return cases


def check_table(name: str, cases: Sequence[CheckCase]) -> str:
    """The check's result as plain text: a heading with the pass count, then one row per case."""
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
            _ms(c.kernel_ms),
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
