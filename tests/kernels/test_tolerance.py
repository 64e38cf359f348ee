"""The correctness policy (kernelnotes.kernels.testing): the floor scales with magnitude and reduction."""

from __future__ import annotations

import math

import torch

from kernelnotes.kernels.testing import compare, nonfinite_mismatch, scaled_floor
from kernelnotes.kernelspec import Tolerance

FP32_MATMUL = Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4)


def _ulps_up(t: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        t = torch.nextafter(t, torch.full_like(t, math.inf))
    return t


def test_a_few_ulps_on_large_outputs_pass() -> None:
    # The finding: outputs of ~K/4 = 5,000 from a K = 20,001 fp32 reduction, a few ulps apart from
    # torch (summation order) and torch in fp32 exactly the reference: a fixed 1e-4 floor failed it.
    ref = torch.linspace(4000.0, 5000.0, 17 * 19).reshape(17, 19)
    out = _ulps_up(ref, 8)  # 8 ulps at 4096..5000 = 3.9e-3
    for reduction in (1, 20_001):
        result = compare(out, ref, ref, FP32_MATMUL, reduction=reduction)
        assert result.ok, result.message
    # the old fixed floor (the bound at magnitude <= 1) is 25x smaller than that error
    assert scaled_floor(FP32_MATMUL, ref / 5000) == FP32_MATMUL.floor < 3.9e-3 / 25


def test_floor_grows_with_magnitude_and_sqrt_of_reduction() -> None:
    tol = Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3)
    small = torch.tensor([0.5, -0.25])
    assert scaled_floor(tol, small) == 2e-3  # below 1 the floor is absolute
    assert math.isclose(scaled_floor(tol, 100 * small), 2e-3 * 50)
    assert math.isclose(scaled_floor(tol, small, reduction=4096), 2e-3 * 2)
    assert scaled_floor(tol, small, reduction=10) == 2e-3  # short reductions are not loosened
    # non-finite entries do not set the magnitude
    assert scaled_floor(tol, torch.tensor([0.5, math.inf, math.nan])) == 2e-3


def test_same_error_same_verdict_whatever_the_magnitude() -> None:
    # Two fp16 matmuls with the same *relative* error now get the same verdict.
    tol = Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3)
    ref = torch.linspace(-1.0, 1.0, 64)
    for scale in (1.0, 300.0):
        r = ref * scale
        out = r * (1 + 1e-3)
        assert compare(out, r, r, tol).ok, scale


def test_wrong_results_still_fail_at_any_magnitude() -> None:
    ref = torch.linspace(4000.0, 5000.0, 64)
    wrong = ref.clone()
    wrong[7] += 0.02 * ref[7]  # a dropped term of a 50-term sum: 2 % of the output
    result = compare(wrong, ref, ref, FP32_MATMUL, reduction=20_001)
    assert not result.ok and "FAILED" in result.message


def test_nan_and_inf_must_sit_where_the_reference_has_them() -> None:
    nan, inf = math.nan, math.inf
    ref = torch.tensor([nan, inf, -inf, 1.0])
    assert nonfinite_mismatch(ref.clone(), ref) == 0
    assert compare(ref.clone(), ref, None, FP32_MATMUL).ok
    assert nonfinite_mismatch(torch.tensor([0.0, inf, -inf, 1.0]), ref) == 1  # NaN hidden
    assert nonfinite_mismatch(torch.tensor([nan, -inf, -inf, 1.0]), ref) == 1  # wrong infinity
    assert nonfinite_mismatch(torch.tensor([nan, inf, -inf, nan]), ref) == 1  # NaN invented
    result = compare(torch.tensor([0.0, inf, -inf, 1.0]), ref, None, FP32_MATMUL)
    assert not result.ok and "NaN/inf" in result.message
