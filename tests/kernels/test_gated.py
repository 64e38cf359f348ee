"""swiglu / geglu kernels against torch, under the project's correctness policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import gated as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, DTYPES, gpu, grads

device = DEVICE
SPECS = {spec.name: spec for spec in mod.SPECS}


def test_specs_validate() -> None:
    assert [s.name for s in mod.SPECS] == ["swiglu", "geglu"]
    for spec in mod.SPECS:
        assert isinstance(spec, KernelSpec)
        assert spec.module == "kernelnotes.kernels.gated"
        assert spec.backward and spec.description
        assert set(spec.tolerances) == {"float32", "float16", "bfloat16", "float64"}
        for ex in spec.examples(device, torch.bfloat16, 0):
            assert spec.flops(*ex.args) > 0 and spec.bytes(*ex.args) > 0
            out = spec.implementation(*ex.args, **ex.kwargs)
            ref = spec.reference(*ex.args, **ex.kwargs)
            assert out.shape == ref.shape and out.dtype == ref.dtype == torch.bfloat16, ex.label


@pytest.mark.parametrize("name", list(SPECS))
def test_checkpoint_same_gradients(name: str) -> None:
    fn = SPECS[name].implementation
    a, b = torch.randn(2, 7, 130, device=device, dtype=torch.bfloat16)
    plain = grads(fn, (a, b), {}, 0)
    ckpt = grads(lambda x, y: checkpoint(fn, x, y, use_reentrant=False), (a, b), {}, 0)
    torch.testing.assert_close(ckpt, plain, rtol=0, atol=0)


def test_edge_cases() -> None:
    # Saturated gates at large magnitude, a single element, non-contiguous inputs, mismatched shapes.
    a = torch.tensor([[-1e4, -30.0, 0.0, 30.0, 1e4]], device=device)
    b = torch.full_like(a, 2.0)
    torch.testing.assert_close(mod.swiglu(a, b), F.silu(a) * b)
    torch.testing.assert_close(mod.geglu(a, b), F.gelu(a, approximate="tanh") * b)
    one_a, one_b = torch.tensor([0.3], device=device), torch.tensor([-1.5], device=device)
    torch.testing.assert_close(mod.swiglu(one_a, one_b), F.silu(one_a) * one_b)
    at, bt = torch.randn(33, 4, device=device).t(), torch.randn(33, 4, device=device).t()
    torch.testing.assert_close(mod.geglu(at, bt), F.gelu(at, approximate="tanh") * bt)
    with pytest.raises(ValueError):
        mod.swiglu(torch.randn(3, 4, device=device), torch.randn(3, 5, device=device))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("name", [pytest.param(name, marks=gpu) for name in SPECS])
def test_gpu_large(name: str, dtype: torch.dtype) -> None:
    spec = SPECS[name]
    tol = spec.tolerances[dtype_name(dtype)]
    a, b = (torch.randn(4096, 11008, device="cuda").to(dtype) for _ in range(2))
    assert_matches(spec.implementation(a, b), spec.reference(a, b), spec.reference(a, b, upcast=False), tol)
    got = grads(spec.implementation, (a, b), {}, 0)
    gref = grads(spec.reference, (a, b), {"upcast": True}, 0)
    glow = grads(spec.reference, (a, b), {"upcast": False}, 0)
    for g, r, lo in zip(got, gref, glow):
        assert_matches(g, r, lo, tol, grad=True)
