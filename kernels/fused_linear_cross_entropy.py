"""Vocabulary projection fused with cross-entropy: the (tokens, vocab) logits never exist at once.

`fused_linear_cross_entropy(hidden, weight, target)` equals
`F.cross_entropy(hidden @ weight.T, target)`. With 8192 tokens and a 128k vocabulary the logits alone
take 2 GiB in bf16, and eager torch keeps two or three tensors of that size alive for the backward.
Here they are produced a block at a time:

- **forward, chunked over tokens.** For each chunk of `chunk_size` tokens one GEMM writes the
  chunk's logits (fp32) and a row kernel reduces them to the log-sum-exp and the row loss. Only the
  per-token log-sum-exp (T floats) is saved for the backward.
- **backward, chunked over the vocabulary (recomputation).** For each block of `vocab_block`
  classes one GEMM recomputes the logits of all tokens for those classes and its epilogue turns them
  straight into d(loss)/d(logits) = (softmax - onehot) * dloss / n_valid, using the saved
  log-sum-exp; two more GEMMs give that block's rows of d(weight) — complete, accumulated in fp32
  inside the kernel and rounded once — and add its share to d(hidden) (fp32, T x H).

Why recompute instead of Liger's gradients-in-the-forward: Liger accumulates d(weight) over token
chunks, which needs either a (V, H) fp32 buffer (twice a bf16 weight: that alone misses the 4x memory
target at a 128k vocabulary) or a bf16 accumulator rounded once per chunk (errors grow with the
number of chunks). Blocking the backward over the vocabulary finishes each d(weight) row in one GEMM,
keeps nothing but T floats between forward and backward (no gradient buffers held while the rest of
the model runs its backward; nothing wasted under `no_grad`), and costs one extra logits GEMM
(8 instead of 6 T*V*H multiply-adds for forward + backward).

Targets are validated on the host before any kernel runs (an out-of-range class raises IndexError,
as torch does), so the kernels' target loads are always in bounds. float64 is computed in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, empty_out, finish, next_pow2
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

# Row tile of the log-sum-exp kernel: large on the interpreter (fixed Python cost per loop step).
BLOCK_V = 8192 if INTERPRET else 2048
MIN_CHUNK = 16 if INTERPRET else 128  # a GPU chunk fills at least one 128-row GEMM tile
MIN_VOCAB_BLOCK = 16 if INTERPRET else 128  # likewise for the backward's vocabulary blocks


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _flce_matmul_kernel(
    A, B, C, LSE, TGT, SCALE,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    col_offset, ignore_index,
    CE_GRAD: tl.constexpr, ACCUMULATE: tl.constexpr, ACC_FP64: tl.constexpr, DOT_IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """C (+)= A @ B, strided; with CE_GRAD the epilogue maps logits to d(loss)/d(logits)."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_pid_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group

    lanes_m = tl.arange(0, BLOCK_M)
    lanes_n = tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + lanes_m
    offs_n = pid_n * BLOCK_N + lanes_n
    offs_k = tl.arange(0, BLOCK_K)
    # The tile's corner in int64 (T x V logits pass 2^31 elements), in-tile offsets in int32: int64
    # offset tensors cost the registers that made 16-bit tiles spill.
    m0 = (pid_m * BLOCK_M).to(tl.int64)
    n0 = (pid_n * BLOCK_N).to(tl.int64)
    a_ptrs = A + m0 * stride_am + lanes_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = B + n0 * stride_bn + offs_k[:, None] * stride_bk + lanes_n[None, :] * stride_bn
    if ACC_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & (offs_n[None, :] < N), other=0.0)
        if DOT_IEEE:
            # fp32/fp64 inputs, or the interpreter: exact products in the accumulator's dtype.
            acc = tl.dot(a.to(acc.dtype), b.to(acc.dtype), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)  # fp16/bf16 on a GPU: tensor cores, fp32 accumulation
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    row_ok = offs_m < M
    mask = row_ok[:, None] & (offs_n[None, :] < N)
    if CE_GRAD:
        # acc holds logits of rows offs_m for classes col_offset + offs_n.
        lse = tl.load(LSE + offs_m, mask=row_ok, other=0.0)
        t = tl.load(TGT + offs_m, mask=row_ok, other=ignore_index)
        scale = tl.load(SCALE)  # dloss / n_valid, a device scalar: no host sync
        row_scale = tl.where(t != ignore_index, scale, 0.0)
        p = tl.exp(acc - lse[:, None])
        onehot = (offs_n[None, :] + col_offset) == t[:, None]
        acc = (p - tl.where(onehot, 1.0, 0.0)) * row_scale[:, None]
    c_ptrs = C + m0 * stride_cm + n0 * stride_cn + lanes_m[:, None] * stride_cm + lanes_n[None, :] * stride_cn
    if ACCUMULATE:
        acc += tl.load(c_ptrs, mask=mask, other=0.0)
    tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=mask)


