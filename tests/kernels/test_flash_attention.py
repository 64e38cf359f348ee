"""Tests for kernelnotes.kernels.flash_attention: forward/LSE/backward under the policy, checkpointing,
bottom-right causal alignment, edge cases and the spec."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import flash_attention as fa
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

device = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SPEC = fa.SPECS[0]


def _tol(dtype: torch.dtype):
    return SPEC.tolerances[str(dtype).removeprefix("torch.")]


def _qkv(b, sq, sk, h, d, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, s, h, d, generator=g) * scale).to(device, dtype) for s in (sq, sk, sk)]


def _check_lse(lse: torch.Tensor, ref: torch.Tensor, ref_lowp: torch.Tensor, tol) -> None:
    assert lse.dtype == torch.float32 and lse.shape == ref.shape
    finite = torch.isfinite(ref)
    # Queries that see no key: LSE is +inf in both (FlashAttention's convention).
    assert torch.equal(torch.isfinite(lse), finite) and (lse[~finite] == float("inf")).all()
    assert_matches(lse[finite], ref[finite], ref_lowp[finite], tol, what="lse")


def _check_forward(q, k, v, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    tol = _tol(q.dtype)
    out, lse = fa.flash_attention(q, k, v, return_lse=True, **kw)
    ref, ref_lse = fa.flash_attention_reference(q, k, v, return_lse=True, **kw)
    ref_lowp, lowp_lse = fa.flash_attention_reference(q, k, v, return_lse=True, upcast=False, **kw)
    assert out.shape == ref.shape == q.shape[:3] + v.shape[3:] and out.dtype == ref.dtype == q.dtype
    assert_matches(out, ref, ref_lowp, tol)
    _check_lse(lse, ref_lse, lowp_lse, tol)
    return out, lse


def _grads(fn, q, k, v, dout, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    fn(*leaves, **kw).backward(dout)
    return [t.grad for t in leaves]


def _check_backward(q, k, v, seed=0, **kw) -> None:
    tol = _tol(q.dtype)
    g = torch.Generator().manual_seed(seed + 100)
    dout = torch.randn(q.shape[:3] + v.shape[3:], generator=g).to(device, q.dtype)
    got = _grads(fa.flash_attention, q, k, v, dout, **kw)
    ref = _grads(fa.flash_attention_reference, q, k, v, dout, **kw)
    lowp = _grads(lambda *a, **k2: fa.flash_attention_reference(*a, upcast=False, **k2), q, k, v, dout, **kw)
    for name, a, r, lo in zip("qkv", got, ref, lowp):
        assert a.shape == r.shape and a.dtype == r.dtype
        assert_matches(a, r, lo, tol, grad=True, what=f"d{name}")


def test_spec_is_valid():
    assert isinstance(fa.SPECS, tuple) and all(isinstance(s, KernelSpec) for s in fa.SPECS)
    assert [s.name for s in fa.SPECS] == ["flash_attention"]
    assert SPEC.module == "kernelnotes.kernels.flash_attention" and SPEC.backward is True
    assert set(SPEC.tolerances) == {"float32", "float16", "bfloat16", "float64"}
    assert SPEC.tolerances["float32"].atol == SPEC.tolerances["float32"].rtol == 1e-4
    assert SPEC.tolerances["float16"].atol == 1e-2 and SPEC.tolerances["bfloat16"].atol == 2e-2
    q, k, v = (torch.empty(2, n, 3, 64) for n in (5, 7, 7))
    assert SPEC.flops(q, k, v) == 4 * 2 * 3 * 5 * 7 * 64
    assert SPEC.flops(q, k, v, causal=True) == 2 * 2 * 3 * 5 * 7 * 64
    assert SPEC.bytes(q, k, v) > 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_examples_forward_and_lse(dtype, seed):
    examples = SPEC.examples(device, dtype, seed)
    assert any(ex.args[0].shape[1] != ex.args[1].shape[1] for ex in examples)  # seqlen_q != seqlen_k
    assert {ex.args[0].shape[-1] for ex in examples} >= {64, 128}
    for ex in examples:
        _check_forward(*ex.args, **ex.kwargs)


# Gradient cases: d=64 and d=128, causal and not, seqlen_q < seqlen_k and seqlen_q > seqlen_k.
GRAD_CASES = [(2, 17, 65, 2, 64, True), (1, 130, 33, 1, 128, False), (1, 33, 130, 2, 128, True)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_reference_autograd(dtype, seed):
    for b, sq, sk, h, d, causal in GRAD_CASES:
        _check_backward(*_qkv(b, sq, sk, h, d, dtype, seed), seed=seed, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_checkpoint_gives_same_gradients(dtype):
    q, k, v = _qkv(1, 33, 65, 2, 64, dtype, seed=7)
    dout = torch.randn_like(q)
    fn = lambda q, k, v: fa.flash_attention(q, k, v, causal=True)
    plain = _grads(fn, q, k, v, dout)
    ckpt = _grads(lambda q, k, v: checkpoint(fn, q, k, v, use_reentrant=False), q, k, v, dout)
    for a, c in zip(plain, ckpt):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_causal_is_bottom_right_aligned():
    # seqlen_q < seqlen_k: the last query sees every key, the first sees seqlen_k - seqlen_q + 1 keys.
    q, k, v = _qkv(1, 3, 5, 1, 64, torch.float32, seed=3)
    out = fa.flash_attention(q, k, v, causal=True)
    for i in range(3):
        visible = i + 5 - 3 + 1
        row = fa.flash_attention(q[:, i : i + 1], k[:, :visible], v[:, :visible])
        torch.testing.assert_close(out[:, i : i + 1], row, atol=1e-5, rtol=1e-5)
    mask = fa.causal_mask(3, 5, "cpu")
    assert mask.sum(-1).tolist() == [3, 4, 5]


def test_queries_without_keys_get_zero_output_and_inf_lse():
    # Causal with seqlen_q > seqlen_k: the first seqlen_q - seqlen_k queries see no key.
    q, k, v = _qkv(1, 65, 17, 1, 64, torch.float32, seed=4)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse = fa.flash_attention(*leaves, causal=True, return_lse=True)
    assert (out[:, :48] == 0).all() and (lse[:, :, :48] == float("inf")).all()
    assert torch.isfinite(lse[:, :, 48:]).all()
    out.sum().backward()
    assert (leaves[0].grad[:, :48] == 0).all() and torch.isfinite(leaves[1].grad).all()
    _check_forward(q, k, v, causal=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_single_query_and_single_key(dtype):
    _check_forward(*_qkv(2, 1, 37, 2, 64, dtype, seed=5), causal=True)
    _check_forward(*_qkv(1, 37, 1, 1, 64, dtype, seed=5))
    _check_backward(*_qkv(1, 1, 1, 1, 64, dtype, seed=5))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_magnitude_scores_are_stable(dtype):
    # Scores of order 1e3: a softmax without max subtraction would overflow.
    q, k, v = _qkv(1, 33, 65, 1, 64, dtype, seed=6)
    q = (q.float() * 30).to(dtype)
    out, lse = _check_forward(q, k, v, causal=False)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()


def test_explicit_scale_and_non_contiguous_inputs():
    g = torch.Generator().manual_seed(8)
    # (batch, heads, seq, dim) storage viewed as (batch, seq, heads, dim): non-contiguous.
    q, k, v = (torch.randn(2, 2, n, 64, generator=g).to(device).transpose(1, 2) for n in (17, 33, 33))
    assert not q.is_contiguous()
    _check_forward(q, k, v, causal=True, softmax_scale=0.3)
    _check_backward(q, k, v, causal=True, softmax_scale=0.3)
    default = fa.flash_attention(q, k, v)
    explicit = fa.flash_attention(q, k, v, softmax_scale=1 / math.sqrt(64))
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)


def test_rejects_bad_shapes():
    q = torch.randn(1, 4, 2, 64, device=device)
    with pytest.raises(ValueError):
        fa.flash_attention(
            q, torch.randn(1, 4, 2, 32, device=device), torch.randn(1, 4, 2, 32, device=device)
        )
    with pytest.raises(ValueError):
        fa.flash_attention(q, q.half(), q.half())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_realistic_size(dtype, head_dim, causal):
    q, k, v = _qkv(2, 1024, 1024, 8, head_dim, dtype, seed=0)
    _check_forward(q, k, v, causal=causal)
    _check_backward(q, k, v, causal=causal)
    # seqlen_q != seqlen_k at size, compiled path.
    q2, k2, v2 = _qkv(2, 777, 1500, 8, head_dim, dtype, seed=1)
    _check_forward(q2, k2, v2, causal=causal)
    _check_backward(q2, k2, v2, causal=causal)
