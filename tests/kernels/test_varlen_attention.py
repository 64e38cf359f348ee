"""Tests for kernelnotes.kernels.varlen_attention: packed attention under the policy, equality with
per-sequence and padded (key-padding-mask) attention, unpad/pad helpers, backward, checkpointing."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import flash_attention as fa
from kernelnotes.kernels import varlen_attention as va
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

device = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SPEC = va.SPECS[0]


def _tol(dtype: torch.dtype):
    return SPEC.tolerances[str(dtype).removeprefix("torch.")]


def _packed(lens_q, lens_k, h, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lens_q), h, d, generator=g).to(device, dtype)
    k = torch.randn(sum(lens_k), h, d, generator=g).to(device, dtype)
    v = torch.randn(sum(lens_k), h, d, generator=g).to(device, dtype)
    cu = lambda lens: torch.tensor(
        [0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device
    )
    return q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k)


def _check_forward(*args, **kw) -> torch.Tensor:
    q = args[0]
    out = va.varlen_attention(*args, **kw)
    ref = va.varlen_attention_reference(*args, **kw)
    ref_lowp = va.varlen_attention_reference(*args, upcast=False, **kw)
    assert out.shape == ref.shape == q.shape and out.dtype == ref.dtype == q.dtype
    assert_matches(out, ref, ref_lowp, _tol(q.dtype))
    return out


def _grads(fn, args, dout, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in args[:3]]
    fn(*leaves, *args[3:], **kw).backward(dout)
    return [t.grad for t in leaves]


def test_spec_is_valid():
    assert isinstance(va.SPECS, tuple) and all(isinstance(s, KernelSpec) for s in va.SPECS)
    assert [s.name for s in va.SPECS] == ["varlen_attention"]
    assert SPEC.module == "kernelnotes.kernels.varlen_attention" and SPEC.backward is True
    assert set(SPEC.tolerances) == {"float32", "float16", "bfloat16", "float64"}
    assert SPEC.tolerances["float32"].atol == 1e-4 and SPEC.tolerances["bfloat16"].atol == 2e-2
    args = _packed([3, 5], [4, 6], 2, 64, torch.float32, 0)
    assert SPEC.flops(*args) == 4 * 2 * 64 * (3 * 4 + 5 * 6)
    assert SPEC.flops(*args, causal=True) == SPEC.flops(*args) / 2
    assert SPEC.bytes(*args) > 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_examples_meet_policy(dtype, seed):
    examples = SPEC.examples(device, dtype, seed)
    assert examples
    for ex in examples:
        cu = ex.args[3]
        assert cu.dtype == torch.int32 and cu[0] == 0
        _check_forward(*ex.args, **ex.kwargs)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_reference_autograd(dtype, seed):
    for lens_q, lens_k, causal in [([1, 17, 40], [1, 17, 40], True), ([33, 5], [20, 65], False)]:
        args = _packed(lens_q, lens_k, 2, 64, dtype, seed)
        dout = torch.randn_like(args[0])
        got = _grads(va.varlen_attention, args, dout, causal=causal)
        ref = _grads(va.varlen_attention_reference, args, dout, causal=causal)
        lowp = _grads(va.varlen_attention_reference, args, dout, causal=causal, upcast=False)
        for name, a, r, lo in zip("qkv", got, ref, lowp):
            assert_matches(a, r, lo, _tol(dtype), grad=True, what=f"d{name}")


@pytest.mark.parametrize("causal", [False, True])
def test_equals_flash_attention_per_sequence(causal):
    lens_q, lens_k = [17, 1, 33], [40, 9, 33]
    q, k, v, cu_q, cu_k, mq, mk = _packed(lens_q, lens_k, 2, 64, torch.float32, seed=1)
    out = va.varlen_attention(q, k, v, cu_q, cu_k, mq, mk, causal=causal)
    for b in range(len(lens_q)):
        sq, sk = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        single = fa.flash_attention(q[sq][None], k[sk][None], v[sk][None], causal=causal)[0]
        torch.testing.assert_close(out[sq], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_padded_attention_with_key_padding_mask(dtype, causal):
    g = torch.Generator().manual_seed(2)
    batch, seqlen, h, d = 3, 37, 2, 64
    lengths = torch.tensor([37, 1, 20])
    mask = (torch.arange(seqlen)[None, :] < lengths[:, None]).to(device)
    q, k, v = (torch.randn(batch, seqlen, h, d, generator=g).to(device, dtype) for _ in range(3))

    unpadded = [va.unpad_input(t, mask) for t in (q, k, v)]
    (qu, idx, cu, max_len), (ku, _, _, _), (vu, _, _, _) = unpadded
    assert cu.tolist() == [0, 37, 38, 58] and max_len == 37
    out = va.pad_input(
        va.varlen_attention(qu, ku, vu, cu, cu, max_len, max_len, causal=causal), idx, batch, seqlen
    )

    # Padded reference: every sequence is right-padded to seqlen, so the padded causal mask restricted to
    # real keys is each sequence's own causal mask.
    ref, _ = fa.attention_reference_math(
        q.float(), k.float(), v.float(), causal, d**-0.5, key_padding_mask=mask
    )
    ref_lowp, _ = fa.attention_reference_math(q, k, v, causal, d**-0.5, key_padding_mask=mask)
    valid = mask[:, :, None, None].expand_as(out)
    assert (out[~valid] == 0).all()
    assert_matches(out[valid], ref.to(dtype)[valid], ref_lowp[valid], _tol(dtype))


def test_unpad_pad_round_trip_and_gradient():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 3, generator=g).to(device).requires_grad_()
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], device=device)
    xu, idx, cu, max_len = va.unpad_input(x, mask)
    assert xu.shape == (7, 3) and idx.tolist() == [0, 1, 5, 6, 7, 8, 9]
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 2, 7] and max_len == 5
    back = va.pad_input(xu, idx, 2, 5)
    torch.testing.assert_close(back, x * mask[..., None], rtol=0, atol=0)
    back.sum().backward()
    torch.testing.assert_close(x.grad, mask[..., None].float().expand_as(x), rtol=0, atol=0)


def test_checkpoint_gives_same_gradients():
    args = _packed([17, 1, 30], [17, 1, 30], 2, 64, torch.float32, seed=4)
    dout = torch.randn_like(args[0])
    fn = lambda q, k, v: va.varlen_attention(q, k, v, *args[3:], causal=True)
    plain = _grads(lambda q, k, v: fn(q, k, v), args[:3], dout)
    ckpt = _grads(lambda q, k, v: checkpoint(fn, q, k, v, use_reentrant=False), args[:3], dout)
    for a, c in zip(plain, ckpt):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_edge_cases_single_tokens_and_empty_sequence(dtype):
    # One-token sequences, an empty sequence, and a causal query block longer than its keys.
    args = _packed([1, 0, 1, 9], [1, 0, 5, 3], 1, 64, dtype, seed=5)
    out = _check_forward(*args, causal=True)
    # Sequence 3 has 9 queries and 3 keys: bottom-right alignment leaves the first 6 without keys.
    assert (out[2:8] == 0).all()
    leaves = [t.detach().clone().requires_grad_() for t in args[:3]]
    va.varlen_attention(*leaves, *args[3:], causal=True).sum().backward()
    assert all(torch.isfinite(t.grad.float()).all() for t in leaves)


def test_large_magnitude_scores_are_stable():
    q, k, v, *rest = _packed([33, 17], [33, 65], 1, 64, torch.float16, seed=6)
    out = _check_forward((q.float() * 30).half(), k, v, *rest)
    assert torch.isfinite(out).all()


def test_rejects_bad_cu_seqlens():
    q, k, v, cu_q, cu_k, mq, mk = _packed([3, 4], [3, 4], 1, 64, torch.float32, seed=0)
    with pytest.raises(ValueError, match="int32"):
        va.varlen_attention(q, k, v, cu_q.long(), cu_k, mq, mk)
    with pytest.raises(ValueError, match="same number"):
        va.varlen_attention(q, k, v, cu_q[:2], cu_k, mq, mk)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_realistic_size(dtype, causal):
    args = _packed([1024, 1, 777, 300], [1024, 1, 777, 1500], 8, 128, dtype, seed=0)
    _check_forward(*args, causal=causal)
    dout = torch.randn_like(args[0])
    got = _grads(va.varlen_attention, args, dout, causal=causal)
    ref = _grads(va.varlen_attention_reference, args, dout, causal=causal)
    lowp = _grads(va.varlen_attention_reference, args, dout, causal=causal, upcast=False)
    for name, a, r, lo in zip("qkv", got, ref, lowp):
        assert_matches(a, r, lo, _tol(dtype), grad=True, what=f"d{name}")
