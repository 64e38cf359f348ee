"""LayerNorm kernel (forward, dx, dweight, dbias) against torch, under the project's correctness policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import layer_norm as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, DTYPES, gpu, grads

device = DEVICE
(SPEC,) = mod.SPECS


def test_spec_validates() -> None:
    assert isinstance(SPEC, KernelSpec) and SPEC.name == "layer_norm"
    assert SPEC.module == "kernelnotes.kernels.layer_norm"
    assert SPEC.backward and SPEC.description
    assert set(SPEC.tolerances) == {"float32", "float16", "bfloat16", "float64"}
    for ex in SPEC.examples(device, torch.bfloat16, 0):
        assert SPEC.flops(*ex.args) > 0 and SPEC.bytes(*ex.args) > 0
        out, ref = SPEC.implementation(*ex.args), SPEC.reference(*ex.args)
        assert out.shape == ref.shape == ex.args[0].shape and out.dtype == ref.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_name)
def test_checkpoint_same_gradients(dtype: torch.dtype) -> None:
    ex = SPEC.examples(device, dtype, 3)[2]
    fn = SPEC.implementation
    plain = grads(fn, ex.args, {}, 0)
    ckpt = grads(lambda x, w, b: checkpoint(fn, x, w, b, use_reentrant=False), ex.args, {}, 0)
    torch.testing.assert_close(ckpt, plain, rtol=0, atol=0)


def test_edge_cases() -> None:
    # A length-1 row normalises to 0: y is the bias and dx is exactly 0.
    x = torch.randn(4, 1, device=device, requires_grad=True)
    w, b = torch.full((1,), 1.5, device=device), torch.full((1,), 0.25, device=device)
    y = mod.layer_norm(x, w, b)
    assert torch.equal(y, b.expand(4, 1))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    # A large common offset: E[x^2] - E[x]^2 would lose every digit of the variance (it is ~1e8 at
    # fp32 ulp 8); the two-pass variance is only limited by the fp32 rounding of the mean (~1e-3).
    x = 1e4 + torch.randn(3, 70, device=device)
    w, b = torch.randn(70, device=device), torch.randn(70, device=device)
    exact = F.layer_norm(x.double(), (70,), w.double(), b.double()).float()
    torch.testing.assert_close(mod.layer_norm(x, w, b), exact, atol=1e-2, rtol=0)
    # Non-contiguous input, a custom eps, and a single row.
    xt = torch.randn(45, 6, device=device).t()
    w, b = torch.randn(45, device=device), torch.randn(45, device=device)
    torch.testing.assert_close(mod.layer_norm(xt, w, b, eps=0.1), F.layer_norm(xt, (45,), w, b, eps=0.1))
    torch.testing.assert_close(mod.layer_norm(xt[:1], w, b), F.layer_norm(xt[:1], (45,), w, b))
    with pytest.raises(ValueError):
        mod.layer_norm(xt, w[:5], b)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize(
    "shape", [pytest.param((4096, 4097), marks=gpu), pytest.param((8, 3, 20_000), marks=gpu)]
)
def test_gpu_large(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    tol = SPEC.tolerances[dtype_name(dtype)]
    x = torch.randn(shape, device="cuda").to(dtype)
    w, b = (
        (1 + 0.2 * torch.randn(shape[-1], device="cuda")).to(dtype),
        torch.randn(shape[-1], device="cuda").to(dtype),
    )
    args = (x, w, b)
    assert_matches(
        SPEC.implementation(*args), SPEC.reference(*args), SPEC.reference(*args, upcast=False), tol
    )
    got = grads(SPEC.implementation, args, {}, 0)
    gref = grads(SPEC.reference, args, {"upcast": True}, 0)
    glow = grads(SPEC.reference, args, {"upcast": False}, 0)
    for g, r, lo in zip(got, gref, glow):
        assert_matches(g, r, lo, tol, grad=True)


def test_empty_last_dimension_and_rows() -> None:
    for shape in [(3, 0), (0, 7), (2, 0, 0)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        w = torch.ones(shape[-1], device=device, requires_grad=True)
        b = torch.zeros(shape[-1], device=device, requires_grad=True)
        out = mod.layer_norm(x, w, b)
        assert out.shape == F.layer_norm(x, (shape[-1],), w, b).shape == x.shape
        got = torch.autograd.grad(out.sum(), (x, w, b))
        want = torch.autograd.grad(F.layer_norm(x, (shape[-1],), w, b).sum(), (x, w, b))
        for g, r in zip(got, want, strict=True):
            torch.testing.assert_close(g, r)


def test_float64_is_computed_in_float64() -> None:
    x = torch.randn(5, 77, dtype=torch.float64, device=device) * 3 + 1
    w, b = torch.randn(77, dtype=torch.float64), torch.randn(77, dtype=torch.float64)
    err = (mod.layer_norm(x, w, b) - F.layer_norm(x, (77,), w, b)).abs().max().item()
    assert err < 1e-12  # fp32 statistics would be ~1e-7 off
