"""RMSNorm over the last dimension in the Llama convention, forward and backward.

y = weight * (x32 * rsqrt(mean(x32^2) + eps)).to(dtype): the normalised row is rounded to the input
dtype *before* the weight multiply, as Hugging Face's LlamaRMSNorm does, so a kernel trained against
that module sees identical numerics. The backward mirrors layer_norm.py: dx per row, dweight as a few
per-program fp32 partial sums reduced by torch (no atomics, deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import (
    MAX_FUSED_SIZE,
    acc_dtype,
    as_rows,
    empty_out,
    finish,
    num_warps,
    reduction_programs,
    row_blocks,
    upcast,
    upcast_ref,
)
from kernelnotes.kernels.layer_norm import TOLERANCES  # same reductions, same bounds
from kernelnotes.kernelspec import Example, KernelSpec

# How the normalised row is rounded before the weight multiply (the input dtype's precision).
_ROUND = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 0}


@triton.jit
def _round_to(x, ROUND: tl.constexpr):
    """Round fp32 values to fp16/bf16 precision (round to nearest even), returned as fp32; fp32 and
    fp64 values are returned as they are."""
    if ROUND == 1:
        x = x.to(tl.float16).to(tl.float32)
    elif ROUND == 2:
        # Done on the bits: the interpreter's fp32->bf16 cast truncates instead of rounding.
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x


@triton.jit
def _rms_norm_fwd_kernel(
    X, W, Y, RSTD,
    n_rows, n_cols, stride_x, stride_y, eps,
    ROUND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    mask = row_ok[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)
    x = upcast(tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0))
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    h = _round_to(x * rstd[:, None], ROUND)
    w = upcast(tl.load(W + cols, mask=col_ok, other=0.0))
    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], w[None, :] * h, mask=mask)
    tl.store(RSTD + rows64, rstd, mask=row_ok)


@triton.jit
def _rms_norm_bwd_kernel(
    X, W, DY, RSTD, DX, DW_PART,
    n_rows, n_cols, stride_x, stride_dy, stride_dx, rows_per_program,
    ROUND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    w = upcast(tl.load(W + cols, mask=col_ok, other=0.0))
    acc_ty = tl.float64 if X.dtype.element_ty == tl.float64 else tl.float32
    dw_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_ty)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    for r0 in range(row_start, row_end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < row_end
        mask = row_ok[:, None] & col_ok[None, :]
        rows64 = rows.to(tl.int64)
        x = upcast(tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0))
        dy = upcast(tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0))
        rstd = tl.load(RSTD + rows64, mask=row_ok, other=0.0)
        xhat = x * rstd[:, None]
        dh = dy * w[None, :]
        # dx = rstd * (dh - xhat * mean(dh * xhat)); the rounding of h is treated as identity.
        c = tl.sum(dh * xhat, axis=1) / n_cols
        tl.store(
            DX + rows64[:, None] * stride_dx + cols[None, :],
            (dh - xhat * c[:, None]) * rstd[:, None],
            mask=mask,
        )
        # dweight sees the rounded h, exactly as in the forward.
        dw_acc += dy * _round_to(xhat, ROUND)
    tl.store(DW_PART + pid * n_cols + cols, tl.sum(dw_acc, axis=0), mask=col_ok)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        weight = weight.contiguous()
        x2 = as_rows(x)
        n_rows, n_cols = x2.shape
        y = empty_out((n_rows, n_cols), x.dtype, x.device)
        rstd = torch.empty(n_rows, dtype=acc_dtype(x.dtype), device=x.device)
        block_m, block_n = row_blocks(n_rows, n_cols, "rms_norm")
        if n_rows and n_cols:
            _rms_norm_fwd_kernel[(triton.cdiv(n_rows, block_m),)](
                x2, weight, y, rstd, n_rows, n_cols, x2.stride(0), y.stride(0), eps,
                ROUND=_ROUND[x.dtype], BLOCK_M=block_m, BLOCK_N=block_n,
                num_warps=num_warps(block_m * block_n),
            )  # fmt: skip
        ctx.save_for_backward(x2, weight, rstd)
        return finish(y, x.dtype).view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x2.shape
        if n_rows == 0 or n_cols == 0:
            return torch.zeros_like(dy), torch.zeros_like(weight), None
        dy2 = as_rows(dy)
        dx = empty_out((n_rows, n_cols), x2.dtype, x2.device)
        block_m, block_n = row_blocks(n_rows, n_cols, "rms_norm")
        rows_per_program = triton.cdiv(n_rows, min(reduction_programs(x2), n_rows))
        n_programs = triton.cdiv(n_rows, rows_per_program)
        dw_part = torch.empty((n_programs, n_cols), dtype=acc_dtype(x2.dtype), device=x2.device)
        _rms_norm_bwd_kernel[(n_programs,)](
            x2, weight, dy2, rstd, dx, dw_part,
            n_rows, n_cols, x2.stride(0), dy2.stride(0), dx.stride(0), rows_per_program,
            ROUND=_ROUND[x2.dtype], BLOCK_M=block_m, BLOCK_N=block_n,
            num_warps=num_warps(block_m * block_n),
        )  # fmt: skip
        return finish(dx, x2.dtype).view(dy.shape), dw_part.sum(0).to(weight.dtype), None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Llama RMSNorm over the last dim: weight * (x * rsqrt(mean(x^2) + eps)) with fp32 statistics
    (fp64 for fp64 inputs); rows of at most 65,536 elements (`caps` of its KernelSpec)."""
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"weight must have shape ({x.shape[-1]},), got {tuple(weight.shape)}")
    if x.dtype not in _ROUND:
        raise TypeError(f"rms_norm supports float32, float16, bfloat16 and float64, not {x.dtype}")
    return RMSNormFunction.apply(x, weight, eps)


