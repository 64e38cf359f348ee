"""Variable-length ("unpadded") attention on packed `(total_tokens, heads, dim)` tensors.

A batch of sequences of different lengths is stored back to back; `cu_seqlens` (int32, starting at 0,
length `batch + 1`) gives each sequence's first token, so no compute is spent on padding. The Triton
kernels are the FlashAttention-2 kernels of `kernelnotes.kernels.flash_attention` in their `VARLEN`
mode: each program reads its sequence's bounds from `cu_seqlens_q`/`cu_seqlens_k`, the grid is sized
by `max_seqlen_q`/`max_seqlen_k`, and programs past the end of a shorter sequence exit at once. The
causal mask is bottom-right aligned per sequence.

`unpad_input`/`pad_input` convert between a padded `(batch, seqlen, ...)` tensor with a boolean
attention mask and the packed layout.
"""

from __future__ import annotations

import math

import torch

from kernelnotes.kernels._common import upcast_ref
from kernelnotes.kernels.flash_attention import (
    ATTENTION_TOLERANCES,
    MAX_HEAD_DIM,
    _check_qkv,
    attention_backward_packed,
    attention_flops,
    attention_forward_packed,
    attention_reference_math,
)
from kernelnotes.kernelspec import Example, KernelSpec

# --------------------------------------------------------------------------------------------------
# Padding helpers
# --------------------------------------------------------------------------------------------------


def unpad_input(
    hidden: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Pack the valid tokens of `hidden (batch, seqlen, ...)`.

    `attention_mask (batch, seqlen)` is True (or 1) for real tokens. Returns `(unpadded (total, ...),
    indices (total,) int64 into the flattened batch*seqlen axis, cu_seqlens (batch + 1,) int32,
    max_seqlen)`. Differentiable in `hidden`.
    """
    mask = attention_mask.bool()
    seqlens = mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max().item()) if seqlens.numel() else 0
    cu_seqlens = torch.zeros(seqlens.numel() + 1, dtype=torch.int32, device=hidden.device)
    cu_seqlens[1:] = torch.cumsum(seqlens, dim=0)
    unpadded = hidden.reshape(-1, *hidden.shape[2:]).index_select(0, indices)
    return unpadded, indices, cu_seqlens, max_seqlen


def pad_input(unpadded: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of `unpad_input`: scatter `unpadded (total, ...)` into zeros of shape `(batch, seqlen, ...)`."""
    out = unpadded.new_zeros(batch * seqlen, *unpadded.shape[1:])
    out = out.index_copy(0, indices, unpadded)  # out-of-place, so autograd flows to `unpadded`
    return out.view(batch, seqlen, *unpadded.shape[1:])


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class VarlenAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        batch = cu_seqlens_q.numel() - 1
        out, lse = attention_forward_packed(
            q, k, v, cu_seqlens_q, cu_seqlens_k, batch, max_seqlen_q, max_seqlen_k, causal, softmax_scale
        )
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
        ctx.args = (batch, max_seqlen_q, max_seqlen_k, causal, softmax_scale)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
        batch, max_q, max_k, causal, scale = ctx.args
        dq, dk, dv = attention_backward_packed(
            dout, q, k, v, out, lse, cu_q, cu_k, batch, max_q, max_k, causal, scale
        )
        return dq, dk, dv, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------------
# Public function and reference
# --------------------------------------------------------------------------------------------------


def _check_cu(cu: torch.Tensor, what: str) -> None:
    if cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 1:
        raise ValueError(f"{what} must be a 1-D int32 tensor, got {cu.dtype} of shape {tuple(cu.shape)}")


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool = False,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """Attention over packed sequences: `q (total_q, heads, dim)`, `k, v (total_k, heads, dim)`.

    Sequence `b` is `q[cu_seqlens_q[b]:cu_seqlens_q[b+1]]` against the matching slice of k and v;
    `max_seqlen_*` must be at least the longest length. Same result as running `flash_attention` on
    each sequence separately; differentiable in q, k, v.
    """
    _check_qkv(q, k, v, 3)
    _check_cu(cu_seqlens_q, "cu_seqlens_q")
    _check_cu(cu_seqlens_k, "cu_seqlens_k")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError("cu_seqlens_q and cu_seqlens_k must describe the same number of sequences")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return VarlenAttentionFunction.apply(
        q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k), causal, scale
    )


