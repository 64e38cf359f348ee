"""The conformance suite: what every registered `KernelSpec` must do, whoever wrote it.

`tests/kernels/test_conformance.py` runs it over every kernel the plugin registry knows, so a new op
is covered the moment it is registered; a third-party kernel package runs it on its own specs:

    from kernelnotes.kernels.conformance import CHECKS, run_check
    for spec in MY_SPECS:
        for check in CHECKS:
            for dtype in dtypes_for(check, spec):
                run_check(check, spec, dtype, "cpu")   # AssertionError with the reason on failure

The checks (each a function `(spec, dtype, device) -> None` raising AssertionError):

- `examples`: every example (seeds 0-2), in every dtype, against the reference under
  `testing.compare`, and gradients too (3x factor) when `spec.backward`;
- `gradcheck`: `torch.autograd.gradcheck` in float64 on the two smallest examples (fast mode: the
  interpreter is slow) when `spec.backward` -- or, for a spec without float64, that float64 inputs
  raise TypeError (never a silent downcast);
- `nonfinite`: NaN, +inf and -inf put into the first float input give non-finite outputs exactly
  where torch's float64 reference has them (NaN for NaN, the same infinity);
- `empty`: each size of the smallest example set to 0 (in every tensor that has it) gives what torch
  gives: the same shape and values, or an exception where torch raises one;
- `broken`: a deliberately broken kernel (the last element of every float input's last dim ignored:
  the classic off-by-one mask) fails the check in every dtype -- the tolerance is not vacuous.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError

from kernelnotes.kernels._common import dtype_name, to_dtype
from kernelnotes.kernels.testing import compare, nonfinite_mismatch
from kernelnotes.kernelspec import Example, KernelSpec

SEED = 0
# Seeds of the examples check (the per-op test files no longer repeat it).
SEEDS = (0, 1, 2)


# ---- helpers ---------------------------------------------------------------------------------------


def _is_float(a: Any) -> bool:
    return isinstance(a, torch.Tensor) and a.is_floating_point()


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, tuple | list) else value


def _reduction(spec: KernelSpec, ex: Example) -> int:
    return int(spec.reduction(*ex.args, **ex.kwargs)) if spec.reduction else 1


def _map_tensors(ex: Example, fn: Callable[[torch.Tensor], torch.Tensor]) -> Example:
    """The example with `fn` applied to every tensor among its args and kwargs."""
    args = tuple(fn(a) if isinstance(a, torch.Tensor) else a for a in ex.args)
    kwargs = {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in ex.kwargs.items()}
    return Example(args, kwargs, ex.label)


def _grads(fn: Callable[..., Any], ex: Example) -> list[torch.Tensor | None]:
    """Gradients of fn(example) w.r.t. its float tensor args for a fixed random upstream gradient."""
    leaves = [a.detach().clone().requires_grad_(True) if _is_float(a) else a for a in ex.args]
    out = _first(fn(*leaves, **ex.kwargs))
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1000 + SEED), dtype=torch.float64)
    wrt = [a for a in leaves if _is_float(a)]
    return list(torch.autograd.grad(out, wrt, g.to(out), allow_unused=True))


def _smallest(spec: KernelSpec, device: str, dtype: torch.dtype, n: int = 1) -> list[Example]:
    examples = list(spec.examples(device, dtype, SEED))
    size = lambda ex: sum(a.numel() for a in ex.args if isinstance(a, torch.Tensor))
    return sorted(examples, key=size)[:n]


def _ref64(spec: KernelSpec, ex: Example) -> Any:
    """torch's answer in float64 (or fp32 where the spec has no float64): the oracle for edge cases."""
    wide = torch.float64 if "float64" in spec.dtypes else torch.float32
    return spec.reference(
        *_map_tensors(ex, lambda t: t.to(wide) if t.is_floating_point() else t).args, **ex.kwargs
    )


# ---- the checks ------------------------------------------------------------------------------------


