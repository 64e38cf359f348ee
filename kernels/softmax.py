"""Row softmax and logsumexp over the last dimension.

Two forward kernels: a single-block kernel that holds a whole row (several short rows per program)
when the row fits one block, and a tiled online-softmax kernel for long rows that keeps a running
maximum and a rescaled running sum, so each row is read twice (statistics, then outputs) and never
has to fit in registers. All arithmetic is fp32 whatever the input dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import TILE_ELEMENTS, as_rows, empty_out, finish, next_pow2, num_warps
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

Variant = Literal["auto", "single", "online"]

# Rows whose padded length is at most this are handled by the single-block kernel.
MAX_SINGLE_BLOCK = 8192
# Default tile of the online kernel; tests pass a smaller `block_n` to force several tiles.
ONLINE_BLOCK = 2048


# ----------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _softmax_block_kernel(
    X,
    Y,
    LSE,
    n_rows,
    n_cols,
    stride_x,
    stride_y,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    STORE_Y: tl.constexpr,
    STORE_LSE: tl.constexpr,
):
    # BLOCK_M rows per program: for short rows one row per program would leave most lanes idle.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols[None, :] < n_cols)
    rows64 = rows.to(tl.int64)
    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=-float("inf"))
    x = x.to(tl.float32)
    m = tl.max(x, axis=1)
    # A row of -inf (or a padding row) would give -inf - -inf = nan; shifting by 0 instead is exact.
    m = tl.where(m == -float("inf"), 0.0, m)
    e = tl.exp(x - m[:, None])
    s = tl.sum(e, axis=1)
    s = tl.where(row_ok, s, 1.0)  # padding rows: keep log/divide finite (never stored)
    if STORE_LSE:
        tl.store(LSE + rows64, m + tl.log(s), mask=row_ok)
    if STORE_Y:
        y = e * (1.0 / s)[:, None]
        tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y, mask=mask)


@triton.jit
def _softmax_online_kernel(
    X,
    Y,
    LSE,
    n_rows,
    n_cols,
    stride_x,
    stride_y,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    STORE_Y: tl.constexpr,
    STORE_LSE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    lanes = tl.arange(0, BLOCK_N)
    # Per-lane running max and sum, merged once after the loop: one cross-lane reduction per row
    # instead of one per tile.
    m_i = tl.full([BLOCK_M, BLOCK_N], -float("inf"), dtype=tl.float32)
    s_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + lanes
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=-float("inf"))
        x = x.to(tl.float32)
        m_new = tl.maximum(m_i, x)
        # Lanes that have only seen padding stay at -inf; shift them by 0 to avoid inf - inf.
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)
        s_i = s_i * tl.exp(m_i - shift) + tl.exp(x - shift)
        m_i = m_new
    m = tl.max(m_i, axis=1)
    m = tl.where(m == -float("inf"), 0.0, m)
    s = tl.sum(s_i * tl.exp(m_i - m[:, None]), axis=1)
    s = tl.where(row_ok, s, 1.0)  # padding rows: keep log/divide finite (never stored)
    if STORE_LSE:
        tl.store(LSE + rows64, m + tl.log(s), mask=row_ok)
    if STORE_Y:
        inv = 1.0 / s
        for start in range(0, n_cols, BLOCK_N):
            cols = start + lanes
            mask = row_ok[:, None] & (cols[None, :] < n_cols)
            x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=-float("inf"))
            y = tl.exp(x.to(tl.float32) - m[:, None]) * inv[:, None]
            tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y, mask=mask)


@triton.jit
def _softmax_bwd_kernel(
    Y,
    DY,
    DX,
    n_rows,
    n_cols,
    stride_y,
    stride_dy,
    stride_dx,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # dx = y * (dy - sum(dy * y)); the loop runs once when the row fits one tile.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    lanes = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + lanes
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        y = tl.load(Y + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        acc += y * dy
    dot = tl.sum(acc, axis=1)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + lanes
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        y = tl.load(Y + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], y * (dy - dot[:, None]), mask=mask)


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------


def _rows_per_program(block_n: int, n_rows: int) -> int:
    return max(1, min(next_pow2(n_rows), TILE_ELEMENTS // block_n, 16))


def _pick_variant(n_cols: int, variant: Variant) -> str:
    if variant == "auto":
        return "single" if next_pow2(n_cols) <= MAX_SINGLE_BLOCK else "online"
    if variant not in ("single", "online"):
        raise ValueError(f"variant must be 'auto', 'single' or 'online', not {variant!r}")
    return variant


def _softmax_fwd(
    x: torch.Tensor, *, want_y: bool, want_lse: bool, variant: Variant, block_n: int | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch a forward kernel; returns (y in x's dtype, lse in fp32), each None when not asked for."""
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape
    y = empty_out((n_rows, n_cols), x.dtype, x.device) if want_y else None
    lse = torch.empty(n_rows, dtype=torch.float32, device=x.device) if want_lse else None
    if n_rows == 0 or n_cols == 0:
        if lse is not None:
            lse.fill_(-float("inf"))
        return y, lse
    # Unused outputs still need a pointer; the constexpr flags keep the kernel from touching them.
    y_arg = y if y is not None else x2
    lse_arg = lse if lse is not None else x2
    stride_y = y.stride(0) if y is not None else 0
    if _pick_variant(n_cols, variant) == "single":
        block = next_pow2(n_cols)
        block_m = _rows_per_program(block, n_rows)
        _softmax_block_kernel[(triton.cdiv(n_rows, block_m),)](
            x2, y_arg, lse_arg, n_rows, n_cols, x2.stride(0), stride_y,
            BLOCK_M=block_m, BLOCK_N=block, STORE_Y=want_y, STORE_LSE=want_lse,
            num_warps=num_warps(block * block_m),
        )  # fmt: skip
    else:
        block = min(next_pow2(block_n or ONLINE_BLOCK), next_pow2(n_cols))
        block_m = _rows_per_program(block, n_rows)
        _softmax_online_kernel[(triton.cdiv(n_rows, block_m),)](
            x2, y_arg, lse_arg, n_rows, n_cols, x2.stride(0), stride_y,
            BLOCK_M=block_m, BLOCK_N=block, STORE_Y=want_y, STORE_LSE=want_lse,
            num_warps=num_warps(block * block_m),
        )  # fmt: skip
    return y, lse


