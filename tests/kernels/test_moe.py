"""MoE routing and the grouped GEMM over experts against torch, gradients and a whole MoE layer included."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from kernelnotes.kernels import moe
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, gpu, grads

device = DEVICE
ROUTER, GROUPED = moe.SPECS
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _router_grad(fn, logits: torch.Tensor, top_k: int, seed: int, aux_weight: float, **kw) -> torch.Tensor:
    """d logits of sum(weights * G) + aux_weight * aux_loss for a fixed random G."""
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x, top_k, **kw)
    g = torch.randn(out.weights.shape, generator=torch.Generator().manual_seed(seed)).to(out.weights)
    total = (out.weights * g).sum() + aux_weight * out.aux_loss
    (dx,) = torch.autograd.grad(total, x)
    return dx


def test_specs_validate() -> None:
    assert [s.name for s in moe.SPECS] == ["moe_router", "moe_grouped_matmul"]
    for spec in moe.SPECS:
        assert isinstance(spec, KernelSpec) and spec.module == "kernelnotes.kernels.moe"
        assert spec.backward and spec.description
        assert set(spec.dtypes) == set(spec.tolerances) == {"float32", "float16", "bfloat16", "float64"}
        for ex in spec.examples(device, torch.bfloat16, 0):
            assert spec.flops(*ex.args, **ex.kwargs) > 0 and spec.bytes(*ex.args, **ex.kwargs) > 0
    x, w, o = GROUPED.examples("cpu", torch.float32, 0)[0].args
    assert GROUPED.flops(x, w, o) == 2 * 21 * 33 * 20


# ---- router ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_router_matches_torch(dtype: torch.dtype) -> None:
    tol = ROUTER.tolerances[dtype_name(dtype)]
    for seed in (0, 1):
        for ex in ROUTER.examples(device, dtype, seed):
            what = f"{ex.label} seed={seed}"
            logits, k = ex.args
            out = ROUTER.implementation(*ex.args, **ex.kwargs)
            ref = ROUTER.reference(*ex.args, **ex.kwargs)
            low = ROUTER.reference(*ex.args, **ex.kwargs, upcast=False)
            assert isinstance(out, moe.RouterOutput) and out.weights.dtype == out.aux_loss.dtype == dtype
            assert_matches(out.weights, ref.weights, low.weights, tol, what=f"weights {what}")
            for name in ("experts", "tokens_per_expert", "sorted_slots", "group_offsets"):
                assert torch.equal(getattr(out, name), getattr(ref, name)), f"{name} {what}"
            assert_matches(out.aux_loss, ref.aux_loss, low.aux_loss, tol, what=f"aux loss {what}")
            # The permutation really groups the slots by expert, stably.
            assert torch.equal(
                out.experts.reshape(-1)[out.sorted_slots], out.experts.reshape(-1).sort().values
            )
            assert int(out.tokens_per_expert.sum()) == logits.shape[0] * k
            for aux_weight in (0.0, 0.7):
                dx = _router_grad(ROUTER.implementation, logits, k, seed, aux_weight, **ex.kwargs)
                dref = _router_grad(ROUTER.reference, logits, k, seed, aux_weight, **ex.kwargs)
                dlow = _router_grad(
                    functools.partial(ROUTER.reference, upcast=False),
                    logits,
                    k,
                    seed,
                    aux_weight,
                    **ex.kwargs,
                )
                assert dx.dtype == dtype
                assert_matches(dx, dref, dlow, tol, grad=True, what=f"dlogits {what} aux={aux_weight}")


@pytest.mark.parametrize("normalize", [True, False])
def test_router_gradcheck_float64(normalize: bool) -> None:
    # Distinct logits 1/4 apart: gradcheck's perturbations (1e-6) never change the chosen experts.
    logits = moe.distinct_logits(9, 12, torch.Generator().manual_seed(0)).double().to(device)
    logits.requires_grad_(True)

    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = moe.moe_router(x, 3, normalize=normalize)
        return out.weights, out.aux_loss

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True)


def test_router_statistics_by_hand() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -3.0], [0.0, 0.5, 4.0, 1.0]], device=device)
    out = moe.moe_router(logits, 2)
    assert out.experts.tolist() == [[0, 1], [1, 2], [2, 3]]
    assert out.tokens_per_expert.tolist() == [1, 2, 2, 1]
    assert out.group_offsets.tolist() == [0, 1, 3, 5, 6]
    assert out.sorted_slots.tolist() == [0, 1, 2, 3, 4, 5]
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(3, device=device))
    p = torch.softmax(logits, -1)
    f = torch.tensor([1, 2, 2, 1], device=device) / 6
    torch.testing.assert_close(out.aux_loss, 4 * (f * p.mean(0)).sum())
    # Perfectly balanced routing gives an auxiliary loss of exactly 1.
    balanced = moe.moe_router(torch.eye(4, device=device) * 5, 1)
    torch.testing.assert_close(balanced.aux_loss, torch.tensor(1.0, device=device), rtol=0, atol=1e-6)
    # Without renormalisation the weights are the softmax probabilities themselves.
    raw = moe.moe_router(logits, 2, normalize=False)
    torch.testing.assert_close(raw.weights, p.gather(1, raw.experts))


def test_router_rejects_bad_arguments() -> None:
    logits = torch.randn(5, 4, device=device)
    with pytest.raises(ValueError, match="top_k must be in"):
        moe.moe_router(logits, 5)
    with pytest.raises(ValueError, match="top_k must be in"):
        moe.moe_router(logits, 0)
    with pytest.raises(ValueError, match="expected router logits"):
        moe.moe_router(logits[None], 2)
    with pytest.raises(ValueError, match="supports 1 to"):
        moe.moe_router(torch.randn(2, moe.MAX_EXPERTS + 1, device=device), 2)
    with pytest.raises(TypeError, match="floating point"):
        moe.moe_router(torch.ones(2, 4, dtype=torch.long, device=device), 1)


def test_router_empty_batch() -> None:
    out = moe.moe_router(torch.empty(0, 8, device=device), 2)
    assert out.weights.shape == out.experts.shape == (0, 2)
    assert out.tokens_per_expert.tolist() == [0] * 8 and out.group_offsets.tolist() == [0] * 9


# ---- grouped GEMM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_grouped_matmul_matches_torch(dtype: torch.dtype) -> None:
    tol = GROUPED.tolerances[dtype_name(dtype)]
    for seed in (0, 1):
        for ex in GROUPED.examples(device, dtype, seed):
            what = f"{ex.label} seed={seed}"
            out = GROUPED.implementation(*ex.args)
            ref = GROUPED.reference(*ex.args)
            low = GROUPED.reference(*ex.args, upcast=False)
            assert out.dtype == dtype
            assert_matches(out, ref, low, tol, what=f"output {what}")
            got = grads(GROUPED.implementation, ex.args, {}, seed)
            want = grads(GROUPED.reference, ex.args, {}, seed)
            lowg = grads(functools.partial(GROUPED.reference, upcast=False), ex.args, {}, seed)
            for name, g, w, lo in zip(("dx", "dweight"), got, want, lowg):
                assert g.dtype == dtype
                assert_matches(g, w, lo, tol, grad=True, what=f"{name} {what}")


def test_grouped_matmul_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(1)
    sizes = [2, 0, 5, 1]  # an empty expert: its d weight is exactly zero
    x = torch.randn(8, 6, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    w = torch.randn(4, 6, 3, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    offsets = moe._offsets(sizes, device)
    assert torch.autograd.gradcheck(
        lambda a, b: moe.moe_grouped_matmul(a, b, offsets), (x, w), fast_mode=True
    )
    moe.moe_grouped_matmul(x, w, offsets).sum().backward()
    assert torch.equal(w.grad[1], torch.zeros_like(w.grad[1]))


def test_grouped_matmul_tile_map() -> None:
    offsets = torch.tensor([0, 3, 3, 70, 71])  # sizes 3, 0, 67, 1 with 32-row tiles: 1 + 0 + 3 + 1
    expert, row = moe._tile_map(offsets, 71, 32)
    assert expert.numel() == 3 + 4  # cdiv(71, 32) + E: an upper bound, no host sync
    assert expert.tolist() == [0, 2, 2, 2, 3, -1, -1]
    assert row[:5].tolist() == [0, 3, 35, 67, 70]


def test_grouped_matmul_int32_offsets_and_strided_inputs() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 50, generator=g, dtype=torch.float64).to(device)[:, 5:38]  # row stride 50
    w = torch.randn(3, 20, 33, generator=g, dtype=torch.float64).to(device).transpose(1, 2)  # (3, 33, 20)
    offsets = torch.tensor([0, 13, 13, 40], dtype=torch.int32, device=device)
    torch.testing.assert_close(moe.moe_grouped_matmul(x, w, offsets), GROUPED.reference(x, w, offsets))


def test_grouped_matmul_rejects_bad_offsets() -> None:
    x = torch.randn(6, 4, device=device)
    w = torch.randn(2, 4, 3, device=device)
    for bad in ([1, 3, 6], [0, 4, 3], [0, 2, 5]):
        with pytest.raises(ValueError, match="must rise from 0 to 6"):
            moe.moe_grouped_matmul(x, w, torch.tensor(bad, device=device))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        moe.moe_grouped_matmul(x, w, torch.tensor([0, 6], device=device))
    with pytest.raises(ValueError, match="int32/int64"):
        moe.moe_grouped_matmul(x, w, torch.tensor([0.0, 3.0, 6.0], device=device))
    with pytest.raises(ValueError, match="expected x"):
        moe.moe_grouped_matmul(x, w.transpose(1, 2), torch.tensor([0, 3, 6], device=device))
    with pytest.raises(TypeError, match="share a float dtype"):
        moe.moe_grouped_matmul(x, w.double(), torch.tensor([0, 3, 6], device=device))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])  # each has its own GPU tiles
def test_gpu_tiling_matches_the_reference(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_mm_block_sizes", "_dw_block_sizes"):
        monkeypatch.setattr(moe, name, functools.partial(getattr(moe, name), gpu=True))
    tol = GROUPED.tolerances[dtype]
    for ex in GROUPED.examples(device, getattr(torch, dtype), 0):
        assert_matches(
            GROUPED.implementation(*ex.args), GROUPED.reference(*ex.args),
            GROUPED.reference(*ex.args, upcast=False), tol, what=ex.label,
        )  # fmt: skip
        got = grads(GROUPED.implementation, ex.args, {}, 0)
        want = grads(GROUPED.reference, ex.args, {}, 0)
        low = grads(functools.partial(GROUPED.reference, upcast=False), ex.args, {}, 0)
        for g, w, lo in zip(got, want, low):
            assert_matches(g, w, lo, tol, grad=True, what=ex.label)


# ---- a whole MoE layer -----------------------------------------------------------------------------


def _moe_layer(x, router_w, w1, w2, top_k):
    """Router -> permute -> expert MLP (grouped GEMM, silu, grouped GEMM) -> weighted combine."""
    r = moe.moe_router(x @ router_w, top_k)
    h = moe.moe_permute(x, r.sorted_slots, top_k)
    h = F.silu(moe.moe_grouped_matmul(h, w1, r.group_offsets))
    y = moe.moe_grouped_matmul(h, w2, r.group_offsets)
    return moe.moe_unpermute(y, r.sorted_slots, r.weights) + 0.01 * r.aux_loss


def _dense_layer(x, router_w, w1, w2, top_k):
    """The same layer, token by token, in plain torch."""
    p = torch.softmax(x @ router_w, -1)
    weights, experts = torch.topk(p, top_k, -1)
    weights = weights / weights.sum(-1, keepdim=True)
    rows = []
    for t in range(x.shape[0]):
        rows.append(
            sum(weights[t, j] * (F.silu(x[t] @ w1[e]) @ w2[e]) for j, e in enumerate(experts[t].tolist()))
        )
    counts = torch.bincount(experts.reshape(-1), minlength=p.shape[1]).to(p.dtype)
    aux = p.shape[1] * (counts / experts.numel() * p.mean(0)).sum()
    return torch.stack(rows) + 0.01 * aux


def test_moe_layer_matches_a_dense_loop_with_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    tokens, hidden, ffn, experts, top_k = 23, 12, 10, 5, 2
    params = [
        torch.randn(tokens, hidden, generator=g, dtype=torch.float64),
        torch.randn(hidden, experts, generator=g, dtype=torch.float64),
        torch.randn(experts, hidden, ffn, generator=g, dtype=torch.float64) / hidden**0.5,
        torch.randn(experts, ffn, hidden, generator=g, dtype=torch.float64) / ffn**0.5,
    ]
    ours = [p.to(device).requires_grad_(True) for p in params]
    dense = [p.to(device).requires_grad_(True) for p in params]
    out, ref = _moe_layer(*ours, top_k), _dense_layer(*dense, top_k)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64).to(device)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for name, a, b in zip(("x", "router", "w1", "w2"), ours, dense):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-11, msg=name)


# ---- GPU ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_name)
@pytest.mark.parametrize("sizes", [pytest.param([1000, 7, 0, 900, 131, 2048, 1, 17], marks=gpu)])
def test_gpu_grouped_matmul_realistic_size(sizes: list[int], dtype: torch.dtype) -> None:
    tol = GROUPED.tolerances[dtype_name(dtype)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(sizes), 2048, generator=g).to("cuda", dtype)
    w = (torch.randn(len(sizes), 2048, 1408, generator=g) / 2048**0.5).to("cuda", dtype)
    args = (x, w, moe._offsets(sizes, "cuda"))
    assert_matches(
        GROUPED.implementation(*args), GROUPED.reference(*args), GROUPED.reference(*args, upcast=False), tol
    )
    for gi, wi, lo in zip(
        grads(GROUPED.implementation, args, {}, 0),
        grads(GROUPED.reference, args, {}, 0),
        grads(functools.partial(GROUPED.reference, upcast=False), args, {}, 0),
    ):
        assert_matches(gi, wi, lo, tol, grad=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_name)
@pytest.mark.parametrize("shape", [pytest.param((8192, 256, 8), marks=gpu)])
def test_gpu_router_realistic_size(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    tokens, experts, k = shape
    logits = moe.distinct_logits(tokens, experts, torch.Generator().manual_seed(0)).to("cuda", dtype)
    out, ref = moe.moe_router(logits, k), moe.moe_router_reference(logits, k)
    low = moe.moe_router_reference(logits, k, upcast=False)
    assert torch.equal(out.experts, ref.experts) and torch.equal(out.group_offsets, ref.group_offsets)
    assert_matches(out.weights, ref.weights, low.weights, ROUTER.tolerances[dtype_name(dtype)])
