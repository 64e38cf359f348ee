"""FlashAttention-2 style exact attention: tiled online softmax forward, recomputing backward.

Layout `(batch, seq, heads, dim)`. The forward never materialises the `seqlen_q x seqlen_k` score
matrix: each program owns `BLOCK_M` queries of one (sequence, head), streams `BLOCK_N` keys at a time
and keeps a running max `m`, a running denominator `l` and an fp32 output accumulator, rescaling
them when the max grows. It stores the log-sum-exp (LSE) of each query row, which is all the backward
needs to recompute the probabilities block by block:

- `delta_i = sum_d dO_id O_id` (a small preprocessing kernel),
- dK, dV: one program per key block, looping over query blocks (no atomics: each program owns its rows),
- dQ: one program per query block, looping over key blocks.

The causal mask is aligned to the bottom-right corner, as in FlashAttention 2.1+: query `i` attends
keys `j <= i + seqlen_k - seqlen_q`. A query that can see no key at all (possible when
`seqlen_q > seqlen_k`) gets a zero output and LSE `+inf`, FlashAttention's convention, which makes
its probabilities `exp(s - lse)` exactly zero in the backward.

The kernels work on packed `(total_tokens, heads, dim)` tensors and optionally read per-sequence
offsets from `cu_seqlens` (`VARLEN`), so `kernelnotes.kernels.varlen_attention` reuses them; the
fixed-length case is the packed layout with sequence `b` starting at token `b * seqlen`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import (
    INTERPRET,
    acc_dtype,
    empty_out,
    finish,
    require_dtype,
    upcast,
    upcast_ref,
)
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

LN2 = 0.6931471805599453

# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _seq_bounds(cu_seqlens, b, seqlen, VARLEN: tl.constexpr):
    """(first token, length) of sequence `b` in the packed layout."""
    if VARLEN:
        start = tl.load(cu_seqlens + b)
        length = tl.load(cu_seqlens + b + 1) - start
    else:
        start = b * seqlen
        length = seqlen
    # int64: every token offset below is start + i, times a row stride -- past 2^31 elements for
    # long packed batches.
    return start.to(tl.int64), length


@triton.jit
def _mm(a, b, DOT_FP32: tl.constexpr):
    """a @ b with fp32 accumulation; exact fp32 products when DOT_FP32 (fp32 inputs or the interpreter)."""
    if DOT_FP32:
        return tl.dot(upcast(a), upcast(b), input_precision="ieee")  # fp64 stays fp64
    else:
        return tl.dot(a, b)


@triton.jit
def _attn_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    cu_seqlens_q,
    cu_seqlens_k,
    seqlen_q,
    seqlen_k,
    total_q,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    head_dim,
    SCALE,
    CAUSAL: tl.constexpr,
    VARLEN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q_start, len_q = _seq_bounds(cu_seqlens_q, b, seqlen_q, VARLEN)
    k_start, len_k = _seq_bounds(cu_seqlens_k, b, seqlen_k, VARLEN)
    # The grid covers the longest sequence; shorter ones leave idle programs.
    if pid_m * BLOCK_M >= len_q:
        return

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < len_q
    d_ok = offs_d < head_dim
    q = tl.load(
        Q + (q_start + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
        mask=m_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    k_base = K + k_start * stride_kt + h * stride_kh
    v_base = V + k_start * stride_vt + h * stride_vh

    # Scores are kept in log2 units (scale * log2(e) folded in) so the kernel uses exp2.
    # Statistics and the accumulator in the compute dtype (fp64 for fp64 inputs); the scale is read
    # from memory in that dtype, since a Python float argument would arrive rounded to fp32.
    acc_ty = tl.float64 if Q.dtype.element_ty == tl.float64 else tl.float32
    qk_scale = tl.load(SCALE).to(acc_ty) * 1.4426950408889634
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=acc_ty)
    l_i = tl.zeros((BLOCK_M,), dtype=acc_ty)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=acc_ty)

    diag = len_k - len_q  # bottom-right causal alignment
    hi = len_k
    if CAUSAL:
        # Keys beyond the last query row's diagonal are masked for the whole block: skip them.
        hi = tl.minimum(len_k, tl.maximum((pid_m + 1) * BLOCK_M + diag, 0))
    for n0 in range(0, hi, BLOCK_N):
        n = n0 + offs_n
        n_ok = n < len_k
        k = tl.load(
            k_base + n[:, None] * stride_kt + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
        )
        s = _mm(q, tl.trans(k), DOT_FP32) * qk_scale
        valid = n_ok[None, :]
        if CAUSAL:
            valid = valid & (n[None, :] <= offs_m[:, None] + diag)
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # Rows that have seen no valid key yet keep m = -inf; subtract 0 for them to avoid inf - inf.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + n[:, None] * stride_vt + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
        )
        if DOT_FP32:
            acc = acc * alpha[:, None] + _mm(p, v, DOT_FP32)
        else:
            acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, DOT_FP32)
        m_i = m_new

    # A query that sees no key (causal, more queries than keys) gets 0 and lse +inf. A query whose
    # scores are all -inf *from the data* (an inf in q or k) gets 0/0 = NaN, as torch's softmax does.
    empty = (offs_m + diag < 0) if CAUSAL else (offs_m < 0)
    empty = empty | (len_k == 0)
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
    tl.store(
        O + (q_start + offs_m)[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
        out.to(O.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )
    # LSE is stored as (heads, total_q) fp32.
    tl.store(LSE + h * total_q + q_start + offs_m, lse, mask=m_ok)


@triton.jit
def _attn_bwd_preprocess_kernel(
    O,
    DO,
    DELTA,
    total_q,
    stride_ot,
    stride_oh,
    stride_dot,
    stride_doh,
    head_dim,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # delta_i = rowsum(dO * O): the softmax backward's correction term, one fp32 per (head, token).
    pid = tl.program_id(0)
    h = tl.program_id(1)
    t = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    mask = (t < total_q)[:, None] & (d < head_dim)[None, :]
    o = upcast(tl.load(O + t[:, None] * stride_ot + h * stride_oh + d[None, :], mask=mask, other=0.0))
    do = upcast(tl.load(DO + t[:, None] * stride_dot + h * stride_doh + d[None, :], mask=mask, other=0.0))
    tl.store(DELTA + h * total_q + t, tl.sum(o * do, 1), mask=t < total_q)


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    cu_seqlens_q,
    cu_seqlens_k,
    seqlen_q,
    seqlen_k,
    total_q,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dkt,
    stride_dkh,
    stride_dvt,
    stride_dvh,
    head_dim,
    SCALE,
    CAUSAL: tl.constexpr,
    VARLEN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q_start, len_q = _seq_bounds(cu_seqlens_q, b, seqlen_q, VARLEN)
    k_start, len_k = _seq_bounds(cu_seqlens_k, b, seqlen_k, VARLEN)
    if pid_n * BLOCK_N >= len_k:
        return

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < len_k
    d_ok = offs_d < head_dim
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(
        K + (k_start + offs_n)[:, None] * stride_kt + h * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0
    )
    v = tl.load(
        V + (k_start + offs_n)[:, None] * stride_vt + h * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0
    )
    acc_ty = tl.float64 if Q.dtype.element_ty == tl.float64 else tl.float32
    sm_scale = tl.load(SCALE).to(acc_ty)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=acc_ty)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=acc_ty)

    diag = len_k - len_q
    lo = 0
    if CAUSAL:
        # Query rows i < j - diag cannot see any key of this block; start at the block holding the first.
        lo = tl.maximum(pid_n * BLOCK_N - diag, 0)
        lo = (lo // BLOCK_M) * BLOCK_M
    qk_scale = sm_scale * 1.4426950408889634
    for m0 in range(lo, len_q, BLOCK_M):
        m = m0 + offs_m
        m_ok = m < len_q
        q_mask = m_ok[:, None] & d_ok[None, :]
        q = tl.load(
            Q + (q_start + m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :], mask=q_mask, other=0.0
        )
        do = tl.load(
            DO + (q_start + m)[:, None] * stride_dot + h * stride_doh + offs_d[None, :],
            mask=q_mask,
            other=0.0,
        )
        # Padding rows get LSE = +inf so their probabilities are exactly zero.
        lse = tl.load(LSE + h * total_q + q_start + m, mask=m_ok, other=float("inf"))
        delta = tl.load(DELTA + h * total_q + q_start + m, mask=m_ok, other=0.0)
        s = _mm(q, tl.trans(k), DOT_FP32)
        p = tl.exp2(s * qk_scale - lse[:, None] * 1.4426950408889634)
        valid = n_ok[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= m[:, None] + diag)
        p = tl.where(valid, p, 0.0)
        dp = _mm(do, tl.trans(v), DOT_FP32)
        ds = p * (dp - delta[:, None])
        if DOT_FP32:
            dv += _mm(tl.trans(p), do, DOT_FP32)
            dk += _mm(tl.trans(ds), q, DOT_FP32)
        else:
            dv += _mm(tl.trans(p.to(do.dtype)), do, DOT_FP32)
            dk += _mm(tl.trans(ds.to(q.dtype)), q, DOT_FP32)
    dk = dk * sm_scale
    tl.store(
        DK + (k_start + offs_n)[:, None] * stride_dkt + h * stride_dkh + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=kv_mask,
    )
    tl.store(
        DV + (k_start + offs_n)[:, None] * stride_dvt + h * stride_dvh + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=kv_mask,
    )


@triton.jit
def _attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    cu_seqlens_q,
    cu_seqlens_k,
    seqlen_q,
    seqlen_k,
    total_q,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dqt,
    stride_dqh,
    head_dim,
    SCALE,
    CAUSAL: tl.constexpr,
    VARLEN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q_start, len_q = _seq_bounds(cu_seqlens_q, b, seqlen_q, VARLEN)
    k_start, len_k = _seq_bounds(cu_seqlens_k, b, seqlen_k, VARLEN)
    if pid_m * BLOCK_M >= len_q:
        return

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < len_q
    d_ok = offs_d < head_dim
    q_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(
        Q + (q_start + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :], mask=q_mask, other=0.0
    )
    do = tl.load(
        DO + (q_start + offs_m)[:, None] * stride_dot + h * stride_doh + offs_d[None, :],
        mask=q_mask,
        other=0.0,
    )
    lse = tl.load(LSE + h * total_q + q_start + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + h * total_q + q_start + offs_m, mask=m_ok, other=0.0)
    acc_ty = tl.float64 if Q.dtype.element_ty == tl.float64 else tl.float32
    sm_scale = tl.load(SCALE).to(acc_ty)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=acc_ty)

    diag = len_k - len_q
    hi = len_k
    if CAUSAL:
        hi = tl.minimum(len_k, tl.maximum((pid_m + 1) * BLOCK_M + diag, 0))
    qk_scale = sm_scale * 1.4426950408889634
    for n0 in range(0, hi, BLOCK_N):
        n = n0 + offs_n
        n_ok = n < len_k
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(
            K + (k_start + n)[:, None] * stride_kt + h * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0
        )
        v = tl.load(
            V + (k_start + n)[:, None] * stride_vt + h * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0
        )
        s = _mm(q, tl.trans(k), DOT_FP32)
        p = tl.exp2(s * qk_scale - lse[:, None] * 1.4426950408889634)
        valid = n_ok[None, :]
        if CAUSAL:
            valid = valid & (n[None, :] <= offs_m[:, None] + diag)
        p = tl.where(valid, p, 0.0)
        dp = _mm(do, tl.trans(v), DOT_FP32)
        ds = p * (dp - delta[:, None])
        if DOT_FP32:
            dq += _mm(ds, k, DOT_FP32)
        else:
            dq += _mm(ds.to(k.dtype), k, DOT_FP32)
    dq = dq * sm_scale
    tl.store(
        DQ + (q_start + offs_m)[:, None] * stride_dqt + h * stride_dqh + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=q_mask,
    )


# --------------------------------------------------------------------------------------------------
# Launchers (packed layout: (total_tokens, heads, dim), contiguous in the last dimension)
# --------------------------------------------------------------------------------------------------


def _block_sizes(
    head_dim: int, seqlen_q: int, seqlen_k: int, dtype: torch.dtype, backward: bool, gpu: bool = not INTERPRET
) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages).

    Interpreter: few, large tiles (each program costs ~1 ms), but no larger than the sequences need,
    since numpy really multiplies the padding. GPU: fixed tiles, chosen with `cross_compile` so that
    for sm_90 nothing spills registers and shared memory fits (e.g. 128x64 tiles with 3 stages would
    need 256 KiB at head dim 256, over the H100's 227 KiB); 16-bit tiles at head dim <= 128 use wgmma.
    `gpu=True` under the interpreter lets tests check the GPU tiling on CPU.
    """
    if not gpu:
        return (
            min(128, max(16, triton.next_power_of_2(seqlen_q))),
            min(128, max(16, triton.next_power_of_2(seqlen_k))),
            4,
            1,
        )
    wide = head_dim > 128
    if dtype in (torch.float32, torch.float64):
        # IEEE fp32 (and fp64) dots run on the FMA units with whole tiles in registers: keep the tiles small.
        return 16, 16, 4, 1
    if backward:
        # dK and dV accumulate in fp32 registers next to the K and V tiles: narrower key blocks.
        return (32, 64, 8, 2) if wide else (64, 32, 8, 2)
    return (64, 64, 8, 2) if wide else (128, 64, 8, 3)


