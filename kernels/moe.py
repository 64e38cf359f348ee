"""Mixture-of-experts building blocks: top-k softmax routing and a grouped GEMM over experts.

A mixture-of-experts layer (Switch, Mixtral, DeepSeek-MoE) sends each token to `k` of `E` expert
MLPs. The pieces, in the order a layer uses them:

1. `moe_router(logits, top_k)`: softmax over the experts, top-k, optional renormalisation of the k
   weights (Mixtral) — one Triton kernel holds whole rows of E logits — plus the load-balancing
   statistics (assignments per expert, the Switch auxiliary loss) and the permutation that groups the
   token slots by expert (a stable sort of the expert ids).
2. `moe_permute(x, sorted_slots, top_k)`: the tokens' rows in expert order (one gather).
3. `moe_grouped_matmul(x, weight, group_offsets)`: rows `o[e]:o[e+1]` times `weight[e]`, all experts
   in one launch. Each program owns a `BLOCK_M x BLOCK_N` output tile that never straddles two
   experts: the tile -> (expert, first row) map is built on the device from the offsets, with a grid
   sized by the upper bound `cdiv(M, BLOCK_M) + E`, so no host sync decides the launch. Backward:
   d x through the same kernel with each `weight[e]` transposed (strides only), d weight[e] by a
   kernel that reduces over expert e's rows.
4. `moe_unpermute(y, sorted_slots, weights)`: each token's k expert outputs, weighted and summed.

Steps 2 and 4 are a gather and a scatter-add in torch (autograd-aware); the arithmetic is in Triton.
float64 is computed in float64; everything else accumulates in fp32.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, empty_out, finish, next_pow2
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

MAX_EXPERTS = 4096  # a row of expert logits is held in registers by one program
ROUTER_TILE = 4096  # elements per router program (several rows when E is small)


# --------------------------------------------------------------------------------------------------
# Triton kernels: router
# --------------------------------------------------------------------------------------------------


@triton.jit
def _router_fwd_kernel(
    X, P, W, IDS, n_rows, n_experts, stride_x,
    TOP_K: tl.constexpr, NORMALIZE: tl.constexpr, ACC_FP64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < n_rows
    col_ok = cols < n_experts
    mask = row_ok[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=-float("inf"))
    if ACC_FP64:
        x = x.to(tl.float64)
    else:
        x = x.to(tl.float32)
    m = tl.max(x, axis=1)
    m = tl.where(row_ok, m, 0.0)  # padding rows: avoid -inf - -inf (never stored)
    e = tl.exp(x - m[:, None])
    s = tl.sum(e, axis=1)
    s = tl.where(row_ok, s, 1.0)
    p = e / s[:, None]
    tl.store(P + rows64[:, None] * n_experts + cols[None, :], p, mask=mask)

    # Top-k by k rounds of argmax (k is small). Padding and NaN lanes rank at -1, below every
    # probability, and a chosen lane drops to -2, so k distinct experts come out even from a NaN
    # row (whose weights are then NaN, as torch's). The first round only sums the chosen
    # probabilities (the renormaliser), the second stores.
    q0 = tl.where(col_ok[None, :] & (p == p), p, -1.0)
    q = q0
    total = tl.zeros_like(s)
    if NORMALIZE:
        for _ in tl.static_range(TOP_K):
            idx = tl.argmax(q, axis=1)
            hit = cols[None, :] == idx[:, None]
            total += tl.sum(tl.where(hit, p, 0.0), axis=1)
            q = tl.where(hit, -2.0, q)
        total = tl.where(row_ok, total, 1.0)
        q = q0
    for j in tl.static_range(TOP_K):
        idx = tl.argmax(q, axis=1)
        hit = cols[None, :] == idx[:, None]
        val = tl.sum(tl.where(hit, p, 0.0), axis=1)
        if NORMALIZE:
            val = val / total
        tl.store(W + rows64 * TOP_K + j, val, mask=row_ok)
        tl.store(IDS + rows64 * TOP_K + j, idx.to(tl.int64), mask=row_ok)
        q = tl.where(hit, -2.0, q)


@triton.jit
def _router_bwd_kernel(
    P, IDS, DW, COEF, DX, n_rows, n_experts, stride_dw, stride_dx,
    TOP_K: tl.constexpr, NORMALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr,
):  # fmt: skip
    """d logits from d weights and the auxiliary loss's per-expert coefficient (dp_e += coef_e)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < n_rows
    col_ok = cols < n_experts
    mask = row_ok[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)
    p = tl.load(P + rows64[:, None] * n_experts + cols[None, :], mask=mask, other=0.0)
    coef = tl.load(COEF + cols, mask=col_ok, other=0.0).to(p.dtype)
    dp = tl.zeros_like(p) + coef[None, :]
    if NORMALIZE:
        # w_j = p_j / S with S = sum of the chosen p: dL/dp_j = (dw_j - sum_i dw_i w_i) / S.
        total = tl.zeros([BLOCK_M], dtype=p.dtype)
        dot = tl.zeros([BLOCK_M], dtype=p.dtype)
        for j in tl.static_range(TOP_K):
            idx = tl.load(IDS + rows64 * TOP_K + j, mask=row_ok, other=0)
            dw = tl.load(DW + rows64 * stride_dw + j, mask=row_ok, other=0.0).to(p.dtype)
            pj = tl.sum(tl.where(cols[None, :] == idx[:, None], p, 0.0), axis=1)
            total += pj
            dot += dw * pj
        total = tl.where(row_ok, total, 1.0)
        dot = dot / total
        for j in tl.static_range(TOP_K):
            idx = tl.load(IDS + rows64 * TOP_K + j, mask=row_ok, other=0)
            dw = tl.load(DW + rows64 * stride_dw + j, mask=row_ok, other=0.0).to(p.dtype)
            dp += tl.where(cols[None, :] == idx[:, None], ((dw - dot) / total)[:, None], 0.0)
    else:
        for j in tl.static_range(TOP_K):
            idx = tl.load(IDS + rows64 * TOP_K + j, mask=row_ok, other=0)
            dw = tl.load(DW + rows64 * stride_dw + j, mask=row_ok, other=0.0).to(p.dtype)
            dp += tl.where(cols[None, :] == idx[:, None], dw[:, None], 0.0)
    # softmax backward: dx = p * (dp - sum(p * dp))
    dx = p * (dp - tl.sum(p * dp, axis=1)[:, None])
    tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx, mask=mask)