def check_examples(spec: KernelSpec, dtype: str, device: str) -> None:
    tol = spec.tolerances[dtype]
    examples = [ex for seed in SEEDS for ex in spec.examples(device, to_dtype(dtype), seed)]
    for ex in examples:
        n = _reduction(spec, ex)
        out = _first(spec.implementation(*ex.args, **ex.kwargs))
        ref = _first(spec.reference(*ex.args, **ex.kwargs))
        low = _first(spec.reference(*ex.args, upcast=False, **ex.kwargs))
        assert out.dtype == ref.dtype, f"{spec.name} {ex.label}: dtype {out.dtype}, expected {ref.dtype}"
        result = compare(out, ref, low, tol, what=f"{spec.name} {dtype} {ex.label}", reduction=n)
        assert result.ok, result.message
        if not spec.backward:
            continue
        got = _grads(spec.implementation, ex)
        want = _grads(lambda *a, **k: spec.reference(*a, **k), ex)
        low_g = _grads(lambda *a, **k: spec.reference(*a, upcast=False, **k), ex)
        for i, (g, r, lg) in enumerate(zip(got, want, low_g, strict=True)):
            if r is None:
                continue
            assert g is not None, f"{spec.name} {ex.label}: no gradient for float input {i}"
            what = f"d{spec.name}/d(input {i}) {dtype} {ex.label}"
            result = compare(g, r, lg, tol, factor=max(tol.factor, 3.0), what=what, reduction=n)
            assert result.ok, result.message


def check_gradcheck(spec: KernelSpec, dtype: str, device: str) -> None:
    """gradcheck in float64 (fast mode) on the two smallest examples; TypeError where no float64."""
    assert dtype == "float64"
    examples = _smallest(spec, device, torch.float64, n=2)
    if "float64" not in spec.dtypes:
        for ex in examples:
            try:
                spec.implementation(*ex.args, **ex.kwargs)
            except TypeError:
                continue
            raise AssertionError(
                f"{spec.name} lists no float64 but computed float64 inputs without TypeError"
            )
        return
    for ex in examples:
        idx = [i for i, a in enumerate(ex.args) if _is_float(a)]

        def fn(*floats: torch.Tensor, ex: Example = ex, idx: list[int] = idx) -> Any:
            args = list(ex.args)
            for i, t in zip(idx, floats, strict=True):
                args[i] = t
            return _first(spec.implementation(*args, **ex.kwargs))

        inputs = tuple(ex.args[i].detach().clone().requires_grad_(True) for i in idx)
        try:
            torch.autograd.gradcheck(fn, inputs, fast_mode=True, atol=1e-6, rtol=1e-4)
        except GradcheckError as exc:
            raise AssertionError(
                f"{spec.name} {ex.label}: gradcheck in float64 failed: {exc}"[:2000]
            ) from None


def check_nonfinite(spec: KernelSpec, dtype: str, device: str) -> None:
    (ex,) = _smallest(spec, device, to_dtype(dtype))
    pos = next((i for i, a in enumerate(ex.args) if _is_float(a)), None)
    assert pos is not None, f"{spec.name}: no float input to put NaN/inf into"
    for value in (float("nan"), float("inf"), -float("inf")):
        args = list(ex.args)
        x = args[pos].clone()
        x.view(-1)[0] = value
        args[pos] = x
        bad = Example(tuple(args), ex.kwargs, ex.label)
        out = _first(spec.implementation(*bad.args, **bad.kwargs))
        ref = _first(_ref64(spec, bad))
        wrong = nonfinite_mismatch(out, ref)
        assert not wrong, (
            f"{spec.name} {dtype} {ex.label} with {value} at input {pos}[0]: {wrong} entries differ from "
            f"torch in NaN/inf (kernel {out.flatten()[:8].tolist()}, torch {ref.flatten()[:8].tolist()})"
        )


def _shrink(ex: Example, size: int) -> Example:
    """Every dimension of `size` in every tensor of the example set to 0."""

    def fn(t: torch.Tensor) -> torch.Tensor:
        shape = [0 if s == size else s for s in t.shape]
        return t.new_zeros(shape) if t.dim() else t

    return _map_tensors(ex, fn)


