"""Selective scan (SSM linear recurrence) against the sequential fp32 torch loop."""

from __future__ import annotations

import pytest
import torch

from kernelnotes.kernels import selective_scan as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

device = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SEEDS = range(5)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SPEC = mod.SPECS[0]


def check(spec: KernelSpec, args: tuple, kwargs: dict | None = None) -> None:
    kwargs = kwargs or {}
    out = spec.implementation(*args, **kwargs)
    ref = spec.reference(*args, **kwargs)
    ref_lowp = spec.reference(*args, upcast=False, **kwargs)
    assert_matches(out, ref, ref_lowp, spec.tolerances[dtype_name(args[0].dtype)])


def test_spec_validates() -> None:
    assert len(mod.SPECS) == 1 and isinstance(SPEC, KernelSpec)
    assert SPEC.name == "selective_scan"
    assert SPEC.module == "kernelnotes.kernels.selective_scan"
    assert SPEC.backward is True
    assert set(SPEC.dtypes) == {"float32", "float16", "bfloat16", "float64"}
    assert SPEC.description


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_examples_run(dtype: torch.dtype) -> None:
    for ex in SPEC.examples(device, dtype, 0):
        a, _, _ = ex.args
        out = SPEC.implementation(*ex.args, **ex.kwargs)
        ref = SPEC.reference(*ex.args, **ex.kwargs)
        assert out.shape == ref.shape == a.shape[:3]
        assert out.dtype == ref.dtype == dtype
        assert SPEC.flops(*ex.args) > 0 and SPEC.bytes(*ex.args) > 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_matches_reference(dtype: torch.dtype, seed: int) -> None:
    for ex in SPEC.examples(device, dtype, seed):
        check(SPEC, ex.args, dict(ex.kwargs))


def grads(fn, args: tuple[torch.Tensor, ...], dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    leaves = [t.detach().clone().requires_grad_() for t in args]
    return torch.autograd.grad(fn(*leaves), leaves, dy)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_backward_matches_autograd(dtype: torch.dtype, seed: int) -> None:
    tol = SPEC.tolerances[dtype_name(dtype)]
    for ex in SPEC.examples(device, dtype, seed):
        gen = torch.Generator(device="cpu").manual_seed(100 + seed)
        a = ex.args[0]
        dy = torch.randn(a.shape[:3], generator=gen).to(device=device, dtype=dtype)
        got = grads(mod.selective_scan, ex.args, dy)
        ref = grads(SPEC.reference, ex.args, dy)
        ref_lowp = grads(lambda *t: SPEC.reference(*t, upcast=False), ex.args, dy)
        for name, g, r, lo in zip(("da", "db", "dc"), got, ref, ref_lowp):
            assert g.dtype == dtype and g.shape == r.shape
            assert_matches(g, r, lo, tol, grad=True, what=f"{name} {ex.label}")


def test_backward_under_checkpoint() -> None:
    from torch.utils.checkpoint import checkpoint

    a, b, c = mod.make_inputs(2, 37, 9, 6, device=device, dtype=torch.float32, seed=4)
    dy = torch.randn(2, 37, 9, device=device)
    plain = grads(mod.selective_scan, (a, b, c), dy)
    fn = lambda *t: checkpoint(mod.selective_scan, *t, use_reentrant=False)
    ckpt = grads(fn, (a, b, c), dy)
    for g, h in zip(plain, ckpt):
        assert torch.equal(g, h)


def test_backward_partial_requires_grad() -> None:
    # Only b needs a gradient (a and c are fixed parameters): autograd still gets a db.
    a, b, c = mod.make_inputs(1, 5, 7, 3, device=device, dtype=torch.float32, seed=5)
    b = b.requires_grad_()
    mod.selective_scan(a, b, c).sum().backward()
    bref = b.detach().clone().requires_grad_()
    SPEC.reference(a, bref, c).sum().backward()
    torch.testing.assert_close(b.grad, bref.grad, atol=1e-5, rtol=1e-5)


def test_no_grad_skips_saving_states() -> None:
    a, b, c = (
        t.requires_grad_() for t in mod.make_inputs(1, 3, 4, 2, device=device, dtype=torch.float32, seed=6)
    )
    with torch.no_grad():
        y = mod.selective_scan(a, b, c)
    assert y.grad_fn is None


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 33, 1), (2, 1, 5, 130)], ids=str)
def test_edge_shapes(shape: tuple[int, int, int, int]) -> None:
    # A single channel, a length-1 state, a single time step and a wide state in one block.
    args = mod.make_inputs(*shape, device=device, dtype=torch.float32, seed=3)
    check(SPEC, args)
    dy = torch.randn(shape[:3], device=device)
    for g, r in zip(grads(mod.selective_scan, args, dy), grads(SPEC.reference, args, dy)):
        assert_matches(g, r, None, SPEC.tolerances["float32"], grad=True)


def test_zero_length_sequence() -> None:
    a, b, c = mod.make_inputs(2, 3, 0, 4, device=device, dtype=torch.float32, seed=0)
    assert mod.selective_scan(a, b, c).shape == (2, 3, 0)


def test_unit_decay_is_cumulative_sum() -> None:
    # a = 1 and c = 1: y_t is the running sum of b over time and state, an easy closed form.
    _, b, _ = mod.make_inputs(2, 5, 11, 3, device=device, dtype=torch.float32, seed=1)
    a = torch.ones_like(b)
    c = torch.ones(2, 11, 3, device=device)
    expected = b.sum(-1).cumsum(-1)
    torch.testing.assert_close(mod.selective_scan(a, b, c), expected, atol=1e-5, rtol=1e-5)


def test_non_contiguous_inputs() -> None:
    a, b, c = mod.make_inputs(2, 7, 9, 6, device=device, dtype=torch.float32, seed=2)
    # Same values, transposed storage: (B, L, D, N) memory viewed as (B, D, L, N).
    a_t = a.transpose(1, 2).contiguous().transpose(1, 2)
    b_t = b.transpose(1, 2).contiguous().transpose(1, 2)
    c_t = c.transpose(1, 2).contiguous().transpose(1, 2)
    assert not a_t.is_contiguous() and not c_t.is_contiguous()
    torch.testing.assert_close(mod.selective_scan(a_t, b_t, c_t), mod.selective_scan(a, b, c), atol=0, rtol=0)


def test_shape_errors() -> None:
    a, b, c = mod.make_inputs(1, 2, 3, 4, device=device, dtype=torch.float32, seed=0)
    with pytest.raises(ValueError):
        mod.selective_scan(a, b[..., :3], c)
    with pytest.raises(ValueError):
        mod.selective_scan(a, b, c[:, :2])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("shape", [(4, 1000, 513, 16), (2, 257, 2048, 64)], ids=str)
@pytest.mark.gpu
@needs_gpu
def test_large_shapes_gpu(dtype: torch.dtype, shape: tuple[int, int, int, int]) -> None:
    check(SPEC, mod.make_inputs(*shape, device="cuda", dtype=dtype, seed=0))