# --------------------------------------------------------------------------------------------------
# Triton kernels: grouped GEMM
# --------------------------------------------------------------------------------------------------


@triton.jit
def _grouped_mm_kernel(
    X, W, Y, OFFSETS, TILE_EXPERT, TILE_ROW, N, K,
    stride_xm, stride_xk, stride_we, stride_wk, stride_wn, stride_ym, stride_yn,
    ACC_FP64: tl.constexpr, DOT_IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Y[rows of e] = X[rows of e] @ W[e]; program (i, j) owns row tile i (of one expert), column tile j."""
    expert = tl.load(TILE_EXPERT + tl.program_id(0))
    if expert < 0:
        return  # beyond the last tile: the grid is an upper bound
    row0 = tl.load(TILE_ROW + tl.program_id(0)).to(tl.int64)
    n_rows = (tl.load(OFFSETS + expert + 1) - row0).to(tl.int32)  # rows left in this expert's group
    lanes_m = tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    row_ok = lanes_m < n_rows
    # int64 tile corners, int32 in-tile offsets (int64 offset tensors made 16-bit tiles spill).
    x_ptrs = X + row0 * stride_xm + lanes_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = W + expert.to(tl.int64) * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    if ACC_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=k_ok[:, None] & (offs_n[None, :] < N), other=0.0)
        if DOT_IEEE:
            acc = tl.dot(a.to(acc.dtype), b.to(acc.dtype), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    y_ptrs = Y + row0 * stride_ym + lanes_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < N))


@triton.jit
def _grouped_mm_dw_kernel(
    X, DY, DW, OFFSETS, K, N,
    stride_xm, stride_xk, stride_dym, stride_dyn, stride_we, stride_wk, stride_wn,
    ACC_FP64: tl.constexpr, DOT_IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """DW[e] = X[rows of e].T @ DY[rows of e]; program (e, j) owns one K x N tile of expert e."""
    expert = tl.program_id(0)
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    offs_k = (tl.program_id(1) // n_tiles_n) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = (tl.program_id(1) % n_tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    start = tl.load(OFFSETS + expert)
    end = tl.load(OFFSETS + expert + 1)
    lanes = tl.arange(0, BLOCK_M).to(tl.int64)
    if ACC_FP64:
        acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_M):  # an expert without rows writes zeros
        offs_m = m0 + lanes
        m_ok = offs_m < end
        xt = tl.load(
            X + offs_k[:, None] * stride_xk + offs_m[None, :] * stride_xm,
            mask=(offs_k[:, None] < K) & m_ok[None, :], other=0.0,
        )  # fmt: skip
        dy = tl.load(
            DY + offs_m[:, None] * stride_dym + offs_n[None, :] * stride_dyn,
            mask=m_ok[:, None] & (offs_n[None, :] < N), other=0.0,
        )  # fmt: skip
        if DOT_IEEE:
            acc = tl.dot(xt.to(acc.dtype), dy.to(acc.dtype), acc, input_precision="ieee")
        else:
            acc = tl.dot(xt, dy, acc)
    dw_ptrs = DW + expert.to(tl.int64) * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    tl.store(dw_ptrs, acc.to(DW.dtype.element_ty), mask=(offs_k[:, None] < K) & (offs_n[None, :] < N))


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _router_blocks(n_rows: int, n_experts: int) -> tuple[int, int]:
    """(rows per program, padded expert count): a GPU program takes at most 16 rows (registers); the
    interpreter as many as fit ROUTER_TILE (each program has a fixed Python cost)."""
    block_e = next_pow2(n_experts)
    cap = ROUTER_TILE if INTERPRET else 16
    return max(1, min(next_pow2(max(n_rows, 1)), ROUTER_TILE // block_e, cap)), block_e


def _router_warps(elements: int) -> int:
    return 4 if elements <= 2048 else 8


def router_forward(
    logits: torch.Tensor, top_k: int, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probs (T, E) fp32/fp64, weights (T, k) in logits' dtype, expert ids (T, k) int64)."""
    T, E = logits.shape
    x = logits if logits.stride(-1) == 1 else logits.contiguous()
    probs = torch.empty((T, E), dtype=_acc_dtype(x.dtype), device=x.device)
    weights = empty_out((T, top_k), x.dtype, x.device)
    ids = torch.empty((T, top_k), dtype=torch.int64, device=x.device)
    if T:
        block_m, block_e = _router_blocks(T, E)
        _router_fwd_kernel[(triton.cdiv(T, block_m),)](
            x, probs, weights, ids, T, E, x.stride(0),
            TOP_K=top_k, NORMALIZE=normalize, ACC_FP64=x.dtype == torch.float64,
            BLOCK_M=block_m, BLOCK_E=block_e, num_warps=_router_warps(block_m * block_e),
        )  # fmt: skip
    return probs, finish(weights, x.dtype), ids


def router_backward(
    probs: torch.Tensor,
    ids: torch.Tensor,
    dweights: torch.Tensor,
    coef: torch.Tensor,
    normalize: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    T, E = probs.shape
    top_k = ids.shape[1]
    dw = dweights if dweights.stride(-1) == 1 else dweights.contiguous()
    dx = empty_out((T, E), dtype, probs.device)
    if T:
        block_m, block_e = _router_blocks(T, E)
        _router_bwd_kernel[(triton.cdiv(T, block_m),)](
            probs, ids, dw, coef, dx, T, E, dw.stride(0), dx.stride(0),
            TOP_K=top_k, NORMALIZE=normalize,
            BLOCK_M=block_m, BLOCK_E=block_e, num_warps=_router_warps(block_m * block_e),
        )  # fmt: skip
    return finish(dx, dtype)


def _mm_block_sizes(dtype: torch.dtype, gpu: bool = not INTERPRET) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of both grouped kernels.

    BLOCK_M is the row tile of the forward (a group's rows are padded to it) and the reduction step of
    d weight. Interpreter: few large tiles. GPU: fixed configurations checked by the sm_90 cross-compile.
    """
    if not gpu:
        return 32, 128, 64, 4, 1
    if dtype == torch.float64:
        return 32, 32, 16, 4, 2
    if dtype == torch.float32:
        return 64, 64, 32, 8, 3
    return 128, 128, 32, 8, 3


def _dw_block_sizes(dtype: torch.dtype, gpu: bool = not INTERPRET) -> tuple[int, int, int, int, int]:
    """(BLOCK_K, BLOCK_N, BLOCK_M, num_warps, num_stages) of d weight: K x N output tiles, rows reduced
    BLOCK_M at a time."""
    if not gpu:
        return 64, 128, 64, 4, 1
    if dtype == torch.float64:
        return 32, 32, 16, 4, 2
    if dtype == torch.float32:
        return 64, 64, 32, 8, 3
    return 128, 128, 64, 8, 3


def _tile_map(offsets: torch.Tensor, n_rows: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert, first row) of each row tile, -1 past the last; sized by cdiv(M, BLOCK_M) + E."""
    offsets = offsets.to(torch.int64)
    n_experts = offsets.numel() - 1
    sizes = offsets[1:] - offsets[:-1]
    tiles = (sizes + block_m - 1) // block_m
    ends = torch.cumsum(tiles, 0)
    slot = torch.arange(triton.cdiv(n_rows, block_m) + n_experts, device=offsets.device)
    expert = torch.searchsorted(ends, slot, right=True)
    used = expert < n_experts
    e = expert.clamp_max(max(n_experts - 1, 0))
    row = offsets[:-1][e] + (slot - (ends[e] - tiles[e])) * block_m
    return torch.where(used, e, -1), row


def grouped_mm(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Launch the grouped GEMM: (M, K) rows grouped by `offsets` times (E, K, N) -> (M, N)."""
    M, K = x.shape
    E, _, N = weight.shape
    y = empty_out((M, N), x.dtype, x.device)
    if M == 0 or N == 0 or E == 0:
        return finish(y, x.dtype)
    bm, bn, bk, warps, stages = _mm_block_sizes(x.dtype)
    tile_expert, tile_row = _tile_map(offsets, M, bm)
    grid = (tile_expert.numel(), triton.cdiv(N, bn))
    _grouped_mm_kernel[grid](
        x, weight, y, offsets, tile_expert, tile_row, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), weight.stride(2),
        y.stride(0), y.stride(1),
        ACC_FP64=x.dtype == torch.float64, DOT_IEEE=INTERPRET or x.dtype in (torch.float32, torch.float64),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return finish(y, x.dtype)


def grouped_mm_dweight(
    x: torch.Tensor, dy: torch.Tensor, offsets: torch.Tensor, n_experts: int
) -> torch.Tensor:
    """d weight[e] = x[rows of e].T @ dy[rows of e], (E, K, N) in x's dtype."""
    K = x.shape[1]
    N = dy.shape[1]
    dw = empty_out((n_experts, K, N), x.dtype, x.device)
    if n_experts == 0 or K == 0 or N == 0:
        return finish(dw, x.dtype)
    bk, bn, bm, warps, stages = _dw_block_sizes(x.dtype)
    grid = (n_experts, triton.cdiv(K, bk) * triton.cdiv(N, bn))
    _grouped_mm_dw_kernel[grid](
        x, dy, dw, offsets, K, N,
        x.stride(0), x.stride(1), dy.stride(0), dy.stride(1), dw.stride(0), dw.stride(1), dw.stride(2),
        ACC_FP64=x.dtype == torch.float64, DOT_IEEE=INTERPRET or x.dtype in (torch.float32, torch.float64),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return finish(dw, x.dtype)


# --------------------------------------------------------------------------------------------------
# Autograd and the public functions
# --------------------------------------------------------------------------------------------------


class RouterOutput(NamedTuple):
    """What `moe_router` returns; `weights` comes first (the checker compares element 0)."""

    weights: torch.Tensor  # (T, k) logits.dtype: routing weights, descending per token
    experts: torch.Tensor  # (T, k) int64: the chosen experts, in the order of `weights`
    tokens_per_expert: torch.Tensor  # (E,) int64: (token, slot) assignments per expert
    aux_loss: torch.Tensor  # () logits.dtype: E * sum_e f_e * P_e, 1.0 when perfectly balanced
    sorted_slots: torch.Tensor  # (T*k,) int64: slots t*k+j ordered by expert (stable)
    group_offsets: torch.Tensor  # (E+1,) int64: expert e owns rows o[e]:o[e+1] of the permuted batch


def _routing_stats(experts: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens_per_expert, sorted_slots, group_offsets) from the (T, k) expert ids."""
    flat = experts.reshape(-1)
    counts = torch.zeros(n_experts, dtype=torch.int64, device=experts.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    sorted_slots = torch.sort(flat, stable=True).indices
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return counts, sorted_slots, offsets


def _aux_loss(probs: torch.Tensor, counts: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch Transformer's load-balancing loss E * sum_e f_e P_e (f_e: share of assignments,
    P_e: mean router probability); constant counts, so only P carries a gradient."""
    T, E = probs.shape
    f = counts.to(probs.dtype) / max(T * top_k, 1)
    return E * (f * probs.mean(0)).sum()


class MoERouterFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, top_k: int, normalize: bool):
        probs, weights, experts = router_forward(logits, top_k, normalize)
        counts, sorted_slots, offsets = _routing_stats(experts, logits.shape[1])
        aux = _aux_loss(probs, counts, top_k)
        ctx.save_for_backward(probs, experts, counts)
        ctx.top_k, ctx.normalize, ctx.dtype = top_k, normalize, logits.dtype
        ctx.mark_non_differentiable(experts, counts, sorted_slots, offsets)
        return weights, experts, counts, aux.to(logits.dtype), sorted_slots, offsets

    @staticmethod
    def backward(ctx, dweights, _experts, _counts, daux, _slots, _offsets):
        probs, experts, counts = ctx.saved_tensors
        T, E = probs.shape
        # d aux / d p[t, e] = E * f_e / T, the same for every token: one coefficient per expert.
        coef = daux.to(probs.dtype) * E * counts.to(probs.dtype) / max(T * ctx.top_k, 1) / max(T, 1)
        dx = router_backward(probs, experts, dweights, coef, ctx.normalize, ctx.dtype)
        return dx, None, None


def _check_router_args(logits: torch.Tensor, top_k: int) -> None:
    if logits.dim() != 2:
        raise ValueError(f"expected router logits (tokens, experts), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"router logits must be floating point, got {logits.dtype}")
    n_experts = logits.shape[1]
    if not 1 <= n_experts <= MAX_EXPERTS:
        raise ValueError(f"moe_router supports 1 to {MAX_EXPERTS} experts, got {n_experts}")
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"top_k must be in [1, {n_experts}] (the number of experts), got {top_k}")


def moe_router(logits: torch.Tensor, top_k: int = 2, *, normalize: bool = True) -> RouterOutput:
    """Top-k softmax routing of `logits` (tokens, experts); see `RouterOutput` for what comes back.

    p = softmax(logits) in fp32 (fp64 for fp64); each token takes its `top_k` most probable experts,
    ordered by probability (ties: the lower expert id first). `normalize=True` rescales the k
    weights to sum to 1 (Mixtral); False keeps the probabilities (Switch, GShard). `weights` and
    `aux_loss` are differentiable w.r.t. `logits`. At most `MAX_EXPERTS` experts.
    """
    _check_router_args(logits, top_k)
    return RouterOutput(*MoERouterFunction.apply(logits, int(top_k), bool(normalize)))


def moe_router_reference(
    logits: torch.Tensor, top_k: int = 2, *, normalize: bool = True, upcast: bool = True
) -> RouterOutput:
    """torch: softmax and topk in fp32 (fp64 for fp64) with `upcast`, else in the logits' dtype."""
    _check_router_args(logits, top_k)
    probs = torch.softmax(logits.to(_acc_dtype(logits.dtype)) if upcast else logits, dim=-1)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    if normalize:
        weights = weights / weights.sum(-1, keepdim=True)
    counts, sorted_slots, offsets = _routing_stats(experts, logits.shape[1])
    aux = _aux_loss(probs, counts, top_k)
    return RouterOutput(
        weights.to(logits.dtype), experts, counts, aux.to(logits.dtype), sorted_slots, offsets
    )


def moe_permute(x: torch.Tensor, sorted_slots: torch.Tensor, top_k: int) -> torch.Tensor:
    """The rows of `x` (tokens, H) in expert order: row i is token `sorted_slots[i] // top_k`."""
    return x.index_select(0, sorted_slots // top_k)


def moe_unpermute(y: torch.Tensor, sorted_slots: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Combine expert outputs `y` (T*k, N) in expert order into (T, N): sum_j weights[t, j] * y[slot t*k+j]."""
    T, k = weights.shape
    w = weights.reshape(-1).index_select(0, sorted_slots).unsqueeze(1)
    out = y.new_zeros((T, y.shape[1]))
    return out.index_add(0, sorted_slots // k, y * w.to(y.dtype))


def _check_grouped_args(x: torch.Tensor, weight: torch.Tensor, group_offsets: torch.Tensor) -> None:
    if x.dim() != 2 or weight.dim() != 3 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected x (M, K) and weight (E, K, N), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if x.dtype != weight.dtype or not x.is_floating_point():
        raise TypeError(f"x and weight must share a float dtype, got {x.dtype} and {weight.dtype}")
    if group_offsets.shape != (weight.shape[0] + 1,) or group_offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"group_offsets must be an int32/int64 tensor of shape ({weight.shape[0] + 1},) (experts + 1), "
            f"got {group_offsets.dtype} {tuple(group_offsets.shape)}"
        )
    if group_offsets.device.type == "meta":
        return
    o = group_offsets.cpu()  # one host sync: bad offsets would make the kernels read out of bounds
    if o[0] != 0 or o[-1] != x.shape[0] or bool((o[1:] < o[:-1]).any()):
        raise ValueError(
            f"group_offsets must rise from 0 to {x.shape[0]} (the rows of x), got {o.tolist()[:8]}"
            f"{'...' if o.numel() > 8 else ''}"
        )


class GroupedMatmulFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight, offsets)
        return grouped_mm(x, weight, offsets)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, offsets = ctx.saved_tensors
        dx = grouped_mm(dy, weight.transpose(1, 2), offsets) if ctx.needs_input_grad[0] else None
        dw = grouped_mm_dweight(x, dy, offsets, weight.shape[0]) if ctx.needs_input_grad[1] else None
        return dx, dw, None


def moe_grouped_matmul(x: torch.Tensor, weight: torch.Tensor, group_offsets: torch.Tensor) -> torch.Tensor:
    """`y[o[e]:o[e+1]] = x[o[e]:o[e+1]] @ weight[e]` for every expert e, in one launch.

    `x` (M, K) holds the rows sorted by expert (e.g. `moe_permute`'s output), `weight` (E, K, N) one
    matrix per expert in x's dtype, `group_offsets` (E+1,) int32/int64 rises from 0 to M (empty
    groups allowed). fp32 accumulation (fp64 for fp64); differentiable w.r.t. x and weight.
    """
    _check_grouped_args(x, weight, group_offsets)
    return GroupedMatmulFunction.apply(x, weight, group_offsets.contiguous())


def moe_grouped_matmul_reference(
    x: torch.Tensor, weight: torch.Tensor, group_offsets: torch.Tensor, *, upcast: bool = True
) -> torch.Tensor:
    """torch: one matmul per expert, fp32 (fp64 for fp64) with `upcast`, else in x's dtype."""
    _check_grouped_args(x, weight, group_offsets)
    acc = _acc_dtype(x.dtype) if upcast else x.dtype
    bounds = group_offsets.tolist()
    parts = [x[a:b].to(acc) @ weight[e].to(acc) for e, (a, b) in enumerate(itertools.pairwise(bounds))]
    y = torch.cat(parts) if parts else x.new_zeros((0, weight.shape[2]), dtype=acc)
    return y.to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Examples, cost model, specs
# --------------------------------------------------------------------------------------------------

# (tokens, experts, top_k, normalize): one expert, k = 1, DeepSeek-like k = 6 of 64 unnormalised.
ROUTER_CPU = ((1, 4, 1, True), (37, 8, 2, True), (130, 64, 6, False), (257, 16, 4, True))
ROUTER_GPU = ((37, 8, 2, True), (8192, 8, 2, True), (8192, 256, 8, False), (4093, 64, 6, True))


def distinct_logits(tokens: int, experts: int, g: torch.Generator) -> torch.Tensor:
    """Router logits without ties in any dtype: each row a random permutation of a power-of-two grid
    spanning about [-4, 4), exact in bf16 (E <= 256) and fp16. With random normal logits, bf16's 8-bit
    significand makes equal logits in a row likely, and a tie at the k-th place lets two correct
    routers pick different experts."""
    step = 2.0 ** -max(0, math.ceil(math.log2(max(experts, 1) / 8)))
    ranks = torch.argsort(torch.rand(tokens, experts, generator=g), dim=1)
    return (ranks - experts // 2).float() * step


def router_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for tokens, experts, k, normalize in ROUTER_CPU if device == "cpu" else ROUTER_GPU:
        logits = distinct_logits(tokens, experts, g)
        out.append(
            Example(
                (logits.to(device=device, dtype=dtype), k),
                {"normalize": normalize},
                label=f"T{tokens} E{experts} k{k} normalize={normalize}",
            )
        )
    return out


def _offsets(sizes: list[int], device: str) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int64, device=device)


# (rows per expert, K, N): empty groups, a single row, groups smaller and larger than a tile.
GROUPED_CPU = (([3, 0, 17, 1], 33, 20), ([40, 7, 0, 90, 13], 64, 130), ([1], 16, 1), ([100, 29], 130, 48))
GROUPED_GPU = (
    ([3, 0, 17, 1], 33, 20),
    ([1000, 7, 0, 900, 131, 2048, 1, 17], 1024, 1408),  # an uneven step of a DeepSeek-MoE layer
    ([512] * 64, 2048, 768),  # balanced: 64 experts, Qwen-MoE-like widths
)


def grouped_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for sizes, k, n in GROUPED_CPU if device == "cpu" else GROUPED_GPU:
        x = torch.randn(sum(sizes), k, generator=g)
        w = torch.randn(len(sizes), k, n, generator=g) / math.sqrt(k)
        out.append(
            Example(
                (x.to(device=device, dtype=dtype), w.to(device=device, dtype=dtype), _offsets(sizes, device)),
                label=f"groups {sizes if len(sizes) <= 8 else f'{len(sizes)}x{sizes[0]}'} K{k} N{n}",
            )
        )
    return out


def _router_flops(logits: torch.Tensor, top_k: int = 2, *_: object, **__: object) -> float:
    return float(logits.numel() * (4 + 2 * top_k))  # softmax, then k max/compare rounds


def _router_bytes(logits: torch.Tensor, top_k: int = 2, *_: object, **__: object) -> float:
    T, E = logits.shape
    # logits read, probabilities (fp32, kept for the backward), weights and int64 ids written
    return float(T * E * (logits.element_size() + 4) + T * top_k * (logits.element_size() + 8))


def _grouped_flops(x: torch.Tensor, weight: torch.Tensor, *_: object, **__: object) -> float:
    return 2.0 * x.shape[0] * x.shape[1] * weight.shape[2]


def _grouped_bytes(x: torch.Tensor, weight: torch.Tensor, *_: object, **__: object) -> float:
    M, K = x.shape
    return float((M * K + weight.numel() + M * weight.shape[2]) * x.element_size())


# Router: probabilities in [0, 1] from a softmax (torch in fp32 is the reference: the fp32 floor is a
# few ulps of 1), renormalised by a sum of k terms. 16-bit: the floor is about one ulp of the largest
# weight (~0.5-1) stored in the input dtype.
ROUTER_TOLERANCES = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5, floor=1e-6),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=8e-3),
    "float64": FLOAT64,  # the project's float64 rule (kernels/testing.py)
}
# Grouped GEMM: as matmul for the O(1) outputs (summation order decides ties). The floors are one
# ulp of d weight, a sum over up to ~100 rows of O(1) products (|values| up to ~32: fp16 ulp 1.6e-2,
# bf16 0.125), where torch in the input dtype may round the other way; allclose still bounds the
# outputs at atol + rtol |ref|.
GROUPED_TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=3.2e-2),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=0.125),
    "float64": FLOAT64,  # the project's float64 rule (kernels/testing.py)
}

SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="moe_router",
        reference=moe_router_reference,
        implementation=moe_router,
        examples=router_examples,
        tolerances=ROUTER_TOLERANCES,
        dtypes=("float32", "float16", "bfloat16", "float64"),
        flops=_router_flops,
        bytes=_router_bytes,
        backward=True,
        description=(
            "Top-k softmax routing (optionally renormalised) with tokens per expert, the Switch "
            f"load-balancing loss and the expert-sorted permutation; at most {MAX_EXPERTS} experts."
        ),
        module=__name__,
    ),
    KernelSpec(
        name="moe_grouped_matmul",
        reference=moe_grouped_matmul_reference,
        implementation=moe_grouped_matmul,
        examples=grouped_examples,
        tolerances=GROUPED_TOLERANCES,
        dtypes=("float32", "float16", "bfloat16", "float64"),
        flops=_grouped_flops,
        bytes=_grouped_bytes,
        backward=True,
        description="Grouped GEMM over experts (rows sorted by expert, (E, K, N) weights, offsets).",
        module=__name__,
    ),
)
