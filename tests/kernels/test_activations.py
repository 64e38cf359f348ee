"""relu / gelu / gelu_tanh / silu kernels against torch, under the project's correctness policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import activations as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, DTYPES, gpu, grads

device = DEVICE
SPECS = {spec.name: spec for spec in mod.SPECS}


def test_specs_validate() -> None:
    assert [s.name for s in mod.SPECS] == ["relu", "gelu", "gelu_tanh", "silu", "sigmoid"]
    for spec in mod.SPECS:
        assert isinstance(spec, KernelSpec)
        assert spec.module == "kernelnotes.kernels.activations"
        assert spec.backward and spec.description
        assert set(spec.tolerances) == {"float32", "float16", "bfloat16", "float64"}
        for ex in spec.examples(device, torch.float16, 0):
            assert spec.flops(*ex.args) > 0 and spec.bytes(*ex.args) > 0
            out = spec.implementation(*ex.args, **ex.kwargs)
            ref = spec.reference(*ex.args, **ex.kwargs)
            assert out.shape == ref.shape and out.dtype == ref.dtype == torch.float16, ex.label


@pytest.mark.parametrize("name", list(SPECS))
def test_checkpoint_same_gradients(name: str) -> None:
    fn = SPECS[name].implementation
    x = torch.randn(7, 130, device=device, dtype=torch.bfloat16)
    plain = grads(fn, (x,), {}, 0)
    ckpt = grads(lambda t: checkpoint(fn, t, use_reentrant=False), (x,), {}, 0)
    torch.testing.assert_close(ckpt, plain, rtol=0, atol=0)


def test_edge_cases() -> None:
    # Large magnitudes (saturated tails, exp overflow inside sigmoid/tanh), zero and a 1-element input.
    x = torch.tensor([-1e4, -80.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 80.0, 1e4], device=device)
    torch.testing.assert_close(mod.relu(x), F.relu(x))
    torch.testing.assert_close(mod.gelu(x), F.gelu(x))
    torch.testing.assert_close(mod.gelu(x, approximate="tanh"), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(mod.gelu_tanh(x), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(mod.silu(x), F.silu(x))
    one = torch.full((1,), 0.5, device=device, requires_grad=True)
    mod.silu(one).backward()
    torch.testing.assert_close(one.grad, torch.sigmoid(one) * (1 + 0.5 * (1 - torch.sigmoid(one))))
    # relu'(0) is 0, as in torch.
    z = torch.zeros(3, device=device, requires_grad=True)
    mod.relu(z).sum().backward()
    assert torch.equal(z.grad, torch.zeros(3, device=device))
    # Non-contiguous input keeps its logical layout.
    xt = torch.randn(33, 5, device=device).t()
    torch.testing.assert_close(mod.gelu(xt), F.gelu(xt))
    with pytest.raises(ValueError):
        mod.gelu(x, approximate="fast")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("name", [pytest.param(name, marks=gpu) for name in SPECS])
def test_gpu_large(name: str, dtype: torch.dtype) -> None:
    spec = SPECS[name]
    tol = spec.tolerances[dtype_name(dtype)]
    x = torch.randn(4096, 5003, device="cuda").to(dtype)
    assert_matches(spec.implementation(x), spec.reference(x), spec.reference(x, upcast=False), tol)
    (got,) = grads(spec.implementation, (x,), {}, 0)
    (gref,) = grads(spec.reference, (x,), {"upcast": True}, 0)
    (glow,) = grads(spec.reference, (x,), {"upcast": False}, 0)
    assert_matches(got, gref, glow, tol, grad=True)


def test_nan_and_inf_follow_torch() -> None:
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([nan, -inf, -1e38, -2.0, 0.0, 3.0, inf], device=device)
    # torch's fp32 CPU gelu(+inf) is NaN (a vectorisation artefact; fp64 and the scalar path give +inf):
    # the fp64 reference is the oracle.
    for name in SPECS:
        fn, ref = SPECS[name].implementation, SPECS[name].reference
        torch.testing.assert_close(fn(x), ref(x.double()).float(), equal_nan=True, msg=name)
    # relu keeps NaN (tl.maximum would drop it) and its gradient at NaN is 1, as torch's.
    leaf = x.clone().requires_grad_(True)
    mod.relu(leaf).sum().backward()
    torch_leaf = x.clone().requires_grad_(True)
    F.relu(torch_leaf).sum().backward()
    assert torch.isnan(mod.relu(x)[0])
    assert torch.equal(leaf.grad, torch_leaf.grad)


def test_sigmoid_is_stable_and_exact_in_float64() -> None:
    x = torch.tensor([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], dtype=torch.float64, device=device)
    torch.testing.assert_close(mod.sigmoid(x), torch.sigmoid(x), rtol=1e-15, atol=1e-300)
    leaf = x.clone().requires_grad_(True)
    mod.sigmoid(leaf).sum().backward()
    s = torch.sigmoid(x)
    torch.testing.assert_close(leaf.grad, s * (1 - s), rtol=1e-15, atol=1e-300)
