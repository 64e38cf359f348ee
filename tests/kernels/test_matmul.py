"""Tests for kernelnotes.kernels.matmul: the correctness policy, activations, edge cases, the spec."""

from __future__ import annotations

import math

import pytest
import torch

from kernelnotes.kernels import matmul as mm
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

device = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SPEC = mm.SPECS[0]


def _tol(dtype: torch.dtype):
    return SPEC.tolerances[str(dtype).removeprefix("torch.")]


def _check(a: torch.Tensor, b: torch.Tensor, activation: str | None, what: str = "output") -> torch.Tensor:
    out = mm.matmul(a, b, activation=activation)
    ref = mm.matmul_reference(a, b, activation=activation)
    ref_lowp = mm.matmul_reference(a, b, activation=activation, upcast=False)
    assert out.shape == ref.shape and out.dtype == ref.dtype == a.dtype
    assert_matches(out, ref, ref_lowp, _tol(a.dtype), what=what)
    return out


def test_spec_is_valid():
    assert isinstance(mm.SPECS, tuple) and all(isinstance(s, KernelSpec) for s in mm.SPECS)
    assert [s.name for s in mm.SPECS] == ["matmul"]
    assert SPEC.module == "kernelnotes.kernels.matmul"
    assert SPEC.backward is False
    assert set(SPEC.tolerances) == {"float32", "float16", "bfloat16"}
    assert SPEC.tolerances["float32"].atol == SPEC.tolerances["float32"].rtol == 1e-4
    assert SPEC.tolerances["float16"].atol == 1e-2 and SPEC.tolerances["bfloat16"].atol == 2e-2
    a, b = torch.empty(7, 5), torch.empty(5, 3)
    assert SPEC.flops(a, b) == 2 * 7 * 5 * 3
    assert SPEC.bytes(a, b) == 4 * (7 * 5 + 5 * 3 + 7 * 3)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_examples_meet_policy(dtype, seed):
    examples = SPEC.examples(device, dtype, seed)
    assert examples
    for ex in examples:
        _check(*ex.args, ex.kwargs.get("activation"), what=ex.label)


@pytest.mark.parametrize("activation", mm.ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_each_activation(dtype, activation):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(37, 130, generator=g).to(device, dtype)
    b = (torch.randn(130, 33, generator=g) / math.sqrt(130)).to(device, dtype)
    _check(a, b, activation)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 33, 1), (3, 1, 130), (130, 17, 1)])
def test_degenerate_dims(m, k, n):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(k, n, generator=g).to(device)
    _check(a, b, "relu")


def test_non_contiguous_operands():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(65, 37, generator=g).to(device).t()  # (37, 65), column-major
    b = torch.randn(130, 65, generator=g).to(device).t()[:, ::2]  # (65, 65), strided columns
    assert not a.is_contiguous() and not b.is_contiguous()
    _check(a, b, "gelu_tanh")


@pytest.mark.parametrize("activation", ["gelu_tanh", "silu"])
def test_large_magnitude_activation_is_finite(activation):
    # exp(-2u) overflows to inf for large negative inputs; x / inf must give 0, not NaN.
    a = torch.tensor([[100.0], [-100.0], [30.0], [-30.0]], device=device)
    b = torch.ones(1, 3, device=device)
    out = _check(a, b, activation)
    assert torch.isfinite(out).all()


def test_empty_k_gives_zeros():
    out = mm.matmul(torch.empty(3, 0, device=device), torch.empty(0, 5, device=device), "silu")
    assert out.shape == (3, 5) and (out == 0).all()


def test_rejects_bad_arguments():
    a = torch.randn(3, 4, device=device)
    with pytest.raises(ValueError, match="activation"):
        mm.matmul(a, torch.randn(4, 2, device=device), activation="tanh")
    with pytest.raises(ValueError, match="expects"):
        mm.matmul(a, torch.randn(5, 2, device=device))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("activation", mm.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_realistic_size(dtype, activation):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2048, 3000, generator=g).to("cuda", dtype)
    b = (torch.randn(3000, 1536, generator=g) / math.sqrt(3000)).to("cuda", dtype)
    _check(a, b, activation)
