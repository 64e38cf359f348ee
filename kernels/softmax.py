"""Row softmax, log_softmax and logsumexp over the last dimension.

Two forward kernels: a single-block kernel that holds a whole row (several short rows per program)
when the row fits one block, and a tiled online-softmax kernel for long rows that keeps a running
maximum and a rescaled running sum, so each row is read twice (statistics, then outputs) and never
has to fit in registers. Arithmetic is fp32 for 16-bit and fp32 inputs, fp64 for fp64 inputs.

Edge cases follow torch: a row of -inf gives softmax NaN and logsumexp -inf, a row holding +inf gives
logsumexp +inf (NaN if the row also holds a NaN) and softmax NaN, NaN propagates, and an empty last
dimension gives an empty result (logsumexp: -inf).
"""

from __future__ import annotations

from typing import Literal

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import (
    acc_dtype,
    as_rows,
    empty_out,
    finish,
    next_pow2,
    num_warps,
    row_blocks,
    upcast,
    upcast_ref,
)
from kernelnotes.kernels.testing import FLOAT64
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
    LOG: tl.constexpr,
):
    # BLOCK_M rows per program: for short rows one row per program would leave most lanes idle.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols[None, :] < n_cols)
    rows64 = rows.to(tl.int64)
    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=-float("inf"))
    x = upcast(x)
    m = tl.max(x, axis=1)
    # A row of -inf (or a padding row) would give -inf - -inf = nan; shifting by 0 instead is exact.
    m = tl.where(m == -float("inf"), 0.0, m)
    e = tl.exp(x - m[:, None])
    s = tl.sum(e, axis=1)
    s = tl.where(row_ok, s, 1.0)  # padding rows: keep log/divide finite (never stored)
    if STORE_LSE:
        has_nan = tl.max(tl.where(x != x, 1, 0), axis=1) > 0
        tl.store(LSE + rows64, _lse(m, s, has_nan), mask=row_ok)
    if STORE_Y:
        if LOG:
            y = (x - m[:, None]) - tl.log(s)[:, None]
        else:
            y = e * (1.0 / s)[:, None]
        tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y, mask=mask)


@triton.jit
def _lse(m, s, has_nan):
    """m + log(s), except that a row whose max is +inf has logsumexp +inf (NaN if it holds a NaN):
    with the shift m = +inf, s is NaN (inf - inf) and would hide the answer."""
    pos_inf = m == float("inf")
    return tl.where(pos_inf & ~has_nan, m, m + tl.log(s))


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
    LOG: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    lanes = tl.arange(0, BLOCK_N)
    # Per-lane running max and sum, merged once after the loop: one cross-lane reduction per row
    # instead of one per tile. The accumulators take the compute dtype of the input (fp32 or fp64).
    acc_ty = tl.float64 if X.dtype.element_ty == tl.float64 else tl.float32
    m_i = tl.full([BLOCK_M, BLOCK_N], -float("inf"), dtype=acc_ty)
    s_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_ty)
    nan_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + lanes
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=-float("inf"))
        x = upcast(x)
        m_new = tl.maximum(m_i, x)
        # Lanes that have only seen padding stay at -inf; shift them by 0 to avoid inf - inf.
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)
        s_i = s_i * tl.exp(m_i - shift) + tl.exp(x - shift)
        m_i = m_new
        if STORE_LSE:
            nan_i = tl.maximum(nan_i, tl.where(x != x, 1, 0))
    m = tl.max(m_i, axis=1)
    m = tl.where(m == -float("inf"), 0.0, m)
    s = tl.sum(s_i * tl.exp(m_i - m[:, None]), axis=1)
    s = tl.where(row_ok, s, 1.0)  # padding rows: keep log/divide finite (never stored)
    if STORE_LSE:
        tl.store(LSE + rows64, _lse(m, s, tl.max(nan_i, axis=1) > 0), mask=row_ok)
    if STORE_Y:
        inv = 1.0 / s
        log_s = tl.log(s)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + lanes
            mask = row_ok[:, None] & (cols[None, :] < n_cols)
            x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=-float("inf"))
            if LOG:
                y = (upcast(x) - m[:, None]) - log_s[:, None]
            else:
                y = tl.exp(upcast(x) - m[:, None]) * inv[:, None]
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
    LOG: tl.constexpr,
):
    # softmax: dx = y * (dy - sum(dy * y)); log_softmax (y = log p): dx = dy - exp(y) * sum(dy).
    # The loop runs once when the row fits one tile.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    lanes = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float64 if Y.dtype.element_ty == tl.float64 else tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + lanes
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        dy = upcast(tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0))
        if LOG:
            acc += dy
        else:
            y = upcast(tl.load(Y + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0))
            acc += y * dy
    dot = tl.sum(acc, axis=1)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + lanes
        mask = row_ok[:, None] & (cols[None, :] < n_cols)
        y = upcast(tl.load(Y + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0))
        dy = upcast(tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0))
        if LOG:
            dx = dy - tl.exp(y) * dot[:, None]
        else:
            dx = y * (dy - dot[:, None])
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx, mask=mask)


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------


