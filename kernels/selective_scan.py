"""Selective scan: the diagonal linear recurrence at the heart of state-space models (Mamba-style).

Layout (batch B, channels D, time L, state N):

- `a`, `b`: (B, D, L, N) — per-step decay and input of every (channel, state) pair,
- `c`: (B, L, N) — the read-out vector, shared by all channels of a batch element,
- `y`: (B, D, L) with `h_t = a_t * h_{t-1} + b_t` (h_0 = 0) and `y_t = <c_t, h_t>` over N.

The kernel runs the time loop sequentially inside each program and parallelises over B x D: one
program owns a (BLOCK_D, N) tile of hidden state that stays in registers for the whole sequence, so
the state is never written to memory. The recurrence is evaluated in fp32 whatever the input dtype.

The backward is the adjoint scan run in reverse time (dh_t = dy_t c_t + a_{t+1} dh_{t+1}). When a
gradient is needed the forward also stores the fp32 states h (one fp32 copy of `a`), which the
backward reads instead of re-running the scan; Mamba's kernels trade that memory for recomputation
in chunks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import (
    INTERPRET,
    acc_dtype,
    empty_out,
    finish,
    next_pow2,
    require_dtype,
    upcast,
    upcast_ref,
)
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

# ----------------------------------------------------------------------------------------------
# Triton kernels


@triton.jit
def _selective_scan_fwd_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    y_ptr,
    h_ptr,
    D,
    L,
    N,
    stride_ab_b,
    stride_ab_d,
    stride_ab_l,
    stride_c_b,
    stride_c_l,
    stride_y_b,
    stride_y_d,
    STORE_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < D
    mask_n = offs_n < N
    mask = mask_d[:, None] & mask_n[None, :]

    # The state dimension is contiguous (stride 1, enforced by the launcher) so each row of the tile
    # is one coalesced load. h (saved for the backward) shares a's layout.
    ab_off = pid_b * stride_ab_b + offs_d[:, None] * stride_ab_d + offs_n[None, :]
    c_off = pid_b * stride_c_b + offs_n
    y_off = pid_b * stride_y_b + offs_d * stride_y_d

    acc_ty = tl.float64 if a_ptr.dtype.element_ty == tl.float64 else tl.float32
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=acc_ty)
    for t in range(0, L):
        # Upcast straight after loading: the state must accumulate in fp32 (and the interpreter
        # cannot do bf16 arithmetic at all).
        a = upcast(tl.load(a_ptr + ab_off + t * stride_ab_l, mask=mask, other=0.0))
        b = upcast(tl.load(b_ptr + ab_off + t * stride_ab_l, mask=mask, other=0.0))
        c = upcast(tl.load(c_ptr + c_off + t * stride_c_l, mask=mask_n, other=0.0))
        h = a * h + b
        y = tl.sum(h * c[None, :], axis=1)
        tl.store(y_ptr + y_off + t, y.to(y_ptr.dtype.element_ty), mask=mask_d)
        if STORE_H:
            tl.store(h_ptr + ab_off + t * stride_ab_l, h, mask=mask)


@triton.jit
def _selective_scan_bwd_kernel(
    a_ptr,
    c_ptr,
    h_ptr,
    dy_ptr,
    da_ptr,
    db_ptr,
    dc_part_ptr,
    D,
    L,
    N,
    stride_ab_b,
    stride_ab_d,
    stride_ab_l,
    stride_c_b,
    stride_c_l,
    stride_y_b,
    stride_y_d,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Reverse-time scan of the adjoint: dh_t = dy_t * c_t + a_{t+1} * dh_{t+1}, then
    # da_t = dh_t * h_{t-1}, db_t = dh_t and dc_t = sum_d dy_t[d] * h_t[d] (a partial sum per block).
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < D
    mask_n = offs_n < N
    mask = mask_d[:, None] & mask_n[None, :]
    ab_off = pid_b * stride_ab_b + offs_d[:, None] * stride_ab_d + offs_n[None, :]
    c_off = pid_b * stride_c_b + offs_n
    y_off = pid_b * stride_y_b + offs_d * stride_y_d
    # dc partials: (B, num_d_blocks, L, N) contiguous fp32.
    part_off = (pid_b * tl.num_programs(1) + pid_d) * L * N + offs_n

    acc_ty = tl.float64 if a_ptr.dtype.element_ty == tl.float64 else tl.float32
    dh = tl.zeros((BLOCK_D, BLOCK_N), dtype=acc_ty)
    a_next = tl.zeros((BLOCK_D, BLOCK_N), dtype=acc_ty)  # a_{t+1}; nothing flows back from t = L
    h_t = tl.load(h_ptr + ab_off + (L - 1) * stride_ab_l, mask=mask, other=0.0)
    for i in range(0, L):
        t = L - 1 - i
        dy = upcast(tl.load(dy_ptr + y_off + t, mask=mask_d, other=0.0))
        c = upcast(tl.load(c_ptr + c_off + t * stride_c_l, mask=mask_n, other=0.0))
        dh = dy[:, None] * c[None, :] + a_next * dh
        # h_{t-1}, with h_{-1} = 0 (the clamped index keeps the load inside the buffer); it becomes
        # the next iteration's h_t, so every state is loaded once.
        h_prev = tl.load(h_ptr + ab_off + tl.maximum(t - 1, 0) * stride_ab_l, mask=mask, other=0.0)
        h_prev = tl.where(t > 0, h_prev, 0.0)
        tl.store(da_ptr + ab_off + t * stride_ab_l, (dh * h_prev).to(da_ptr.dtype.element_ty), mask=mask)
        tl.store(db_ptr + ab_off + t * stride_ab_l, dh.to(db_ptr.dtype.element_ty), mask=mask)
        tl.store(dc_part_ptr + part_off + t * N, tl.sum(dy[:, None] * h_t, axis=0), mask=mask_n)
        a_next = upcast(tl.load(a_ptr + ab_off + t * stride_ab_l, mask=mask, other=0.0))
        h_t = h_prev


# ----------------------------------------------------------------------------------------------
# Launchers


def _check_shapes(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(
            f"a and b must both be (batch, dim, seq, state); got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    bsz, _, seq, state = a.shape
    if c.shape != (bsz, seq, state):
        raise ValueError(f"c must be (batch, seq, state) = {(bsz, seq, state)}; got {tuple(c.shape)}")
    if not (a.dtype == b.dtype == c.dtype):
        raise ValueError(f"a, b, c must share a dtype; got {a.dtype}, {b.dtype}, {c.dtype}")


def _blocks(dim: int, state: int, gpu: bool = not INTERPRET) -> tuple[int, int]:
    block_n = next_pow2(state)
    # On a GPU keep the register tile at <= 1024 fp32 values per program (the backward holds several
    # such tiles; 4096 spilled ~1 KB per thread, 2048 still a few bytes for sm_90, see cross_compile); under the interpreter a
    # bigger tile just means fewer (expensive) program instances.
    block_d = max(1, min(next_pow2(dim), (1024 if gpu else 4096) // block_n, 64))
    return block_d, block_n


def _selective_scan_fwd(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, store_h: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y, and with `store_h` the fp32 hidden states (B, D, L, N) that the backward reads."""
    _check_shapes(a, b, c)
    # The kernel indexes a and b with one set of strides and needs the state dimension contiguous.
    a, b, c = a.contiguous(), b.contiguous(), c.contiguous()
    bsz, dim, seq, state = a.shape
    y = empty_out((bsz, dim, seq), a.dtype, a.device)
    h = torch.empty(a.shape, dtype=acc_dtype(a.dtype), device=a.device) if store_h else None
    if y.numel() == 0:
        return finish(y, a.dtype), h
    block_d, block_n = _blocks(dim, state)
    grid = (bsz, triton.cdiv(dim, block_d))
    _selective_scan_fwd_kernel[grid](
        a,
        b,
        c,
        y,
        h if h is not None else y,  # unused pointer when STORE_H is off
        dim,
        seq,
        state,
        a.stride(0),
        a.stride(1),
        a.stride(2),
        c.stride(0),
        c.stride(1),
        y.stride(0),
        y.stride(1),
        STORE_H=store_h,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
    )
    return finish(y, a.dtype), h


