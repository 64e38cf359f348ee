"""The conformance suite itself, on tiny torch-only specs: it passes a correct kernel and catches the
failure each check exists for (a third-party package runs it exactly like this on its own specs)."""

from __future__ import annotations

import pytest
import torch

from kernelnotes.kernels import conformance
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

TOLS = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1.6e-2),
    "float64": FLOAT64,
}


def _examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    return [
        Example((torch.randn(shape, generator=g).to(device, dtype),), label=str(shape))
        for shape in [(3, 5), (4, 9)]
    ]


def _reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    wide = x.float() if upcast and x.dtype in (torch.float16, torch.bfloat16) else x
    return torch.tanh(wide).cumsum(-1).to(x.dtype)


def _spec(implementation, dtypes=("float32", "float16", "bfloat16", "float64")) -> KernelSpec:
    return KernelSpec(
        name="toy",
        reference=_reference,
        implementation=implementation,
        examples=_examples,
        tolerances=TOLS,
        dtypes=dtypes,
        backward=True,
        reduction=lambda x: x.shape[-1],
    )


GOOD = _spec(lambda x: _reference(x))


def _failures(spec: KernelSpec) -> dict[str, str]:
    failed = {}
    for check, s, dtype in conformance.cases([spec]):
        try:
            conformance.run_check(check, s, dtype, "cpu")
        except AssertionError as exc:
            failed[f"{check}-{dtype}"] = str(exc)
    return failed


def test_a_correct_kernel_passes_every_check() -> None:
    assert {c for c, _, _ in conformance.cases([GOOD])} == set(conformance.CHECKS)
    assert _failures(GOOD) == {}


def test_float64_computed_in_float32_is_caught() -> None:
    downcast = _spec(lambda x: _reference(x.float()).to(x.dtype))
    failed = _failures(downcast)
    assert "examples-float64" in failed and "gradcheck-float64" in failed
    assert "examples-float32" not in failed


def test_a_spec_without_float64_must_raise_type_error() -> None:
    silent = _spec(lambda x: _reference(x.float()).to(x.dtype), dtypes=("float32", "float16", "bfloat16"))
    assert "TypeError" in _failures(silent)["gradcheck-float64"]

    def strict(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float64:
            raise TypeError("toy supports float32, float16, bfloat16")
        return _reference(x)

    assert "gradcheck-float64" not in _failures(_spec(strict, dtypes=("float32", "float16", "bfloat16")))


def test_hidden_nan_and_empty_crash_are_caught() -> None:
    hides_nan = _spec(lambda x: _reference(torch.nan_to_num(x)))
    assert set(_failures(hides_nan)) == {"nonfinite-float32"}

    def crashes_on_empty(x: torch.Tensor) -> torch.Tensor:
        return _reference(x.reshape(-1, x.shape[-1]))  # -1 is ambiguous for zero rows

    assert set(_failures(_spec(crashes_on_empty))) == {"empty-float32"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_broken_kernel_detector_needs_a_real_check(dtype: str) -> None:
    # A check that passes anything would let the broken variant through: the suite must say so.
    lax = {d: Tolerance(atol=1e9, rtol=1e9, floor=1e9) for d in TOLS}
    spec = _spec(lambda x: _reference(x))
    spec = KernelSpec(**{**spec.__dict__, "tolerances": lax})
    with pytest.raises(AssertionError, match="ignores the last input column passes"):
        conformance.run_check("broken", spec, dtype, "cpu")
