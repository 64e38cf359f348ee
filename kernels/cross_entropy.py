"""Cross-entropy over logits fused with log-softmax, mean over non-ignored targets, with gradient.

One program per row walks the vocabulary in tiles with an online logsumexp (running max and
rescaled sum), so a row never has to fit in registers. When the logits need a gradient the same
program makes a second pass that writes d(loss)/d(logits) = (softmax - onehot) / n_valid, Liger
style: the backward then only scales that tensor by the incoming gradient, and no (rows, vocab)
softmax is ever kept besides it. The logits themselves are never modified.

Targets are validated on the host before the launch (one device-to-host sync, as torch's own check
costs on CPU): a target outside [0, C) other than `ignore_index` raises IndexError as torch does,
instead of an unchecked out-of-bounds read on a GPU. fp64 logits are computed in fp64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, acc_dtype, empty_out, finish, next_pow2, upcast, upcast_ref
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

# Vocabulary tile: large on the interpreter (each loop step has a fixed Python cost), register-sized
# on a GPU.
BLOCK_V = 8192 if INTERPRET else 4096


@triton.jit
def _cross_entropy_kernel(
    X, T, LOSS, DX, N_VALID,
    n_cols, stride_x, stride_dx, ignore_index,
    BLOCK_V: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x
    target = tl.load(T + row).to(tl.int32)
    valid = target != ignore_index
    # Ignored rows use column 0 for the (unused) target logit, so the load stays in bounds.
    t = tl.where(valid, target, 0)
    lanes = tl.arange(0, BLOCK_V)

    # Pass 1: per-lane running max and rescaled sum of exp, merged after the loop.
    acc_ty = tl.float64 if X.dtype.element_ty == tl.float64 else tl.float32
    m_i = tl.full([BLOCK_V], -float("inf"), dtype=acc_ty)
    s_i = tl.zeros([BLOCK_V], dtype=acc_ty)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + lanes
        x = upcast(tl.load(x_row + cols, mask=cols < n_cols, other=-float("inf")))
        m_new = tl.maximum(m_i, x)
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)  # padding-only lanes: avoid inf - inf
        s_i = s_i * tl.exp(m_i - shift) + tl.exp(x - shift)
        m_i = m_new
    m = tl.max(m_i, axis=0)
    s = tl.sum(s_i * tl.exp(m_i - m), axis=0)
    log_s = tl.log(s)
    # t is in [0, n_cols) (checked on the host); the mask keeps a bad launch in bounds regardless.
    x_t = upcast(tl.load(x_row + t, mask=(t >= 0) & (t < n_cols), other=float("nan")))
    # (m - x_t) + log(s), not (m + log(s)) - x_t: with logits ~1e4 the latter loses the loss to
    # fp32 rounding at the scale of the logits.
    tl.store(LOSS + row, tl.where(valid, (m - x_t) + log_s, 0.0))

    if COMPUTE_GRAD:
        # d(mean loss)/dx = (softmax(x) - onehot(t)) / n_valid for valid rows, 0 for ignored ones.
        n_valid = tl.load(N_VALID).to(acc_ty)
        scale = tl.where(valid, 1.0 / tl.maximum(n_valid, 1.0), 0.0)
        dx_row = DX + row * stride_dx
        for start in range(0, n_cols, BLOCK_V):
            cols = start + lanes
            x = upcast(tl.load(x_row + cols, mask=cols < n_cols, other=-float("inf")))
            p = tl.exp((x - m) - log_s)
            g = (p - tl.where(cols == t, 1.0, 0.0)) * scale
            tl.store(dx_row + cols, g, mask=cols < n_cols)


class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
        x = logits if logits.stride(-1) == 1 else logits.contiguous()
        target = target.contiguous()
        n_rows, n_cols = x.shape
        compute_grad = ctx.needs_input_grad[0]
        loss_rows = torch.empty(n_rows, dtype=acc_dtype(x.dtype), device=x.device)
        # Counted on the device and read by the kernel: no host sync for the mean's denominator.
        n_valid = (target != ignore_index).sum()
        dx = empty_out((n_rows, n_cols), x.dtype, x.device) if compute_grad else None
        if n_rows:
            block = min(BLOCK_V, next_pow2(n_cols))
            _cross_entropy_kernel[(n_rows,)](
                x, target, loss_rows, dx if dx is not None else x, n_valid,
                n_cols, x.stride(0), dx.stride(0) if dx is not None else 0, ignore_index,
                BLOCK_V=block, COMPUTE_GRAD=compute_grad, num_warps=8 if block >= 4096 else 4,
            )  # fmt: skip
        # 0/0 = nan when every target is ignored, as in torch.
        loss = loss_rows.sum() / n_valid
        if compute_grad:
            ctx.save_for_backward(finish(dx, x.dtype))
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, dloss: torch.Tensor):
        (dx,) = ctx.saved_tensors
        # The gradient of the mean loss was computed in the forward; chain rule by one scalar.
        return dx * dloss.to(dx.dtype), None, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of `logits` (rows, vocab) against class indices `target` (rows,).

    Rows whose target equals `ignore_index` do not count. Computed in fp32, returned in the logits'
    dtype.
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, C) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"cross_entropy expects floating-point logits, not {logits.dtype}")
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16, torch.int8):
        raise TypeError(f"cross_entropy expects integer class indices as target, not {target.dtype}")
    _check_targets(target, logits.shape[1], ignore_index)
    return CrossEntropyFunction.apply(logits, target, ignore_index)


def _check_targets(target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """IndexError, as torch's, for a target outside [0, n_classes) that is not ignore_index."""
    if target.device.type == "meta":
        return  # shapes only (the cross-compile check): no values to validate
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
    if target.numel() and bool(bad.any()):
        value = int(target[bad][0])
        raise IndexError(
            f"Target {value} is out of bounds (classes 0..{n_classes - 1}, ignore_index {ignore_index})"
        )