def _selective_scan_bwd(
    a: torch.Tensor, c: torch.Tensor, h: torch.Tensor, dy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    bsz, dim, seq, state = a.shape
    dy = dy.contiguous()
    da = empty_out(a.shape, a.dtype, a.device)
    db = empty_out(a.shape, a.dtype, a.device)
    block_d, block_n = _blocks(dim, state)
    n_blocks = triton.cdiv(dim, block_d)
    # dc reduces over D, which spans programs: each block writes its partial sum (no fp32 atomics,
    # so the result is deterministic) and torch adds the few partials.
    dc_part = torch.empty((bsz, n_blocks, seq, state), dtype=acc_dtype(a.dtype), device=a.device)
    if a.numel():
        _selective_scan_bwd_kernel[(bsz, n_blocks)](
            a,
            c,
            h,
            dy,
            da,
            db,
            dc_part,
            dim,
            seq,
            state,
            a.stride(0),
            a.stride(1),
            a.stride(2),
            c.stride(0),
            c.stride(1),
            dy.stride(0),
            dy.stride(1),
            BLOCK_D=block_d,
            BLOCK_N=block_n,
        )
    else:
        dc_part.zero_()
    return finish(da, a.dtype), finish(db, a.dtype), dc_part.sum(1).to(c.dtype)


class _SelectiveScanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y, h = _selective_scan_fwd(a, b, c, store_h=True)
        # Storing h costs one fp32 copy of `a`; it spares the backward a second forward scan.
        ctx.save_for_backward(a.contiguous(), c.contiguous(), h)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        a, c, h = ctx.saved_tensors
        return _selective_scan_bwd(a, c, h, dy)


# ----------------------------------------------------------------------------------------------
# Public function and torch reference


def selective_scan(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """y[b, d, t] = <c[b, t], h[b, d, t]> with h_t = a_t * h_{t-1} + b_t, h_0 = 0; differentiable in a, b, c."""
    require_dtype(
        "selective_scan", a, b, c, allowed=(torch.float32, torch.float16, torch.bfloat16, torch.float64)
    )
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or c.requires_grad):
        return _SelectiveScanFunction.apply(a, b, c)
    return _selective_scan_fwd(a, b, c)[0]


def selective_scan_reference(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, upcast: bool = True
) -> torch.Tensor:
    """The sequential loop in torch: in fp32 (cast back) with `upcast`, else in the input dtype."""
    _check_shapes(a, b, c)
    dtype = a.dtype
    if upcast:
        a, b, c = upcast_ref(a), upcast_ref(b), upcast_ref(c)
    bsz, dim, seq, state = a.shape
    h = torch.zeros(bsz, dim, state, dtype=a.dtype, device=a.device)
    ys = []
    for t in range(seq):
        h = a[:, :, t] * h + b[:, :, t]
        ys.append((h * c[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else a.new_zeros(bsz, dim, 0)
    return y.to(dtype)


# ----------------------------------------------------------------------------------------------
# Example inputs


def make_inputs(
    bsz: int,
    dim: int,
    seq: int,
    state: int,
    *,
    device: str,
    dtype: torch.dtype,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Realistic SSM inputs: decays a in (0.5, 1) like exp(dt * A) with negative A, small inputs b."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.rand(bsz, dim, seq, state, generator=gen) * 0.5 + 0.5
    b = torch.randn(bsz, dim, seq, state, generator=gen) * 0.5
    c = torch.randn(bsz, seq, state, generator=gen)
    return tuple(t.to(device=device, dtype=dtype) for t in (a, b, c))  # type: ignore[return-value]


def selective_scan_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    # Non-power-of-two channels, time steps and state sizes; tiny on CPU (the time loop is serial).
    shapes = [(1, 3, 17, 5), (2, 37, 9, 16), (1, 5, 1, 1)]
    if device != "cpu":
        shapes += [(2, 130, 257, 16), (1, 1000, 64, 33)]
    return [
        Example(args=make_inputs(*s, device=device, dtype=dtype, seed=seed + i), label=f"B,D,L,N={s}")
        for i, s in enumerate(shapes)
    ]


def _flops(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
    # Per (b, d, t, n): one multiply-add for the state, one multiply-add for the read-out.
    return 4.0 * a.numel()


def _bytes(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
    out = a.shape[0] * a.shape[1] * a.shape[2]
    return float((a.numel() + b.numel() + c.numel() + out) * a.element_size())


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="selective_scan",
        reference=selective_scan_reference,
        implementation=selective_scan,
        examples=selective_scan_examples,
        tolerances={
            # Reductions (over the state for y, over channels for dc): the reduction-op fp32 bound. In
            # fp32 the reference and torch-in-fp32 are the same computation, so the floor alone bounds
            # the summation-order difference (dc sums up to ~1000 channels on a GPU).
            "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4),
            "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
            "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1e-2),
            "float64": FLOAT64,
        },
        flops=_flops,
        bytes=_bytes,
        backward=True,
        description="Diagonal linear recurrence h_t = a_t*h_{t-1} + b_t read out as y_t = <c_t, h_t> (SSM scan).",
        module=__name__,
    ),
)