def rms_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *, upcast: bool = True
) -> torch.Tensor:
    if upcast:
        x32 = upcast_ref(x)
        h = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        # weight * h.to(dtype), with the product in fp32: the same forward values as the dtype
        # product (one rounding either way), but autograd then sums dweight in fp32 instead of
        # rounding every dy * h term to the input dtype first.
        return (upcast_ref(weight) * h.to(x.dtype).to(x32.dtype)).to(x.dtype)
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


EXAMPLE_SHAPES: tuple[tuple[int, ...], ...] = ((1, 7), (37, 33), (2, 3, 130), (37, 1000))


def examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in EXAMPLE_SHAPES:
        # Rows of different scales; weight near 1 as after training.
        x = torch.randn(shape, generator=g) * torch.rand((*shape[:-1], 1), generator=g).mul(3).add(0.1)
        w = 1.0 + 0.2 * torch.randn(shape[-1], generator=g)
        out.append(
            Example(
                (x.to(device=device, dtype=dtype), w.to(device=device, dtype=dtype)), label=f"x{list(shape)}"
            )
        )
    return out


def _flops(x: torch.Tensor, *_: object, **__: object) -> float:
    return 4.0 * x.numel()  # square, sum, scale, weight (+ rsqrt per row)


def _bytes(x: torch.Tensor, weight: torch.Tensor, *_: object, **__: object) -> float:
    rows = x.numel() // max(x.shape[-1], 1)
    return 2.0 * x.numel() * x.element_size() + weight.numel() * weight.element_size() + 4.0 * rows


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="rms_norm",
        reference=rms_norm_reference,
        implementation=rms_norm,
        examples=examples,
        tolerances=TOLERANCES,
        flops=_flops,
        bytes=_bytes,
        backward=True,
        reduction=lambda x, *_, **__: x.shape[-1],
        caps={"row width": MAX_FUSED_SIZE},
        description="RMSNorm (Llama convention: round, then scale by weight); fp32 statistics; fused backward.",
        module=__name__,
    ),
)