def _softmax_bwd(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """dx for y = softmax(x); `y` and `dy` have the layout of the forward input."""
    y2, dy2 = as_rows(y), as_rows(dy)
    n_rows, n_cols = y2.shape
    dx = empty_out((n_rows, n_cols), y.dtype, y.device)
    if dx.numel():
        block = min(next_pow2(n_cols), MAX_SINGLE_BLOCK)
        block_m = _rows_per_program(block, n_rows)
        _softmax_bwd_kernel[(triton.cdiv(n_rows, block_m),)](
            y2, dy2, dx, n_rows, n_cols, y2.stride(0), dy2.stride(0), dx.stride(0),
            BLOCK_M=block_m, BLOCK_N=block, num_warps=num_warps(block * block_m),
        )  # fmt: skip
    return finish(dx, y.dtype).view(y.shape)


# ----------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------


class SoftmaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, variant: Variant, block_n: int | None) -> torch.Tensor:
        y, _ = _softmax_fwd(x, want_y=True, want_lse=False, variant=variant, block_n=block_n)
        y = finish(y, x.dtype).view(x.shape)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (y,) = ctx.saved_tensors
        return _softmax_bwd(y, dy), None, None


class LogSumExpFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, variant: Variant, block_n: int | None) -> torch.Tensor:
        _, lse = _softmax_fwd(x, want_y=False, want_lse=True, variant=variant, block_n=block_n)
        ctx.save_for_backward(x)
        ctx.variant, ctx.block_n = variant, block_n
        return lse.to(x.dtype).view(x.shape[:-1])

    @staticmethod
    def backward(ctx, dlse: torch.Tensor):
        # d logsumexp / dx = softmax(x): recompute it rather than keep a full-size tensor alive.
        (x,) = ctx.saved_tensors
        y, _ = _softmax_fwd(x, want_y=True, want_lse=False, variant=ctx.variant, block_n=ctx.block_n)
        p = y.view(x.shape).float()
        return (p * dlse.float().unsqueeze(-1)).to(x.dtype), None, None


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------


