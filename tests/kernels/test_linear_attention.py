"""Tests for kernelnotes.kernels.linear_attention: the policy over seeds and ragged lengths, chunk-size
independence, the prefix-sum semantics, edge cases and the spec."""

from __future__ import annotations

import pytest
import torch

from kernelnotes.kernels import linear_attention as la
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

device = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SPEC = la.SPECS[0]


def _tol(dtype: torch.dtype):
    return SPEC.tolerances[str(dtype).removeprefix("torch.")]


def _qkv(b, h, n, dk, dv, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k = ((torch.randn(b, h, n, dk, generator=g) * scale).to(device, dtype) for _ in range(2))
    v = torch.randn(b, h, n, dv, generator=g).to(device, dtype)
    return q, k, v


def _check(q, k, v, **kw) -> torch.Tensor:
    out = la.linear_attention(q, k, v, **kw)
    ref = la.linear_attention_reference(q, k, v, **kw)
    ref_lowp = la.linear_attention_reference(q, k, v, upcast=False, **kw)
    assert out.shape == ref.shape == v.shape and out.dtype == ref.dtype == q.dtype
    assert_matches(out, ref, ref_lowp, _tol(q.dtype))
    return out


def test_spec_is_valid():
    assert isinstance(la.SPECS, tuple) and all(isinstance(s, KernelSpec) for s in la.SPECS)
    assert [s.name for s in la.SPECS] == ["linear_attention"]
    assert SPEC.module == "kernelnotes.kernels.linear_attention"
    assert SPEC.backward is False  # forward only
    assert set(SPEC.tolerances) == {"float32", "float16", "bfloat16"}
    assert SPEC.tolerances["float32"].atol == 1e-4 and SPEC.tolerances["float16"].atol == 1e-2
    q, k, v = _qkv(1, 2, 8, 4, 4, torch.float32, 0)
    assert SPEC.flops(q, k, v) > SPEC.flops(q, k, v, causal=False) > 0
    assert SPEC.bytes(q, k, v) > 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_examples_meet_policy(dtype, seed):
    examples = SPEC.examples(device, dtype, seed)
    assert {ex.args[0].shape[2] for ex in examples} >= {1, 17, 65, 130}
    for ex in examples:
        _check(*ex.args, **ex.kwargs)


def test_matches_token_by_token_recurrence():
    # The semantics written as the sequential scan, in float64.
    q, k, v = _qkv(1, 1, 37, 16, 8, torch.float32, seed=1)
    phi = lambda x: torch.nn.functional.elu(x.double()) + 1
    state, z, rows = torch.zeros(16, 8, dtype=torch.float64), torch.zeros(16, dtype=torch.float64), []
    for t in range(37):
        state = state + phi(k[0, 0, t])[:, None].cpu() * v[0, 0, t].double().cpu()[None, :]
        z = z + phi(k[0, 0, t]).cpu()
        pq = phi(q[0, 0, t]).cpu()
        rows.append(pq @ state / (pq @ z + la.EPS))
    expected = torch.stack(rows).float().to(device)
    out = la.linear_attention(q, k, v, chunk_size=16)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [16, 32, 128])
def test_result_does_not_depend_on_chunk_size(chunk_size):
    q, k, v = _qkv(1, 2, 130, 32, 48, torch.float32, seed=2)
    base = la.linear_attention(q, k, v, chunk_size=64)
    torch.testing.assert_close(
        la.linear_attention(q, k, v, chunk_size=chunk_size), base, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_single_token_and_non_causal(dtype):
    q, k, v = _qkv(2, 1, 1, 64, 64, dtype, seed=3)
    # One token attends only to itself: the output is v (up to eps).
    torch.testing.assert_close(
        _check(q, k, v).float(), v.float(), atol=_tol(dtype).atol, rtol=_tol(dtype).rtol
    )
    _check(*_qkv(1, 2, 33, 64, 17, dtype, seed=3), causal=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_magnitude_inputs_are_finite(dtype):
    # Very negative q, k: phi(x) = exp(x) underflows and eps keeps the normalisation finite.
    q, k, v = _qkv(1, 1, 65, 32, 32, dtype, seed=4)
    q, k = (q.float() - 30).to(dtype), (k.float() - 30).to(dtype)
    assert torch.isfinite(_check(q, k, v)).all()
    if dtype != torch.float16:
        # Large positive q, k. (Not for fp16: the fp16 yardstick itself overflows to inf/inf there.)
        assert torch.isfinite(_check(*_qkv(1, 1, 65, 32, 32, dtype, seed=4, scale=40.0))).all()


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(5)
    # (batch, seq, heads, dim) storage viewed as (batch, heads, seq, dim).
    q, k, v = (torch.randn(2, 65, 2, 32, generator=g).to(device).transpose(1, 2) for _ in range(3))
    assert not q.is_contiguous()
    _check(q, k, v, chunk_size=32)


def test_rejects_bad_arguments():
    q, k, v = _qkv(1, 1, 4, 8, 8, torch.float32, seed=0)
    with pytest.raises(ValueError, match="chunk_size"):
        la.linear_attention(q, k, v, chunk_size=48)
    with pytest.raises(ValueError):
        la.linear_attention(q, k[..., :4], v)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_realistic_size(dtype, causal):
    _check(*_qkv(2, 8, 1024, 64, 64, dtype, seed=0), causal=causal)
    _check(*_qkv(1, 4, 1000, 128, 96, dtype, seed=1), causal=causal, chunk_size=128)
