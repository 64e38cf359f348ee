"""Built-in plugin: checks a snippet's function against a reference kernel (runs in the checker).

For each dtype the kernel supports on the device, the function is called on the kernel's own
example inputs and compared with the fp32 reference within the kernel's dtype-aware tolerance.
Times of the snippet, the torch reference and the Triton kernel are measured side by side.

In the worker this hook runs in the checker process (kernelnotes.checker_process), never in the
note's: `function` is then a proxy that calls the note's function in the note's process and brings
back its outputs as tensors, and its `timed()` measures the call where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from kernelnotes.kernelspec import KernelSpec
from kernelnotes.plugins.hookspecs import hookimpl
from kernelnotes.results import CheckCase
from kernelnotes.timing import timed, times_kernels

SEEDS = (0,)


@hookimpl
def check_snippet(
    function: Callable[..., Any], kernel: KernelSpec, device: str, bench: bool
) -> list[CheckCase]:
    import torch

    from kernelnotes.kernels.testing import compare

    if device not in kernel.devices:
        return [CheckCase("-", "-", "-", False, message=f"kernel {kernel.name!r} does not run on {device}")]
    cases = []
    repeats = 5 if bench else 1
    for dtype_name in kernel.dtypes:
        dtype = getattr(torch, dtype_name)
        tol = kernel.tolerances[dtype_name]
        for seed in SEEDS:
            for example in kernel.examples(device, dtype, seed):
                shape = _shapes(example.args)
                try:
                    out, snippet_ms = _timed_function(function, example, device, repeats)
                except Exception as exc:
                    message = f"{getattr(function, '__name__', 'function')}{_signature(example)} raised {type(exc).__name__}: {exc}"
                    cases.append(CheckCase(example.label, dtype_name, shape, False, message=message))
                    continue
                ref, reference_ms = _timed(
                    partial(kernel.reference, *example.args, **example.kwargs), device, repeats
                )
                kernel_ms = None  # on CPU the interpreter runs it: not timed (kernelnotes.timing)
                if times_kernels(device):
                    _, kernel_ms = _timed(
                        partial(kernel.implementation, *example.args, **example.kwargs), device, repeats
                    )
                cases.append(_compare(out, ref, tol, dtype, example.label, dtype_name, shape, compare))
                cases[-1].snippet_ms, cases[-1].reference_ms, cases[-1].kernel_ms = (
                    snippet_ms,
                    reference_ms,
                    kernel_ms,
                )
    return cases


def _compare(
    out: Any, ref: Any, tol: Any, dtype: Any, label: str, dtype_name: str, shape: str, compare: Any
) -> CheckCase:
    import torch

    out_t, ref_t = _first_tensor(out), _first_tensor(ref)
    if not isinstance(out_t, torch.Tensor):
        return CheckCase(
            label, dtype_name, shape, False, message=f"returned {type(out).__name__}, expected a tensor"
        )
    if out_t.dtype != ref_t.dtype:
        return CheckCase(
            label, dtype_name, shape, False, message=f"returned dtype {out_t.dtype}, expected {ref_t.dtype}"
        )
    # A note's function is checked against the kernel's allclose bound (not the kernel's own 2x rule,
    # which is about matching torch's rounding): that is the tolerance readers see in the table.
    result = compare(out_t.detach().to(ref_t.device), ref_t, None, tol)
    bound = tol.atol + tol.rtol * ref_t.float().abs().max().item() if ref_t.numel() else tol.atol
    # what was compared, so a pass says what it stands for
    which = f"output[0] of {len(out)}" if isinstance(out, tuple | list) else "the output"
    shape_of = "x".join(map(str, out_t.shape)) or "scalar"
    compared = f"compared {which} ({shape_of} {dtype_name}) with the reference, tolerance {bound:.3g}"
    return CheckCase(
        label,
        dtype_name,
        shape,
        result.ok,
        result.max_abs,
        result.max_rel,
        bound,
        compared if result.ok else f"{result.message} ({compared})",
    )


def _first_tensor(value: Any) -> Any:
    return value[0] if isinstance(value, tuple | list) and value else value


def _timed_function(
    function: Callable[..., Any], example: Any, device: str, repeats: int
) -> tuple[Any, float]:
    """The function's value and median time; a proxy with `timed()` measures where the call runs."""
    timed = getattr(function, "timed", None)
    if callable(timed):
        value, ms = timed(example.args, example.kwargs, repeats)
        return value, float(ms)
    return _timed(partial(function, *example.args, **example.kwargs), device, repeats)


def _timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[Any, float]:
    return timed(fn, device, repeats)  # the one timing method (do_bench after a warm-up on CUDA)


def _shapes(args: tuple[Any, ...]) -> str:
    return " ".join("x".join(map(str, a.shape)) if hasattr(a, "shape") else repr(a) for a in args)


def _signature(example: Any) -> str:
    parts = [
        f"<{'x'.join(map(str, a.shape))} tensor>" if hasattr(a, "shape") else repr(a) for a in example.args
    ]
    parts += [f"{k}={v!r}" for k, v in example.kwargs.items()]
    return "(" + ", ".join(parts) + ")"