def cross_entropy_reference(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, *, upcast: bool = True
) -> torch.Tensor:
    if upcast:
        return F.cross_entropy(upcast_ref(logits), target, ignore_index=ignore_index).to(logits.dtype)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


# (rows, vocab): ragged, non-power-of-two; vocab 1 (a single class) and one larger than a tile.
EXAMPLE_SHAPES: tuple[tuple[int, int], ...] = ((3, 1), (37, 33), (5, 130), (37, 1000), (4, 9000))


def examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for rows, vocab in EXAMPLE_SHAPES:
        logits = 3.0 * torch.randn(rows, vocab, generator=g)
        target = torch.randint(0, vocab, (rows,), generator=g)
        if rows > 3:
            target[torch.rand(rows, generator=g) < 0.25] = -100  # some ignored positions
            target[0] = 0 if vocab == 1 else target[0].clamp_min(0)  # keep at least one valid row
        out.append(
            Example(
                (logits.to(device=device, dtype=dtype), target.to(device)), label=f"logits[{rows}, {vocab}]"
            )
        )
    return out


def _flops(logits: torch.Tensor, *_: object, **__: object) -> float:
    return 4.0 * logits.numel()  # max, subtract, exp, sum per logit (forward only)


def _bytes(logits: torch.Tensor, target: torch.Tensor, *_: object, **__: object) -> float:
    # read logits twice and write dlogits when a gradient is wanted; count the forward alone here
    return float(logits.numel() * logits.element_size() + target.numel() * target.element_size())


# Softmax-like reduction. torch in fp32 is the reference itself (error 0), so the fp32 floor covers
# a few ulps of a loss of ~5. The fp16/bf16 floors are two ulps of the largest gradient entries
# (|dlogits| <= |dloss| / n_valid, ~0.5 here): dlogits are stored in the input dtype, as in Liger, so
# an upstream gradient other than 1 costs one extra rounding. A loss of ~5 could in principle be one
# of its own ulps off with torch exactly right, but a single value per call lands that close to a
# rounding boundary with probability ~1e-4.
TOLERANCES = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
    "bfloat16": Tolerance(atol=5e-2, rtol=5e-2, floor=8e-3),
    "float64": FLOAT64,
}

SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="cross_entropy",
        reference=cross_entropy_reference,
        implementation=cross_entropy,
        examples=examples,
        tolerances=TOLERANCES,
        flops=_flops,
        bytes=_bytes,
        backward=True,
        reduction=lambda logits, *_, **__: logits.shape[-1],
        description="Cross-entropy fused with an online log-softmax; dlogits computed in the forward.",
        module=__name__,
    ),
)
