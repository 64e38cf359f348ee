"""Fused cross-entropy kernel (loss and dlogits) against torch, under the project's correctness policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import cross_entropy as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, DTYPES, SEEDS, gpu

device = DEVICE
(SPEC,) = mod.SPECS


def _loss_and_grad(
    fn, logits: torch.Tensor, target: torch.Tensor, dloss: float, **kw
) -> tuple[torch.Tensor, ...]:
    x = logits.detach().clone().requires_grad_(True)
    loss = fn(x, target, **kw)
    (dx,) = torch.autograd.grad(loss, x, torch.tensor(dloss, dtype=loss.dtype, device=loss.device))
    return loss.detach(), dx


def test_spec_validates() -> None:
    assert isinstance(SPEC, KernelSpec) and SPEC.name == "cross_entropy"
    assert SPEC.module == "kernelnotes.kernels.cross_entropy"
    assert SPEC.backward and SPEC.description
    assert set(SPEC.tolerances) == {"float32", "float16", "bfloat16", "float64"}
    for ex in SPEC.examples(device, torch.bfloat16, 0):
        assert SPEC.flops(*ex.args) > 0 and SPEC.bytes(*ex.args) > 0
        out, ref = SPEC.implementation(*ex.args), SPEC.reference(*ex.args)
        assert out.shape == ref.shape == () and out.dtype == ref.dtype == torch.bfloat16, ex.label


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_forward_and_backward(dtype: torch.dtype) -> None:
    tol = SPEC.tolerances[dtype_name(dtype)]
    for seed in SEEDS:
        dloss = (1.0, 0.37, -2.5, 1.0, 3.0)[seed]  # the upstream gradient scales the saved dlogits
        for ex in SPEC.examples(device, dtype, seed):
            what = f"{ex.label} seed={seed}"
            loss, dx = _loss_and_grad(SPEC.implementation, *ex.args, dloss)
            ref, dref = _loss_and_grad(SPEC.reference, *ex.args, dloss, upcast=True)
            low, dlow = _loss_and_grad(SPEC.reference, *ex.args, dloss, upcast=False)
            assert loss.dtype == dx.dtype == dtype
            assert_matches(loss, ref, low, tol, what=f"loss {what}")
            assert_matches(dx, dref, dlow, tol, grad=True, what=f"dlogits {what}")


def test_forward_without_grad_and_input_untouched() -> None:
    ex = SPEC.examples(device, torch.float32, 1)[3]
    logits, target = ex.args
    before = logits.clone()
    with torch.no_grad():
        loss = mod.cross_entropy(logits, target)
    assert torch.equal(logits, before)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_name)
def test_checkpoint_same_gradients(dtype: torch.dtype) -> None:
    logits, target = SPEC.examples(device, dtype, 2)[3].args
    plain = _loss_and_grad(mod.cross_entropy, logits, target, 1.0)
    ckpt = _loss_and_grad(
        lambda x, t: checkpoint(mod.cross_entropy, x, t, use_reentrant=False), logits, target, 1.0
    )
    torch.testing.assert_close(ckpt, plain, rtol=0, atol=0)


def test_edge_cases() -> None:
    # Huge logits: exp would overflow without the running max; -inf (masked) vocabulary entries.
    logits = torch.tensor(
        [[1e4, 1e4 - 2.0, -1e4], [-5e3, -5e3 + 1, -5e3], [0.0, -float("inf"), 2.0]], device=device
    )
    target = torch.tensor([1, 0, 2], device=device)
    loss, dx = _loss_and_grad(mod.cross_entropy, logits, target, 1.0)
    ref, dref = _loss_and_grad(lambda x, t: F.cross_entropy(x, t), logits, target, 1.0)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(dx, dref)
    # A single row, a custom ignore_index, and every target but one ignored.
    logits = torch.randn(6, 77, device=device)
    target = torch.tensor([5, 7, 7, 7, 7, 7], device=device)
    loss, dx = _loss_and_grad(mod.cross_entropy, logits, target, 1.0, ignore_index=7)
    ref, dref = _loss_and_grad(lambda x, t: F.cross_entropy(x, t, ignore_index=7), logits, target, 1.0)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(dx, dref)
    assert torch.equal(dx[1:], torch.zeros_like(dx[1:]))
    # Logits with a row stride (a slice of a wider buffer).
    wide = torch.randn(5, 60, device=device)
    t = torch.tensor([0, 3, 49, 2, 1], device=device)
    torch.testing.assert_close(mod.cross_entropy(wide[:, :50], t), F.cross_entropy(wide[:, :50], t))
    # Every target ignored: the mean is 0/0 = nan, as in torch.
    assert torch.isnan(mod.cross_entropy(wide, torch.full((5,), -100, device=device)))
    with pytest.raises(ValueError):
        mod.cross_entropy(
            torch.randn(2, 3, 4, device=device), torch.zeros(2, 4, dtype=torch.long, device=device)
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize(
    "shape", [pytest.param((4096, 32_000), marks=gpu), pytest.param((512, 128_256), marks=gpu)]
)
def test_gpu_large_vocab(shape: tuple[int, int], dtype: torch.dtype) -> None:
    tol = SPEC.tolerances[dtype_name(dtype)]
    logits = (3 * torch.randn(shape, device="cuda")).to(dtype)
    target = torch.randint(0, shape[1], (shape[0],), device="cuda")
    target[::7] = -100
    loss, dx = _loss_and_grad(SPEC.implementation, logits, target, 1.0)
    ref, dref = _loss_and_grad(SPEC.reference, logits, target, 1.0, upcast=True)
    low, dlow = _loss_and_grad(SPEC.reference, logits, target, 1.0, upcast=False)
    assert_matches(loss, ref, low, tol)
    assert_matches(dx, dref, dlow, tol, grad=True)


@pytest.mark.parametrize("bad", [5, -1, 50])
def test_out_of_range_target_raises_like_torch(bad: int) -> None:
    # Validated on the host before the launch: no silent loss, no out-of-bounds read on a GPU.
    logits = torch.randn(3, 5, device=device)
    target = torch.tensor([0, bad, 4], device=device)
    with pytest.raises(IndexError):
        F.cross_entropy(logits, target)
    with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
        mod.cross_entropy(logits, target)
    # ignore_index itself is never out of range.
    ok = torch.tensor([0, -100, 4], device=device)
    torch.testing.assert_close(mod.cross_entropy(logits, ok), F.cross_entropy(logits, ok))


def test_float64_is_computed_in_float64() -> None:
    logits = torch.randn(7, 33, dtype=torch.float64, device=device)
    target = torch.randint(0, 33, (7,), device=device)
    err = (mod.cross_entropy(logits, target) - F.cross_entropy(logits, target)).abs().item()
    assert err < 1e-12  # fp32 arithmetic would be ~1e-7 off
