"""The fused DDIM/DDPM step against the closed form computed step by step in fp32 torch."""

from __future__ import annotations

import math

import pytest
import torch

from kernelnotes.kernels import ddim as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

device = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SEEDS = range(5)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SPEC = mod.SPECS[0]


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)


def check(*args, **kwargs) -> None:
    out = mod.ddim_step(*args, **kwargs)
    ref = mod.ddim_step_reference(*args, **kwargs)
    ref_lowp = mod.ddim_step_reference(*args, upcast=False, **kwargs)
    assert_matches(out, ref, ref_lowp, SPEC.tolerances[dtype_name(args[0].dtype)])


def test_spec_validates() -> None:
    assert len(mod.SPECS) == 1 and isinstance(SPEC, KernelSpec)
    assert SPEC.name == "ddim_step"
    assert SPEC.module == "kernelnotes.kernels.ddim"
    assert SPEC.backward is False
    assert set(SPEC.dtypes) == {"float32", "float16", "bfloat16", "float64"}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_examples_run(dtype: torch.dtype) -> None:
    for ex in SPEC.examples(device, dtype, 0):
        out = SPEC.implementation(*ex.args, **ex.kwargs)
        ref = SPEC.reference(*ex.args, **ex.kwargs)
        assert out.shape == ref.shape == ex.args[0].shape
        assert out.dtype == ref.dtype == dtype
        assert SPEC.bytes(*ex.args, **ex.kwargs) > 0 and SPEC.flops(*ex.args, **ex.kwargs) > 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_matches_reference(dtype: torch.dtype, seed: int) -> None:
    for ex in SPEC.examples(device, dtype, seed):
        check(*ex.args, **ex.kwargs)


def test_closed_form_by_hand() -> None:
    # One element worked out with math: guards the reference itself, not only kernel == reference.
    a_t, a_p, eta, x, e, z = 0.5, 0.6, 0.7, 1.25, -0.5, 0.3
    x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
    sigma = eta * math.sqrt((1 - a_p) / (1 - a_t)) * math.sqrt(1 - a_t / a_p)
    expected = math.sqrt(a_p) * x0 + math.sqrt(1 - a_p - sigma**2) * e + sigma * z
    t = lambda v: torch.full((1, 1), v, device=device)
    for fn in (mod.ddim_step, mod.ddim_step_reference):
        assert fn(t(x), t(e), a_t, a_p, eta=eta, noise=t(z)).item() == pytest.approx(expected, rel=1e-6)


def test_eta_zero_is_deterministic_and_ignores_noise() -> None:
    x, e = randn(2, 3, 17, seed=1), randn(2, 3, 17, seed=2)
    a = mod.ddim_step(x, e, 0.4, 0.55)
    b = mod.ddim_step(x, e, 0.4, 0.55, eta=0.0, noise=randn(2, 3, 17, seed=3))
    assert torch.equal(a, b)


def test_alpha_forms_agree() -> None:
    # Float, 0-d tensor and per-batch 1-d tensor alphas describe the same step.
    x, e, z = randn(3, 37, seed=4), randn(3, 37, seed=5), randn(3, 37, seed=6)
    as_float = mod.ddim_step(x, e, 0.3, 0.5, eta=1.0, noise=z)
    as_0d = mod.ddim_step(x, e, torch.tensor(0.3), torch.tensor(0.5), eta=1.0, noise=z)
    as_1d = mod.ddim_step(x, e, torch.full((3,), 0.3), torch.full((3,), 0.5), eta=1.0, noise=z)
    assert torch.equal(as_float, as_0d) and torch.equal(as_float, as_1d)


def test_per_batch_alphas_select_their_row() -> None:
    x, e, z = randn(3, 2, 5, seed=7), randn(3, 2, 5, seed=8), randn(3, 2, 5, seed=9)
    a_t, a_p = torch.tensor([0.2, 0.5, 0.8]), torch.tensor([0.3, 0.6, 0.85])
    out = mod.ddim_step(x, e, a_t, a_p, eta=0.5, noise=z)
    for i in range(3):
        row = mod.ddim_step(
            x[i : i + 1], e[i : i + 1], float(a_t[i]), float(a_p[i]), eta=0.5, noise=z[i : i + 1]
        )
        torch.testing.assert_close(out[i : i + 1], row, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_edge_cases(dtype: torch.dtype) -> None:
    # A single element; the last step (a_prev = 1 returns the predicted x0); an early, very noisy step
    # (a_t small amplifies x0) with large-magnitude inputs.
    check(randn(1, 1, dtype=dtype), randn(1, 1, dtype=dtype, seed=1), 0.9, 0.95)
    x, e = randn(2, 33, dtype=dtype, seed=2), randn(2, 33, dtype=dtype, seed=3)
    check(x, e, 0.7, 1.0, eta=1.0, noise=randn(2, 33, dtype=dtype, seed=4))
    check(x * 30, e, 0.05, 0.08, eta=0.3, noise=randn(2, 33, dtype=dtype, seed=5))


def test_last_step_returns_x0() -> None:
    x, e = randn(2, 9, seed=10), randn(2, 9, seed=11)
    x0 = (x - math.sqrt(1 - 0.64) * e) / 0.8
    torch.testing.assert_close(mod.ddim_step(x, e, 0.64, 1.0), x0, atol=1e-6, rtol=1e-6)


def test_non_contiguous_inputs() -> None:
    x, e = randn(4, 6, 5, seed=12), randn(4, 6, 5, seed=13)
    xt, et = x.transpose(1, 2), e.transpose(1, 2)
    assert not xt.is_contiguous()
    check(xt, et, torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.tensor([0.3, 0.5, 0.7, 0.9]))


def test_default_noise_is_drawn_when_missing() -> None:
    x, e = randn(2, 50, seed=14), randn(2, 50, seed=15)
    torch.manual_seed(0)
    a = mod.ddim_step(x, e, 0.4, 0.5, eta=1.0)
    torch.manual_seed(0)
    b = mod.ddim_step(x, e, 0.4, 0.5, eta=1.0, noise=torch.randn_like(x))
    assert torch.equal(a, b)


def test_bad_arguments() -> None:
    x = randn(2, 4)
    with pytest.raises(ValueError):
        mod.ddim_step(x, randn(2, 5), 0.5, 0.6)
    with pytest.raises(ValueError):
        mod.ddim_step(x, x, torch.tensor([0.5, 0.6, 0.7]), 0.6)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_large_shapes_gpu(dtype: torch.dtype) -> None:
    shape = (17, 4, 129, 130)
    x, e, z = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3))
    a_t = torch.rand(17, device="cuda") * 0.6 + 0.2
    check(x, e, a_t, a_t + 0.1, eta=1.0, noise=z)
    check(x, e, 0.5, 0.55)