def _pick_variant(n_cols: int, variant: Variant) -> str:
    if variant == "auto":
        return "single" if next_pow2(n_cols) <= MAX_SINGLE_BLOCK else "online"
    if variant not in ("single", "online"):
        raise ValueError(f"variant must be 'auto', 'single' or 'online', not {variant!r}")
    return variant


def _softmax_fwd(
    x: torch.Tensor,
    *,
    want_y: bool,
    want_lse: bool,
    variant: Variant,
    block_n: int | None,
    log: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch a forward kernel; returns (y in x's dtype, lse in the compute dtype), each None when
    not asked for. `log=True` makes y log_softmax instead of softmax."""
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape
    y = empty_out((n_rows, n_cols), x.dtype, x.device) if want_y else None
    lse = torch.empty(n_rows, dtype=acc_dtype(x.dtype), device=x.device) if want_lse else None
    if n_rows == 0 or n_cols == 0:
        if lse is not None:
            lse.fill_(-float("inf"))  # the log of an empty sum, as torch.logsumexp
        return y, lse
    # Unused outputs still need a pointer; the constexpr flags keep the kernel from touching them.
    y_arg = y if y is not None else x2
    lse_arg = lse if lse is not None else x2
    stride_y = y.stride(0) if y is not None else 0
    if _pick_variant(n_cols, variant) == "single":
        kernel = _softmax_block_kernel
        block_m, block = row_blocks(n_rows, n_cols, "softmax", max_cols=MAX_SINGLE_BLOCK)
    else:
        kernel = _softmax_online_kernel
        tile = min(next_pow2(block_n or ONLINE_BLOCK), next_pow2(n_cols))
        block_m, block = row_blocks(n_rows, n_cols, "softmax", block_n=tile)
    kernel[(triton.cdiv(n_rows, block_m),)](
        x2, y_arg, lse_arg, n_rows, n_cols, x2.stride(0), stride_y,
        BLOCK_M=block_m, BLOCK_N=block, STORE_Y=want_y, STORE_LSE=want_lse, LOG=log,
        num_warps=num_warps(block * block_m),
    )  # fmt: skip
    return y, lse


def _softmax_bwd(y: torch.Tensor, dy: torch.Tensor, *, log: bool = False) -> torch.Tensor:
    """dx for y = softmax(x) (or log_softmax with `log`); `y` and `dy` have the forward's layout."""
    y2, dy2 = as_rows(y), as_rows(dy)
    n_rows, n_cols = y2.shape
    dx = empty_out((n_rows, n_cols), y.dtype, y.device)
    if dx.numel():
        tile = min(next_pow2(n_cols), MAX_SINGLE_BLOCK)
        block_m, block = row_blocks(n_rows, n_cols, "softmax", block_n=tile)
        _softmax_bwd_kernel[(triton.cdiv(n_rows, block_m),)](
            y2, dy2, dx, n_rows, n_cols, y2.stride(0), dy2.stride(0), dx.stride(0),
            BLOCK_M=block_m, BLOCK_N=block, LOG=log, num_warps=num_warps(block * block_m),
        )  # fmt: skip
    return finish(dx, y.dtype).view(y.shape)


# ----------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------


class SoftmaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, variant: Variant, block_n: int | None, log: bool) -> torch.Tensor:
        y, _ = _softmax_fwd(x, want_y=True, want_lse=False, variant=variant, block_n=block_n, log=log)
        y = finish(y, x.dtype).view(x.shape)
        ctx.save_for_backward(y)
        ctx.log = log
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (y,) = ctx.saved_tensors
        return _softmax_bwd(y, dy, log=ctx.log), None, None, None


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
        acc = acc_dtype(x.dtype)
        p = y.view(x.shape).to(acc)
        return (p * dlse.to(acc).unsqueeze(-1)).to(x.dtype), None, None


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------


def _check_input(op: str, x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{op} expects a floating-point tensor, not {x.dtype}")


def softmax(x: torch.Tensor, *, variant: Variant = "auto", block_n: int | None = None) -> torch.Tensor:
    """Softmax over the last dimension, computed in fp32 (fp64 for fp64) and returned in x's dtype.

    `variant` picks the kernel: "single" (whole row in one block), "online" (tiled running max and
    sum, tile `block_n`), or "auto" (single when the padded row fits MAX_SINGLE_BLOCK).
    """
    _check_input("softmax", x)
    return SoftmaxFunction.apply(x, variant, block_n, False)


def log_softmax(x: torch.Tensor, *, variant: Variant = "auto", block_n: int | None = None) -> torch.Tensor:
    """log(softmax(x)) over the last dimension as (x - max) - log(sum(exp(x - max))), never through
    log of a rounded probability; fp32 (fp64 for fp64) inside, x's dtype out. Same variants as softmax."""
    _check_input("log_softmax", x)
    return SoftmaxFunction.apply(x, variant, block_n, True)


def logsumexp(x: torch.Tensor, *, variant: Variant = "auto", block_n: int | None = None) -> torch.Tensor:
    """log(sum(exp(x))) over the last dimension, fp32 (fp64 for fp64) inside, x's dtype out (last dim
    removed)."""
    _check_input("logsumexp", x)
    return LogSumExpFunction.apply(x, variant, block_n)


# ----------------------------------------------------------------------------------------------------
# Torch references
# ----------------------------------------------------------------------------------------------------


def softmax_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return torch.softmax(upcast_ref(x), -1).to(x.dtype) if upcast else torch.softmax(x, -1)


def log_softmax_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return torch.log_softmax(upcast_ref(x), -1).to(x.dtype) if upcast else torch.log_softmax(x, -1)


def logsumexp_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return torch.logsumexp(upcast_ref(x), -1).to(x.dtype) if upcast else torch.logsumexp(x, -1)


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


def _row_length(x: torch.Tensor, **_: object) -> int:
    return x.shape[-1]


def _softmax_flops(x: torch.Tensor, **_: object) -> float:
    return 5.0 * x.numel()  # max, subtract, exp, sum, scale per element


def _softmax_bytes(x: torch.Tensor, **_: object) -> float:
    return 2.0 * x.numel() * x.element_size()  # read x, write y


def _log_softmax_flops(x: torch.Tensor, **_: object) -> float:
    return 6.0 * x.numel()  # max, subtract, exp, sum per element; subtract max and log-sum again


def _lse_flops(x: torch.Tensor, **_: object) -> float:
    return 4.0 * x.numel()  # max, subtract, exp, sum per element


def _lse_bytes(x: torch.Tensor, **_: object) -> float:
    return float(x.numel() + x.numel() // max(x.shape[-1], 1)) * x.element_size()


# Softmax-like ops. torch in fp32 *is* the reference, so the fp32 floor is a few fp32 ulps of the
# output; for fp16/bf16 the floor is about one ulp of the output dtype at the output's magnitude
# (probabilities <= 1; logsumexp of 1000 entries of scale 3 is about 10-15), since torch on CPU
# often rounds the same fp32 math once and so has zero error of its own. fp64: testing.FLOAT64.
SOFTMAX_TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
    "bfloat16": Tolerance(atol=5e-2, rtol=5e-2, floor=8e-3),
    "float64": FLOAT64,
}
# log-probabilities are of the size of logsumexp (|log p| up to ~30 here): lse's bounds.
LSE_TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-2),
    "bfloat16": Tolerance(atol=5e-2, rtol=5e-2, floor=6.25e-2),
    "float64": FLOAT64,
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
        reduction=_row_length,
        description="Softmax over the last dim: single-block for short rows, online (tiled) for long rows.",
        module=__name__,
    ),
    KernelSpec(
        name="log_softmax",
        reference=log_softmax_reference,
        implementation=log_softmax,
        examples=examples,
        tolerances=LSE_TOLERANCES,
        flops=_log_softmax_flops,
        bytes=_softmax_bytes,
        backward=True,
        reduction=_row_length,
        description="Log-softmax over the last dim, (x - max) - log(sum(exp(x - max))), softmax's kernels.",
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
        reduction=_row_length,
        description="Logsumexp over the last dim with the softmax kernels' running max and sum.",
        module=__name__,
    ),
)

__all__ = [
    "SPECS",
    "log_softmax",
    "log_softmax_reference",
    "logsumexp",
    "logsumexp_reference",
    "softmax",
    "softmax_reference",
]