def _scale_arg(softmax_scale: float, q: torch.Tensor) -> torch.Tensor:
    """The softmax scale as a one-element tensor in the compute dtype (exact for fp64 inputs)."""
    return torch.full((1,), softmax_scale, dtype=acc_dtype(q.dtype), device=q.device)


MAX_HEAD_DIM = 256  # q/k/v tiles of a wider head do not fit the registers and shared memory of one program


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ndim: int) -> None:
    if q.dim() != ndim or k.dim() != ndim or v.dim() != ndim:
        raise ValueError(f"q, k, v must be {ndim}-D, got {q.dim()}, {k.dim()}, {v.dim()}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1] or k.shape != v.shape or q.shape[-2] != k.shape[-2]:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    require_dtype("attention", q, allowed=(torch.float32, torch.float16, torch.bfloat16, torch.float64))
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"head dim {q.shape[-1]} > {MAX_HEAD_DIM} is not supported")


def attention_forward_packed(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    batch: int,
    seqlen_q: int,
    seqlen_k: int,
    causal: bool,
    softmax_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward on packed, contiguous `(total, heads, dim)` tensors -> (out, lse of shape (heads, total_q)).

    Without `cu_seqlens` sequence `b` occupies tokens `[b * seqlen, (b + 1) * seqlen)`; with them
    `seqlen_q`/`seqlen_k` are the maximum lengths (they size the grid).
    """
    total_q, n_heads, head_dim = q.shape
    out = empty_out(q.shape, q.dtype, q.device)
    lse = torch.empty((n_heads, total_q), dtype=acc_dtype(q.dtype), device=q.device)
    varlen = cu_seqlens_q is not None
    if varlen:
        out.zero_()  # tokens past cu_seqlens_q[-1] are visited by no program
        lse.fill_(float("inf"))
    if total_q == 0 or batch == 0:
        return finish(out, q.dtype), lse
    bm, bn, warps, stages = _block_sizes(head_dim, seqlen_q, seqlen_k, q.dtype, backward=False)
    grid = (triton.cdiv(seqlen_q, bm), batch, n_heads)
    _attn_fwd_kernel[grid](
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens_q if varlen else q,  # unused pointer when not VARLEN
        cu_seqlens_k if varlen else q,
        seqlen_q,
        seqlen_k,
        total_q,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        out.stride(0),
        out.stride(1),
        head_dim,
        _scale_arg(softmax_scale, q),
        CAUSAL=causal,
        VARLEN=varlen,
        DOT_FP32=INTERPRET or q.dtype in (torch.float32, torch.float64),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        num_warps=warps,
        num_stages=stages,
    )
    return finish(out, q.dtype), lse


def attention_backward_packed(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    batch: int,
    seqlen_q: int,
    seqlen_k: int,
    causal: bool,
    softmax_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward on packed, contiguous tensors -> (dq, dk, dv)."""
    total_q, n_heads, head_dim = q.shape
    do = do.contiguous()
    dq = empty_out(q.shape, q.dtype, q.device)
    dk = empty_out(k.shape, k.dtype, k.device)
    dv = empty_out(v.shape, v.dtype, v.device)
    if total_q == 0 or k.shape[0] == 0 or batch == 0:
        # No queries or no keys: every gradient is zero.
        return (finish(dq.zero_(), q.dtype), finish(dk.zero_(), k.dtype), finish(dv.zero_(), v.dtype))
    varlen = cu_seqlens_q is not None
    bm, bn, warps, stages = _block_sizes(head_dim, seqlen_q, seqlen_k, q.dtype, backward=True)
    block_d = max(16, triton.next_power_of_2(head_dim))
    dot_fp32 = INTERPRET or q.dtype in (torch.float32, torch.float64)
    delta = torch.empty((n_heads, total_q), dtype=acc_dtype(q.dtype), device=q.device)
    scale = _scale_arg(softmax_scale, q)
    # Rows of O and dO per program: 8192 elements of each keeps the preprocess under ~128 registers.
    pre_m = max(16, 8192 // block_d)
    _attn_bwd_preprocess_kernel[(triton.cdiv(total_q, pre_m), n_heads)](
        out,
        do,
        delta,
        total_q,
        out.stride(0),
        out.stride(1),
        do.stride(0),
        do.stride(1),
        head_dim,
        BLOCK_M=pre_m,
        BLOCK_D=block_d,
    )
    cu_q = cu_seqlens_q if varlen else q
    cu_k = cu_seqlens_k if varlen else q
    common = dict(
        CAUSAL=causal, VARLEN=varlen, DOT_FP32=dot_fp32, BLOCK_D=block_d, num_warps=warps, num_stages=stages
    )
    # Varlen: tokens past cu_seqlens[-1] belong to no sequence and no program visits them; pre-zero so
    # their gradients are defined. (Fixed length: the kernels write every row.)
    if varlen:
        dq.zero_()
        dk.zero_()
        dv.zero_()
    _attn_bwd_dkdv_kernel[(triton.cdiv(seqlen_k, bn), batch, n_heads)](
        q,
        k,
        v,
        do,
        lse,
        delta,
        dk,
        dv,
        cu_q,
        cu_k,
        seqlen_q,
        seqlen_k,
        total_q,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        do.stride(0),
        do.stride(1),
        dk.stride(0),
        dk.stride(1),
        dv.stride(0),
        dv.stride(1),
        head_dim,
        scale,
        BLOCK_M=bm,
        BLOCK_N=bn,
        **common,
    )
    _attn_bwd_dq_kernel[(triton.cdiv(seqlen_q, bm), batch, n_heads)](
        q,
        k,
        v,
        do,
        lse,
        delta,
        dq,
        cu_q,
        cu_k,
        seqlen_q,
        seqlen_k,
        total_q,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        do.stride(0),
        do.stride(1),
        dq.stride(0),
        dq.stride(1),
        head_dim,
        scale,
        BLOCK_M=bm,
        BLOCK_N=bn,
        **common,
    )
    return finish(dq, q.dtype), finish(dk, k.dtype), finish(dv, v.dtype)


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, softmax_scale):
        batch, seqlen_q, n_heads, head_dim = q.shape
        seqlen_k = k.shape[1]
        # Packing (batch, seq) into one token axis is a free view of contiguous tensors.
        qp = q.contiguous().view(batch * seqlen_q, n_heads, head_dim)
        kp = k.contiguous().view(batch * seqlen_k, n_heads, head_dim)
        vp = v.contiguous().view(batch * seqlen_k, n_heads, head_dim)
        out, lse = attention_forward_packed(
            qp, kp, vp, None, None, batch, seqlen_q, seqlen_k, causal, softmax_scale
        )
        ctx.save_for_backward(qp, kp, vp, out, lse)
        ctx.dims = (batch, seqlen_q, seqlen_k)
        ctx.causal = causal
        ctx.softmax_scale = softmax_scale
        lse_bhs = lse.view(n_heads, batch, seqlen_q).permute(1, 0, 2).contiguous()
        ctx.mark_non_differentiable(lse_bhs)
        return out.view(q.shape), lse_bhs

    @staticmethod
    def backward(ctx, dout, dlse):
        qp, kp, vp, out, lse = ctx.saved_tensors
        batch, seqlen_q, seqlen_k = ctx.dims
        dq, dk, dv = attention_backward_packed(
            dout.reshape(out.shape),
            qp,
            kp,
            vp,
            out,
            lse,
            None,
            None,
            batch,
            seqlen_q,
            seqlen_k,
            ctx.causal,
            ctx.softmax_scale,
        )
        shape_q = (batch, seqlen_q, *qp.shape[1:])
        shape_k = (batch, seqlen_k, *kp.shape[1:])
        return dq.view(shape_q), dk.view(shape_k), dv.view(shape_k), None, None


# --------------------------------------------------------------------------------------------------
# Public function and reference
# --------------------------------------------------------------------------------------------------


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    softmax_scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Exact attention for `q: (batch, seqlen_q, heads, dim)`, `k, v: (batch, seqlen_k, heads, dim)`.

    `softmax_scale` defaults to `1/sqrt(dim)`; `causal` masks bottom-right aligned. Differentiable in
    q, k, v. With `return_lse` also returns the fp32 log-sum-exp `(batch, heads, seqlen_q)` (not
    differentiable; `+inf` for a query that sees no key).
    """
    _check_qkv(q, k, v, 4)
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"batch mismatch: q {q.shape[0]}, k {k.shape[0]}")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    out, lse = FlashAttentionFunction.apply(q, k, v, causal, scale)
    return (out, lse) if return_lse else out


def causal_mask(seqlen_q: int, seqlen_k: int, device: torch.device | str) -> torch.Tensor:
    """Bottom-right aligned causal mask, True where query i may attend key j (j <= i + seqlen_k - seqlen_q)."""
    i = torch.arange(seqlen_q, device=device)[:, None]
    j = torch.arange(seqlen_k, device=device)[None, :]
    return j <= i + (seqlen_k - seqlen_q)


def attention_reference_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    softmax_scale: float,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention in the dtype of its inputs -> (out, lse (batch, heads, seqlen_q) in fp32, fp64
    for fp64 inputs).

    `key_padding_mask` `(batch, seqlen_k)` is True for real keys. Rows with no visible key give a zero
    output and LSE +inf (FlashAttention's convention).
    """
    scores = torch.einsum("bthd,bshd->bhts", q * softmax_scale, k)
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if causal:
        allowed = causal_mask(q.shape[1], k.shape[1], q.device)
    allowed = allowed.expand(scores.shape)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    empty = ~allowed.any(-1, keepdim=True)
    probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
    out = torch.einsum("bhts,bshd->bthd", probs, v)
    lse = torch.logsumexp(upcast_ref(scores), dim=-1).masked_fill(empty.squeeze(-1), float("inf"))
    return out, lse


def flash_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    softmax_scale: float | None = None,
    return_lse: bool = False,
    upcast: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """torch attention computed in fp32 and cast back (`upcast=False`: in the input dtype)."""
    dtype = q.dtype
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if upcast:
        q, k, v = upcast_ref(q), upcast_ref(k), upcast_ref(v)
    out, lse = attention_reference_math(q, k, v, causal, scale)
    out = out.to(dtype)
    return (out, lse) if return_lse else out


# --------------------------------------------------------------------------------------------------
# Examples, cost model, spec
# --------------------------------------------------------------------------------------------------


def flash_attention_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    """(batch, seqlen_q, seqlen_k, heads, dim, causal) cases, ragged and with seqlen_q != seqlen_k."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    if device == "cpu":
        cases = [
            (1, 1, 1, 1, 64, False),
            (2, 17, 65, 2, 64, True),
            (1, 130, 130, 2, 64, True),
            (1, 65, 17, 1, 128, True),
            (1, 33, 130, 2, 128, False),
        ]
    else:
        cases = [
            (2, 17, 65, 2, 64, True),
            (2, 1000, 1000, 4, 64, True),
            (2, 513, 1024, 4, 128, False),
            (1, 1024, 257, 4, 128, True),
            (1, 129, 257, 2, 256, True),
        ]
    out: list[Example] = []
    for b, sq, sk, h, d, causal in cases:
        q = torch.randn(b, sq, h, d, generator=g).to(device=device, dtype=dtype)
        k = torch.randn(b, sk, h, d, generator=g).to(device=device, dtype=dtype)
        v = torch.randn(b, sk, h, d, generator=g).to(device=device, dtype=dtype)
        out.append(
            Example(
                args=(q, k, v), kwargs={"causal": causal}, label=f"b{b} q{sq} k{sk} h{h} d{d} causal={causal}"
            )
        )
    return out


def attention_flops(seqlens_q: int, seqlens_k: int, batch_heads: int, head_dim: int, causal: bool) -> float:
    """4 B H Nq Nk D for the two matmuls (halved when causal)."""
    f = 4.0 * batch_heads * seqlens_q * seqlens_k * head_dim
    return f / 2 if causal else f


def flash_attention_flops(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, *args, **kwargs
) -> float:
    """Forward FLOPs; the backward costs 2.5x this."""
    b, sq, h, d = q.shape
    return attention_flops(sq, k.shape[1], b * h, d, causal)


def flash_attention_bytes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args, **kwargs) -> float:
    """Reads q, k, v and writes out once (the ideal the tiling approaches) plus the fp32 LSE."""
    b, sq, h, _ = q.shape
    return float((2 * q.numel() + k.numel() + v.numel()) * q.element_size() + 4 * b * h * sq)


# fp32: torch-in-fp32 is the reference itself, so the floor is the whole bound.
ATTENTION_TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=8e-3),
    "float64": FLOAT64,
}

SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="flash_attention",
        reference=flash_attention_reference,
        implementation=flash_attention,
        examples=flash_attention_examples,
        tolerances=ATTENTION_TOLERANCES,
        flops=flash_attention_flops,
        bytes=flash_attention_bytes,
        backward=True,
        caps={"head dim": MAX_HEAD_DIM},
        description="FlashAttention-2 forward/backward, (batch, seq, heads, dim), bottom-right causal, LSE.",
        module=__name__,
    ),
)
