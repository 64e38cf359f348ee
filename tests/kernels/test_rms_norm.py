"""RMSNorm kernel (forward, dx, dweight) against torch, under the project's correctness policy."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import rms_norm as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, DTYPES, gpu, grads

device = DEVICE
(SPEC,) = mod.SPECS


def test_spec_validates() -> None:
    assert isinstance(SPEC, KernelSpec) and SPEC.name == "rms_norm"
    assert SPEC.module == "kernelnotes.kernels.rms_norm"
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
    ckpt = grads(lambda x, w: checkpoint(fn, x, w, use_reentrant=False), ex.args, {}, 0)
    torch.testing.assert_close(ckpt, plain, rtol=0, atol=0)


def test_rounds_before_weight_like_llama() -> None:
    # In bf16 the normalised row is rounded before the weight multiply; computing
    # weight * h entirely in fp32 would differ from the Llama module in the last bit.
    x = torch.randn(16, 257, device=device).to(torch.bfloat16)
    w = (1 + 0.3 * torch.randn(257, device=device)).to(torch.bfloat16)
    x32 = x.float()
    llama = w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
    assert torch.equal(mod.rms_norm(x, w), llama)


def test_edge_cases() -> None:
    # A length-1 row: x * rsqrt(x^2 + eps) is sign(x) up to eps; large magnitudes do not overflow.
    x = torch.tensor([[3.0], [-2.0], [1e18]], device=device)
    w = torch.full((1,), 0.5, device=device)
    torch.testing.assert_close(mod.rms_norm(x, w), mod.rms_norm_reference(x, w))
    # Large-magnitude rows in fp16 (x^2 overflows fp16 but not the fp32 accumulation).
    xh = (300 * torch.randn(5, 40, device=device)).half()
    wh = torch.ones(40, device=device, dtype=torch.float16)
    out = mod.rms_norm(xh, wh)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, mod.rms_norm_reference(xh, wh), atol=1e-2, rtol=1e-2)
    # Non-contiguous input, a custom eps, a single row, and the gradient of a single row.
    xt = torch.randn(45, 6, device=device).t()
    w = torch.randn(45, device=device)
    torch.testing.assert_close(mod.rms_norm(xt, w, eps=0.1), mod.rms_norm_reference(xt, w, eps=0.1))
    one = xt[:1].clone().requires_grad_(True)
    one_ref = one.detach().clone().requires_grad_(True)
    mod.rms_norm(one, w).sum().backward()
    mod.rms_norm_reference(one_ref, w).sum().backward()
    torch.testing.assert_close(one.grad, one_ref.grad)
    with pytest.raises(ValueError):
        mod.rms_norm(xt, w[:5])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize(
    "shape", [pytest.param((4096, 4097), marks=gpu), pytest.param((8, 3, 20_000), marks=gpu)]
)
def test_gpu_large(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    tol = SPEC.tolerances[dtype_name(dtype)]
    x = torch.randn(shape, device="cuda").to(dtype)
    w = (1 + 0.2 * torch.randn(shape[-1], device="cuda")).to(dtype)
    args = (x, w)
    assert_matches(
        SPEC.implementation(*args), SPEC.reference(*args), SPEC.reference(*args, upcast=False), tol
    )
    got = grads(SPEC.implementation, args, {}, 0)
    gref = grads(SPEC.reference, args, {"upcast": True}, 0)
    glow = grads(SPEC.reference, args, {"upcast": False}, 0)
    for g, r, lo in zip(got, gref, glow):
        assert_matches(g, r, lo, tol, grad=True)


def test_empty_last_dimension_and_rows() -> None:
    for shape in [(3, 0), (0, 7)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        w = torch.ones(shape[-1], device=device, requires_grad=True)
        out = mod.rms_norm(x, w)
        assert out.shape == x.shape
        gx, gw = torch.autograd.grad(out.sum(), (x, w))
        assert gx.shape == x.shape and gw.shape == w.shape


def test_float64_is_computed_in_float64() -> None:
    x = torch.randn(5, 77, dtype=torch.float64, device=device)
    w = torch.randn(77, dtype=torch.float64, device=device)
    err = (mod.rms_norm(x, w) - mod.rms_norm_reference(x, w)).abs().max().item()
    assert err < 1e-12
    with pytest.raises(TypeError, match="rms_norm supports"):
        mod.rms_norm(x.to(torch.int32), w)