def check_empty(spec: KernelSpec, dtype: str, device: str) -> None:
    (ex,) = _smallest(spec, device, to_dtype(dtype))
    sizes = sorted({s for a in ex.args if isinstance(a, torch.Tensor) for s in a.shape if s > 0})
    for size in sizes:
        small = _shrink(ex, size)
        shapes = [tuple(a.shape) for a in small.args if isinstance(a, torch.Tensor)]
        try:
            ref = _first(spec.reference(*small.args, **small.kwargs))
        except Exception as exc:  # torch rejects it: so must the kernel (any clear exception)
            try:
                spec.implementation(*small.args, **small.kwargs)
            except Exception:
                continue
            raise AssertionError(
                f"{spec.name} {shapes}: torch raises {type(exc).__name__}, the kernel returned a value"
            ) from None
        try:
            out = _first(spec.implementation(*small.args, **small.kwargs))
        except Exception as exc:
            raise AssertionError(
                f"{spec.name} {shapes}: torch returns shape {tuple(ref.shape)}, the kernel raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        assert out.shape == ref.shape, (
            f"{spec.name} {shapes}: shape {tuple(out.shape)} != torch {tuple(ref.shape)}"
        )
        assert not nonfinite_mismatch(out, ref), f"{spec.name} {shapes}: NaN/inf differ from torch"
        if out.numel():
            result = compare(out, ref, None, spec.tolerances[dtype], what=f"{spec.name} {shapes}")
            assert result.ok, result.message


def broken(spec: KernelSpec) -> Callable[..., Any]:
    """The spec's implementation with the last element of every float input's last dim zeroed (a mask
    that stops one column short). Every input, not just the first: dropping one of 64 query features
    of a normalised attention average moves it by less than a bf16 ulp, dropping a value column does not.
    """

    def impl(*args: Any, **kwargs: Any) -> Any:
        cut = []
        for a in args:
            if _is_float(a) and a.dim() and a.shape[-1]:
                a = a.clone()
                a[..., -1] = 0
            cut.append(a)
        return spec.implementation(*cut, **kwargs)

    return impl


def check_broken_fails(spec: KernelSpec, dtype: str, device: str) -> None:
    wrong = broken(spec)
    tol = spec.tolerances[dtype]
    for ex in spec.examples(device, to_dtype(dtype), SEED):
        out = _first(wrong(*ex.args, **ex.kwargs))
        ref = _first(spec.reference(*ex.args, **ex.kwargs))
        low = _first(spec.reference(*ex.args, upcast=False, **ex.kwargs))
        if not compare(out, ref, low, tol, reduction=_reduction(spec, ex)).ok:
            return
    raise AssertionError(f"{spec.name} {dtype}: a kernel that ignores the last input column passes the check")


CHECKS: dict[str, Callable[[KernelSpec, str, str], None]] = {
    "examples": check_examples,
    "gradcheck": check_gradcheck,
    "nonfinite": check_nonfinite,
    "empty": check_empty,
    "broken": check_broken_fails,
}


def dtypes_for(check: str, spec: KernelSpec) -> list[str]:
    """The dtypes a check runs in for a spec ([] when it does not apply)."""
    if check == "gradcheck":
        return ["float64"] if spec.backward or "float64" not in spec.dtypes else []
    if check in ("nonfinite", "empty"):
        return ["float32"] if "float32" in spec.dtypes else list(spec.dtypes[:1])
    return list(spec.dtypes)


def run_check(check: str, spec: KernelSpec, dtype: str, device: str) -> None:
    """Run one check; AssertionError (with the reason) when the spec does not conform."""
    CHECKS[check](spec, dtype, device)


def cases(specs: list[KernelSpec]) -> list[tuple[str, KernelSpec, str]]:
    """Every (check, spec, dtype) that applies, for pytest parametrisation."""
    return [(c, s, d) for s in specs for c in CHECKS for d in dtypes_for(c, s)]


__all__ = ["CHECKS", "broken", "cases", "dtype_name", "dtypes_for", "run_check"]
