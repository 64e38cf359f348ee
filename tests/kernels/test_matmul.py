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
    assert SPEC.backward is True
    assert set(SPEC.tolerances) == {"float32", "float16", "bfloat16", "float64"}
    assert SPEC.tolerances["float32"].atol == SPEC.tolerances["float32"].rtol == 1e-4
    assert SPEC.tolerances["float16"].atol == 1e-2 and SPEC.tolerances["bfloat16"].atol == 2e-2
    a, b = torch.empty(7, 5), torch.empty(5, 3)
    assert SPEC.flops(a, b) == 2 * 7 * 5 * 3
    assert SPEC.bytes(a, b) == 4 * (7 * 5 + 5 * 3 + 7 * 3)


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
    with pytest.raises(ValueError, match="bias must have shape"):
        mm.matmul(a, torch.randn(4, 2, device=device), bias=torch.randn(3, device=device))


@pytest.mark.parametrize("activation", mm.ACTIVATIONS)
def test_epilogue_nan_and_inf_match_torch(activation):
    # The epilogue sees exactly the bias here (a @ b = 0): NaN, -inf, -1e38 and +inf must come out as
    # torch's (relu keeps NaN; silu/gelu_tanh give NaN at -inf and -0 at -1e38: no exponent clamp).
    nan, inf = float("nan"), float("inf")
    bias = torch.tensor([nan, -inf, -1e38, -2.0, 0.0, 3.0, inf], device=device)
    a, b = torch.zeros(2, 3, device=device), torch.zeros(3, 7, device=device)
    out = mm.matmul(a, b, activation, bias=bias)
    ref = mm.matmul_reference(a, b, activation, bias=bias)
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert torch.equal(torch.signbit(out), torch.signbit(ref))


def _grads3(fn, a, b, bias, activation, seed=0):
    leaves = [t.detach().clone().requires_grad_(True) for t in (a, b, bias)]
    out = fn(leaves[0], leaves[1], activation, leaves[2])
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    return torch.autograd.grad(out, leaves, g)


@pytest.mark.parametrize("activation", mm.ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_torch(dtype, activation):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, 37, 130, generator=g).to(device, dtype)
    b = (torch.randn(130, 33, generator=g) / math.sqrt(130)).to(device, dtype)
    bias = torch.randn(33, generator=g).to(device, dtype)
    got = _grads3(mm.matmul, a, b, bias, activation)
    ref = _grads3(lambda *x: mm.matmul_reference(*x, upcast=True), a, b, bias, activation)
    low = _grads3(lambda *x: mm.matmul_reference(*x, upcast=False), a, b, bias, activation)
    for name, g_, r, lo in zip(("da", "db", "dbias"), got, ref, low, strict=True):
        assert g_.dtype == dtype
        assert_matches(g_, r, lo, _tol(dtype), grad=True, what=name, reduction=2 * 37)


def test_backward_runs_through_the_triton_matmul(monkeypatch):
    calls = []
    launch = mm._launch

    def counting(a3, b3, *args):
        calls.append((tuple(a3.shape), tuple(b3.shape)))
        return launch(a3, b3, *args)

    monkeypatch.setattr(mm, "_launch", counting)
    w = torch.randn(6, 4, device=device, requires_grad=True)
    x = torch.randn(5, 6, device=device, requires_grad=True)
    out = mm.matmul(x, w, "silu")
    assert out.grad_fn is not None
    out.sum().backward()
    assert w.grad is not None and x.grad is not None
    # forward, then dA = dZ @ B^T and dB = A^T @ dZ, all (B, rows, cols) launches of the same kernel
    assert calls == [((1, 5, 6), (1, 6, 4)), ((1, 5, 4), (1, 4, 6)), ((1, 6, 5), (1, 5, 4))]


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [((4, 7, 9), (4, 9, 5)), ((2, 3, 7, 9), (9, 5)), ((7, 9), (3, 9, 5)), ((4, 1, 7, 9), (3, 9, 5))],
)
def test_batched_and_broadcast_like_torch_matmul(a_shape, b_shape):
    g = torch.Generator().manual_seed(5)
    a = torch.randn(a_shape, generator=g, dtype=torch.float64).to(device)
    b = torch.randn(b_shape, generator=g, dtype=torch.float64).to(device)
    bias = torch.randn(b_shape[-1], generator=g, dtype=torch.float64).to(device)
    out = mm.matmul(a, b, "gelu_tanh", bias=bias)
    ref = torch.nn.functional.gelu(torch.matmul(a, b) + bias, approximate="tanh")
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # Gradients of broadcast operands are summed back to their shapes.
    got = _grads3(mm.matmul, a, b, bias, "gelu_tanh")
    want = _grads3(lambda *x: mm.matmul_reference(*x), a, b, bias, "gelu_tanh")
    for g_, w_ in zip(got, want, strict=True):
        assert g_.shape == w_.shape
        torch.testing.assert_close(g_, w_, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("activation", mm.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_realistic_size(dtype, activation):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2048, 3000, generator=g).to("cuda", dtype)
    b = (torch.randn(3000, 1536, generator=g) / math.sqrt(3000)).to("cuda", dtype)
    _check(a, b, activation)


def test_cross_compile_covers_an_output_past_int32_offsets():
    # tests/kernels/test_cross_compile.py compiles every "meta" example for sm_90; this one's output
    # has more than 2^31 elements, so its offsets only fit the kernel's int64 arithmetic.
    big = [
        ex
        for ex in SPEC.examples("meta", torch.float16, 0)
        if ex.args[0].shape[0] * ex.args[1].shape[-1] > 2**31
    ]
    assert big and all(a.device.type == "meta" for a in big[0].args)
    assert not any(
        ex.args[0].shape[0] * ex.args[1].shape[-1] > 2**31 for ex in SPEC.examples("cpu", torch.float16, 0)
    )