@triton.jit
def _flce_lse_kernel(
    X, T, LSE, LOSS, n_cols, stride_x, ignore_index,
    BLOCK_V: tl.constexpr, ACC_FP64: tl.constexpr,
):  # fmt: skip
    """One row of a logits chunk (fp32/fp64): log-sum-exp and loss; targets were checked on the host."""
    row = tl.program_id(0)
    x_row = X + row.to(tl.int64) * stride_x
    target = tl.load(T + row)
    valid = target != ignore_index
    t = tl.where(valid, target, 0)
    lanes = tl.arange(0, BLOCK_V)
    if ACC_FP64:
        m_i = tl.full([BLOCK_V], -float("inf"), dtype=tl.float64)
        s_i = tl.zeros([BLOCK_V], dtype=tl.float64)
    else:
        m_i = tl.full([BLOCK_V], -float("inf"), dtype=tl.float32)
        s_i = tl.zeros([BLOCK_V], dtype=tl.float32)
    # Per-lane running max and rescaled sum, merged once after the loop (online log-sum-exp).
    for start in range(0, n_cols, BLOCK_V):
        cols = start + lanes
        x = tl.load(x_row + cols, mask=cols < n_cols, other=-float("inf"))
        m_new = tl.maximum(m_i, x)
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)  # padding-only lanes: avoid inf - inf
        s_i = s_i * tl.exp(m_i - shift) + tl.exp(x - shift)
        m_i = m_new
    m = tl.max(m_i, axis=0)
    s = tl.sum(s_i * tl.exp(m_i - m), axis=0)
    x_t = tl.load(x_row + t)
    tl.store(LSE + row, m + tl.log(s))
    # (m - x_t) + log(s): with large logits, (m + log s) - x_t would lose the loss to rounding.
    tl.store(LOSS + row, tl.where(valid, (m - x_t) + tl.log(s), 0.0))


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _block_sizes(
    dtype: torch.dtype, accumulate: bool = False, gpu: bool = not INTERPRET
) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of the GEMMs.

    Interpreter: a few large tiles (each program and loop step has a fixed Python cost; numpy does
    the dots), shrunk to the problem by `_matmul`. GPU: fixed configurations
    checked by the sm_90 cross-compile. A 16-bit 128x128 tile that also loads the fp32 tile it adds
    to spilled (its pointers alone take 128 registers a thread), so accumulating GEMMs use 128x64;
    fp64 32x32 tiles left 8 bytes of stack, 64x32 none.
    """
    if not gpu:
        return 128, 256, 128, 4, 1
    if dtype == torch.float64:
        return 64, 32, 16, 4, 2
    if dtype == torch.float32:
        return 64, 64, 32, 8, 3
    return (128, 64, 32, 8, 3) if accumulate else (128, 128, 32, 8, 3)


def _matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    *,
    accumulate: bool = False,
    ce_grad: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int] | None = None,
) -> None:
    """c (+)= a @ b with strides as given; `ce_grad = (lse, target, scale, col_offset, ignore_index)`
    turns the product (logits) into d(loss)/d(logits) in the epilogue."""
    M, K = a.shape
    N = b.shape[1]
    if M == 0 or N == 0:
        return
    bm, bn, bk, warps, stages = _block_sizes(a.dtype, accumulate)
    if INTERPRET:  # no larger than the problem: padding is computed too
        bm, bn, bk = (min(b, max(16, next_pow2(n))) for b, n in ((bm, M), (bn, N), (bk, K)))
    lse, tgt, scale, col_offset, ignore_index = ce_grad if ce_grad is not None else (c, c, c, 0, 0)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _flce_matmul_kernel[grid](
        a, b, c, lse, tgt, scale, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        col_offset, ignore_index,
        CE_GRAD=ce_grad is not None, ACCUMULATE=accumulate, ACC_FP64=a.dtype == torch.float64,
        DOT_IEEE=INTERPRET or a.dtype in (torch.float32, torch.float64),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=warps, num_stages=stages,
    )  # fmt: skip


def default_chunk_size(n_tokens: int, hidden: int, vocab: int) -> int:
    """Tokens per forward chunk: chunk x vocab ~ tokens x hidden (Liger's rule), a power of two.

    The logits chunk then takes about as much memory as the hidden states themselves.
    """
    chunk = next_pow2(max(1, math.ceil(n_tokens / max(1, math.ceil(vocab / max(hidden, 1))))))
    return max(MIN_CHUNK, chunk)


def _vocab_block(n_tokens: int, vocab: int, chunk: int) -> int:
    """Classes per backward block: tokens x block ~ chunk x vocab, a multiple of MIN_VOCAB_BLOCK."""
    step = MIN_VOCAB_BLOCK
    return min(vocab, max(step, math.ceil(chunk * vocab / max(n_tokens, 1) / step) * step))


def _check_target(target: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """Raise like torch for a class index outside [0, vocab) (one host sync, before any kernel)."""
    if target.device.type == "meta" or target.numel() == 0:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= vocab))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise IndexError(f"Target {value} is out of bounds for {vocab} classes (ignore_index={ignore_index})")


def flce_forward(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, ignore_index: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed loss, per-token log-sum-exp, n_valid): the forward over token chunks."""
    T = hidden.shape[0]
    V = weight.shape[0]
    acc = _acc_dtype(hidden.dtype)
    lse = torch.empty(T, dtype=acc, device=hidden.device)
    loss_rows = torch.zeros(T, dtype=acc, device=hidden.device)
    n_valid = (target != ignore_index).sum()
    if T and V:
        logits = torch.empty((min(chunk, T), V), dtype=acc, device=hidden.device)
        block = min(BLOCK_V, next_pow2(V))
        for start in range(0, T, chunk):
            stop = min(start + chunk, T)
            buf = logits[: stop - start]
            _matmul(hidden[start:stop], weight.t(), buf)
            _flce_lse_kernel[(stop - start,)](
                buf, target[start:stop], lse[start:stop], loss_rows[start:stop],
                V, buf.stride(0), ignore_index,
                BLOCK_V=block, ACC_FP64=acc == torch.float64, num_warps=8 if block >= 2048 else 4,
            )  # fmt: skip
    return loss_rows.sum(), lse, n_valid


def flce_backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    scale: torch.Tensor,
    ignore_index: int,
    chunk: int,
    need: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d hidden, d weight) over vocabulary blocks; `scale` = dloss / n_valid (a device scalar)."""
    T, H = hidden.shape
    V = weight.shape[0]
    acc = _acc_dtype(hidden.dtype)
    dh = torch.zeros((T, H), dtype=acc, device=hidden.device) if need[0] else None
    dw = empty_out((V, H), weight.dtype, weight.device) if need[1] else None
    if T == 0 or V == 0:
        if dw is not None:
            dw.zero_()
    else:
        vb = _vocab_block(T, V, chunk)
        # dlogits in the GEMM input dtype (16-bit on a GPU: tensor-core operand, as in Liger).
        dlogits = empty_out((T, min(vb, V)), hidden.dtype, hidden.device)
        for v0 in range(0, V, vb):
            v1 = min(v0 + vb, V)
            g = dlogits[:, : v1 - v0]
            w_blk = weight[v0:v1]
            _matmul(hidden, w_blk.t(), g, ce_grad=(lse, target, scale, v0, ignore_index))
            if dw is not None:
                _matmul(g.t(), hidden, dw[v0:v1])
            if dh is not None:
                _matmul(g, w_blk, dh, accumulate=True)
    return (
        finish(dh, hidden.dtype) if dh is not None else None,
        finish(dw, weight.dtype) if dw is not None else None,
    )


# --------------------------------------------------------------------------------------------------
# Autograd and the public function
# --------------------------------------------------------------------------------------------------


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        ignore_index: int,
        chunk: int,
    ) -> torch.Tensor:
        total, lse, n_valid = flce_forward(hidden, weight, target, ignore_index, chunk)
        ctx.save_for_backward(hidden, weight, target, lse, n_valid)
        ctx.ignore_index, ctx.chunk = ignore_index, chunk
        # 0/0 = nan when every target is ignored, as in torch.
        return (total / n_valid).to(hidden.dtype)

    @staticmethod
    def backward(ctx, dloss: torch.Tensor):
        hidden, weight, target, lse, n_valid = ctx.saved_tensors
        scale = (dloss.to(lse.dtype) / n_valid).reshape(1)
        dh, dw = flce_backward(
            hidden, weight, target, lse, scale, ctx.ignore_index, ctx.chunk, ctx.needs_input_grad[:2]
        )
        return dh, dw, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = -100,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `target`, without materialising the logits.

    `hidden` (T, H) and `weight` (V, H) share a float dtype; `target` (T,) holds class ids in [0, V)
    or `ignore_index`. Returns a 0-d tensor in hidden's dtype (fp32 arithmetic; fp64 for fp64),
    differentiable w.r.t. hidden and weight. `chunk_size` tokens per forward chunk (default:
    `default_chunk_size`); the backward blocks the vocabulary so that tokens x block is about the same.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected hidden (T, H) and weight (V, H), got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"expected target ({hidden.shape[0]},), got {tuple(target.shape)}")
    if hidden.dtype != weight.dtype or not hidden.is_floating_point():
        raise TypeError(f"hidden and weight must share a float dtype, got {hidden.dtype} and {weight.dtype}")
    if target.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"target must hold int64 class indices, got {target.dtype}")
    T, H = hidden.shape
    V = weight.shape[0]
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    _check_target(target, V, ignore_index)
    chunk = chunk_size or default_chunk_size(T, H, V)
    return FusedLinearCrossEntropyFunction.apply(hidden, weight, target.contiguous(), ignore_index, chunk)


def fused_linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = -100,
    *,
    chunk_size: int | None = None,
    upcast: bool = True,
) -> torch.Tensor:
    """torch: the full logits, fp32 (fp64 for fp64) with `upcast`, else in the input dtype."""
    if upcast:
        acc = _acc_dtype(hidden.dtype)
        logits = hidden.to(acc) @ weight.to(acc).t()
        return F.cross_entropy(logits, target, ignore_index=ignore_index).to(hidden.dtype)
    return F.cross_entropy(hidden @ weight.t(), target, ignore_index=ignore_index)


# --------------------------------------------------------------------------------------------------
# Examples, cost model, spec
# --------------------------------------------------------------------------------------------------

# (tokens, hidden, vocab): ragged; several forward chunks and backward vocabulary blocks on CPU.
CPU_SHAPES = ((3, 16, 5), (37, 33, 130), (100, 64, 1000), (65, 48, 3001))
GPU_SHAPES = ((37, 33, 130), (1000, 1030, 32003), (4096, 4096, 128256))


def examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for tokens, hidden, vocab in CPU_SHAPES if device == "cpu" else GPU_SHAPES:
        h = torch.randn(tokens, hidden, generator=g)
        w = torch.randn(vocab, hidden, generator=g) / math.sqrt(hidden)
        t = torch.randint(0, vocab, (tokens,), generator=g)
        if tokens > 3:
            t[torch.rand(tokens, generator=g) < 0.25] = -100  # some ignored positions
            t[0] = t[0].clamp_min(0)  # keep at least one valid token
        out.append(
            Example(
                (h.to(device=device, dtype=dtype), w.to(device=device, dtype=dtype), t.to(device)),
                label=f"T{tokens} H{hidden} V{vocab}",
            )
        )
    return out


def _flops(hidden: torch.Tensor, weight: torch.Tensor, *_: object, **__: object) -> float:
    return 2.0 * hidden.shape[0] * hidden.shape[1] * weight.shape[0]  # the forward logits GEMM


def _bytes(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, *_: object, **__: object
) -> float:
    # hidden once, the weight once per chunk pass (it streams from L2/HBM per chunk), the targets
    return float(
        hidden.numel() * hidden.element_size()
        + weight.numel() * weight.element_size()
        + target.numel() * target.element_size()
    )


# A GEMM of length H followed by a row reduction. fp32: torch in fp32 is the reference (error 0), so
# the floor covers summation order in logits of O(1) through a loss of ~log V. 16-bit: torch in the
# input dtype rounds the logits (the yardstick); the floor is one or two ulps of the gradients
# (|dhidden| ~ |dloss| / n_valid * |w|) stored in the input dtype.
TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=2e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
    "bfloat16": Tolerance(atol=5e-2, rtol=5e-2, floor=8e-3),
    "float64": FLOAT64,  # the project's float64 rule (kernels/testing.py)
}

SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="fused_linear_cross_entropy",
        reference=fused_linear_cross_entropy_reference,
        implementation=fused_linear_cross_entropy,
        examples=examples,
        tolerances=TOLERANCES,
        dtypes=("float32", "float16", "bfloat16", "float64"),
        flops=_flops,
        bytes=_bytes,
        backward=True,
        description=(
            "hidden @ weight.T + cross-entropy without the (T, V) logits: forward chunked over tokens, "
            "backward recomputes logits per vocabulary block."
        ),
        module=__name__,
    ),
)