def varlen_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool = False,
    softmax_scale: float | None = None,
    upcast: bool = True,
) -> torch.Tensor:
    """torch attention run separately on each sequence, in fp32 and cast back (`upcast=False`: input dtype)."""
    # The same argument rules as the kernel: a malformed cu_seqlens is an error, not an empty batch.
    _check_cu(cu_seqlens_q, "cu_seqlens_q")
    _check_cu(cu_seqlens_k, "cu_seqlens_k")
    dtype = q.dtype
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if upcast:
        q, k, v = upcast_ref(q), upcast_ref(k), upcast_ref(v)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    # Written into a (total_q, heads, dim) buffer: torch.cat would lose the shape of empty slices.
    out = q.new_zeros(q.shape[:-1] + v.shape[-1:])
    for b in range(len(cq) - 1):
        qs, ks, vs = q[cq[b] : cq[b + 1]], k[ck[b] : ck[b + 1]], v[ck[b] : ck[b + 1]]
        o, _ = attention_reference_math(qs[None], ks[None], vs[None], causal, scale)
        out[cq[b] : cq[b + 1]] = o[0]
    return out.to(dtype)


# --------------------------------------------------------------------------------------------------
# Examples, cost model, spec
# --------------------------------------------------------------------------------------------------


def _packed(g: torch.Generator, lens: list[int], heads: int, dim: int, device: str, dtype: torch.dtype):
    x = torch.randn(sum(lens), heads, dim, generator=g).to(device=device, dtype=dtype)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return x, cu


def varlen_attention_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    """Packed batches of ragged lengths, including a length-1 sequence and seqlen_q != seqlen_k."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    if device == "cpu":
        cases = [
            ([1, 17, 65], [1, 17, 65], 2, 64, False),
            ([1, 17, 65], [1, 17, 65], 2, 64, True),
            ([33, 5], [130, 17], 1, 128, True),
        ]
    else:
        cases = [
            ([1, 17, 65, 130], [1, 17, 65, 130], 4, 64, True),
            ([1000, 37, 513, 1], [1000, 37, 513, 1], 8, 128, True),
            ([300, 700], [1024, 20], 8, 128, False),
        ]
    out: list[Example] = []
    for lens_q, lens_k, h, d, causal in cases:
        q, cu_q = _packed(g, lens_q, h, d, device, dtype)
        k, cu_k = _packed(g, lens_k, h, d, device, dtype)
        v, _ = _packed(g, lens_k, h, d, device, dtype)
        out.append(
            Example(
                args=(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k)),
                kwargs={"causal": causal},
                label=f"lens_q={lens_q} lens_k={lens_k} h{h} d{d} causal={causal}",
            )
        )
    return out


def varlen_attention_flops(
    q, k, v, cu_seqlens_q, cu_seqlens_k, *args, causal: bool = False, **kwargs
) -> float:
    """Forward FLOPs summed over sequences; the backward costs 2.5x this."""
    lq = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
    lk = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).tolist()
    return sum(attention_flops(a, b, q.shape[1], q.shape[2], causal) for a, b in zip(lq, lk))


def varlen_attention_bytes(q, k, v, *args, **kwargs) -> float:
    return float((2 * q.numel() + k.numel() + v.numel()) * q.element_size() + 4 * q.shape[0] * q.shape[1])


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="varlen_attention",
        reference=varlen_attention_reference,
        implementation=varlen_attention,
        examples=varlen_attention_examples,
        tolerances=ATTENTION_TOLERANCES,
        flops=varlen_attention_flops,
        bytes=varlen_attention_bytes,
        backward=True,
        caps={"head dim": MAX_HEAD_DIM},
        description="Packed variable-length FlashAttention-2 (cu_seqlens) with unpad_input/pad_input helpers.",
        module=__name__,
    ),
)
