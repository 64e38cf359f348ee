"""LayerNorm over the last dimension with weight and bias, forward and backward.

The forward keeps each row's mean and 1/std in fp32 for the backward. The backward computes dx row
by row and accumulates dweight/dbias per program in fp32 registers; the few per-program partial sums
are reduced by torch afterwards, so there are no atomics and the result is deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance


@triton.jit
def _layer_norm_fwd_kernel(
    X, W, B, Y, MEAN, RSTD,
    n_rows, n_cols, stride_x, stride_y, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    mask = row_ok[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)
    x = upcast(tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0))
    mean = tl.sum(x, axis=1) / n_cols
    # Two-pass variance (subtract the mean first): no cancellation for rows with a large mean.
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = upcast(tl.load(W + cols, mask=col_ok, other=0.0))
    b = upcast(tl.load(B + cols, mask=col_ok, other=0.0))
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y, mask=mask)
    tl.store(MEAN + rows64, mean, mask=row_ok)
    tl.store(RSTD + rows64, rstd, mask=row_ok)


@triton.jit
def _layer_norm_bwd_kernel(
    X, W, DY, MEAN, RSTD, DX, DW_PART, DB_PART,
    n_rows, n_cols, stride_x, stride_dy, stride_dx, rows_per_program,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    w = upcast(tl.load(W + cols, mask=col_ok, other=0.0))
    acc_ty = tl.float64 if X.dtype.element_ty == tl.float64 else tl.float32
    dw_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_ty)
    db_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_ty)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    for r0 in range(row_start, row_end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < row_end
        mask = row_ok[:, None] & col_ok[None, :]
        rows64 = rows.to(tl.int64)
        x = upcast(tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0))
        dy = upcast(tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0))
        mean = tl.load(MEAN + rows64, mask=row_ok, other=0.0)
        rstd = tl.load(RSTD + rows64, mask=row_ok, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdy = w[None, :] * dy
        # dx = rstd * (w*dy - mean(w*dy) - xhat * mean(xhat * w*dy))
        c1 = tl.sum(xhat * wdy, axis=1) / n_cols
        c2 = tl.sum(wdy, axis=1) / n_cols
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx, mask=mask)
        dw_acc += dy * xhat
        db_acc += dy
    tl.store(DW_PART + pid * n_cols + cols, tl.sum(dw_acc, axis=0), mask=col_ok)
    tl.store(DB_PART + pid * n_cols + cols, tl.sum(db_acc, axis=0), mask=col_ok)


def _layer_norm_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float):
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape
    y = empty_out((n_rows, n_cols), x.dtype, x.device)
    mean = torch.empty(n_rows, dtype=acc_dtype(x.dtype), device=x.device)
    rstd = torch.empty(n_rows, dtype=acc_dtype(x.dtype), device=x.device)
    if n_rows and n_cols:
        block_m, block_n = row_blocks(n_rows, n_cols, "layer_norm")
        _layer_norm_fwd_kernel[(triton.cdiv(n_rows, block_m),)](
            x2, w, b, y, mean, rstd, n_rows, n_cols, x2.stride(0), y.stride(0), eps,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps(block_m * block_n),
        )  # fmt: skip
    return finish(y, x.dtype).view(x.shape), x2, mean, rstd


def _layer_norm_bwd(
    dy: torch.Tensor, x2: torch.Tensor, w: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
):
    dy2 = as_rows(dy)
    n_rows, n_cols = x2.shape
    dx = empty_out((n_rows, n_cols), x2.dtype, x2.device)
    block_m, block_n = row_blocks(n_rows, n_cols, "layer_norm")
    rows_per_program = triton.cdiv(n_rows, min(reduction_programs(x2), n_rows))
    n_programs = triton.cdiv(n_rows, rows_per_program)
    dw_part = torch.empty((n_programs, n_cols), dtype=acc_dtype(x2.dtype), device=x2.device)
    db_part = torch.empty((n_programs, n_cols), dtype=acc_dtype(x2.dtype), device=x2.device)
    _layer_norm_bwd_kernel[(n_programs,)](
        x2, w, dy2, mean, rstd, dx, dw_part, db_part,
        n_rows, n_cols, x2.stride(0), dy2.stride(0), dx.stride(0), rows_per_program,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps(block_m * block_n),
    )  # fmt: skip
    return finish(dx, x2.dtype).view(dy.shape), dw_part.sum(0).to(w.dtype), db_part.sum(0).to(w.dtype)


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        weight, bias = weight.contiguous(), bias.contiguous()
        y, x2, mean, rstd = _layer_norm_fwd(x, weight, bias, eps)
        ctx.save_for_backward(x2, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, mean, rstd = ctx.saved_tensors
        if x2.numel() == 0:
            return torch.zeros_like(dy), torch.zeros_like(weight), torch.zeros_like(weight), None
        dx, dw, db = _layer_norm_bwd(dy, x2, weight, mean, rstd)
        return dx, dw, db, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * weight + bias, statistics in fp32
    (fp64 for fp64 inputs); rows of at most 65,536 elements (`caps` of its KernelSpec)."""
    if not x.is_floating_point():
        raise TypeError(f"layer_norm expects a floating-point tensor, not {x.dtype}")
    if weight.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise ValueError(f"weight and bias must have shape ({x.shape[-1]},)")
    return LayerNormFunction.apply(x, weight, bias, eps)


def layer_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5, *, upcast: bool = True
) -> torch.Tensor:
    n = (x.shape[-1],)
    if upcast:
        return F.layer_norm(upcast_ref(x), n, upcast_ref(weight), upcast_ref(bias), eps).to(x.dtype)
    return F.layer_norm(x, n, weight, bias, eps)


EXAMPLE_SHAPES: tuple[tuple[int, ...], ...] = ((1, 7), (37, 33), (2, 3, 130), (37, 1000))


def examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in EXAMPLE_SHAPES:
        # A per-row offset makes the mean matter; weight near 1 and a small bias as after training.
        x = torch.randn(shape, generator=g) + torch.randn((*shape[:-1], 1), generator=g)
        w = 1.0 + 0.2 * torch.randn(shape[-1], generator=g)
        b = 0.2 * torch.randn(shape[-1], generator=g)
        args = tuple(t.to(device=device, dtype=dtype) for t in (x, w, b))
        out.append(Example(args, label=f"x{list(shape)}"))
    return out


def _flops(x: torch.Tensor, *_: object, **__: object) -> float:
    return 8.0 * x.numel()  # mean, centre, square, sum, scale, weight, bias (+ rstd per row)


def _bytes(x: torch.Tensor, weight: torch.Tensor, *_: object, **__: object) -> float:
    rows = x.numel() // max(x.shape[-1], 1)
    # read x, weight, bias; write y; write mean and rstd (fp32)
    return 2.0 * x.numel() * x.element_size() + 2.0 * weight.numel() * weight.element_size() + 8.0 * rows


# Reductions: fp32 allclose 1e-4 and torch fp32 is the reference itself, so the floor is the atol;
# fp16/bf16 floors are about one output ulp at the magnitudes seen here (|y| < 4, |dweight| < 16).
TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=4e-3),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=3.2e-2),
    "float64": FLOAT64,
}

SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="layer_norm",
        reference=layer_norm_reference,
        implementation=layer_norm,
        examples=examples,
        tolerances=TOLERANCES,
        flops=_flops,
        bytes=_bytes,
        backward=True,
        reduction=lambda x, *_, **__: x.shape[-1],
        caps={"row width": MAX_FUSED_SIZE},
        description="LayerNorm over the last dim with weight and bias; fp32 statistics; fused backward.",
        module=__name__,
    ),
)