def softmax(x: torch.Tensor, *, variant: Variant = "auto", block_n: int | None = None) -> torch.Tensor:
    """Softmax over the last dimension, computed in fp32 and returned in x's dtype.

    `variant` picks the kernel: "single" (whole row in one block), "online" (tiled running max and
    sum, tile `block_n`), or "auto" (single when the padded row fits MAX_SINGLE_BLOCK).
    """
    return SoftmaxFunction.apply(x, variant, block_n)


def logsumexp(x: torch.Tensor, *, variant: Variant = "auto", block_n: int | None = None) -> torch.Tensor:
    """log(sum(exp(x))) over the last dimension, in fp32, returned in x's dtype (last dim removed)."""
    return LogSumExpFunction.apply(x, variant, block_n)


# ----------------------------------------------------------------------------------------------------
# Torch references
# ----------------------------------------------------------------------------------------------------


def softmax_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return torch.softmax(x.float(), -1).to(x.dtype) if upcast else torch.softmax(x, -1)


def logsumexp_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return torch.logsumexp(x.float(), -1).to(x.dtype) if upcast else torch.logsumexp(x, -1)


# ----------------------------------------------------------------------------------------------------
# Examples, cost model, specs
# ----------------------------------------------------------------------------------------------------

# Ragged, non-power-of-two shapes; small because the CPU interpreter runs each program in Python.
EXAMPLE_SHAPES: tuple[tuple[int, ...], ...] = ((3, 1), (37, 33), (2, 3, 130), (37, 1000))


def examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in EXAMPLE_SHAPES:
        x = (3.0 * torch.randn(shape, generator=g)).to(device=device, dtype=dtype)
        out.append(Example((x,), label=f"x{list(shape)}"))
    return out


def _softmax_flops(x: torch.Tensor, **_: object) -> float:
    return 5.0 * x.numel()  # max, subtract, exp, sum, scale per element


def _softmax_bytes(x: torch.Tensor, **_: object) -> float:
    return 2.0 * x.numel() * x.element_size()  # read x, write y


def _lse_flops(x: torch.Tensor, **_: object) -> float:
    return 4.0 * x.numel()  # max, subtract, exp, sum per element


def _lse_bytes(x: torch.Tensor, **_: object) -> float:
    return float(x.numel() + x.numel() // max(x.shape[-1], 1)) * x.element_size()


# Softmax-like ops. torch in fp32 *is* the reference, so the fp32 floor is a few fp32 ulps of the
# output; for fp16/bf16 the floor is about one ulp of the output dtype at the output's magnitude
# (probabilities <= 1; logsumexp of 1000 entries of scale 3 is about 10-15), since torch on CPU
# often rounds the same fp32 math once and so has zero error of its own.
SOFTMAX_TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
    "bfloat16": Tolerance(atol=5e-2, rtol=5e-2, floor=8e-3),
}
LSE_TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-2),
    "bfloat16": Tolerance(atol=5e-2, rtol=5e-2, floor=6.25e-2),
}

SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="softmax",
        reference=softmax_reference,
        implementation=softmax,
        examples=examples,
        tolerances=SOFTMAX_TOLERANCES,
        flops=_softmax_flops,
        bytes=_softmax_bytes,
        backward=True,
        description="Softmax over the last dim: single-block for short rows, online (tiled) for long rows.",
        module=__name__,
    ),
    KernelSpec(
        name="logsumexp",
        reference=logsumexp_reference,
        implementation=logsumexp,
        examples=examples,
        tolerances=LSE_TOLERANCES,
        flops=_lse_flops,
        bytes=_lse_bytes,
        backward=True,
        description="Logsumexp over the last dim with the softmax kernels' running max and sum.",
        module=__name__,
    ),
)

__all__ = ["SPECS", "logsumexp", "logsumexp_reference", "softmax", "softmax_reference"]
