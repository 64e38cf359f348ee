"""Gated linear units: swiglu(a, b) = silu(a) * b and geglu(a, b) = gelu_tanh(a) * b, with gradients.

`a` (the gate) and `b` (the up projection) have the same shape; the ops are elementwise, so any
leading dims work. The activation math is shared with `activations.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, empty_out, finish, next_pow2, upcast, upcast_ref
from kernelnotes.kernels.activations import gelu_tanh_fwd, gelu_tanh_grad, silu_fwd, silu_grad
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

SWIGLU, GEGLU = 0, 1

BLOCK = 8192 if INTERPRET else 1024


@triton.jit
def _gate(a, ACT: tl.constexpr):
    if ACT == 0:
        y = silu_fwd(a)
    else:
        y = gelu_tanh_fwd(a)
    return y


@triton.jit
def _gate_grad(a, ACT: tl.constexpr):
    if ACT == 0:
        g = silu_grad(a)
    else:
        g = gelu_tanh_grad(a)
    return g


@triton.jit
def _glu_fwd_kernel(A, B, Y, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = upcast(tl.load(A + offs, mask=mask, other=0.0))
    b = upcast(tl.load(B + offs, mask=mask, other=0.0))
    tl.store(Y + offs, _gate(a, ACT) * b, mask=mask)


@triton.jit
def _glu_bwd_kernel(A, B, DY, DA, DB, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    # Recompute act(a) instead of saving it: one extra exp beats a full-size tensor kept alive.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = upcast(tl.load(A + offs, mask=mask, other=0.0))
    b = upcast(tl.load(B + offs, mask=mask, other=0.0))
    dy = upcast(tl.load(DY + offs, mask=mask, other=0.0))
    tl.store(DA + offs, dy * b * _gate_grad(a, ACT), mask=mask)
    tl.store(DB + offs, dy * _gate(a, ACT), mask=mask)


def _block(n: int) -> int:
    return min(BLOCK, max(128, next_pow2(n)))


def _glu_fwd(a: torch.Tensor, b: torch.Tensor, act: int) -> torch.Tensor:
    y = empty_out(a.shape, a.dtype, a.device)
    n = a.numel()
    if n:
        block = _block(n)
        _glu_fwd_kernel[(triton.cdiv(n, block),)](a, b, y, n, ACT=act, BLOCK=block)
    return finish(y, a.dtype)


def _glu_bwd(
    a: torch.Tensor, b: torch.Tensor, dy: torch.Tensor, act: int
) -> tuple[torch.Tensor, torch.Tensor]:
    dy = dy.contiguous()
    da = empty_out(a.shape, a.dtype, a.device)
    db = empty_out(b.shape, b.dtype, b.device)
    n = a.numel()
    if n:
        block = _block(n)
        _glu_bwd_kernel[(triton.cdiv(n, block),)](a, b, dy, da, db, n, ACT=act, BLOCK=block)
    return finish(da, a.dtype), finish(db, b.dtype)


class GLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, act: int) -> torch.Tensor:
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"a and b must match: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
        a, b = a.contiguous(), b.contiguous()
        ctx.save_for_backward(a, b)
        ctx.act = act
        return _glu_fwd(a, b, act)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        a, b = ctx.saved_tensors
        da, db = _glu_bwd(a, b, dy, ctx.act)
        return da, db, None


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b in fp32, returned in the inputs' dtype (LLaMA's MLP gate)."""
    return GLUFunction.apply(a, b, SWIGLU)


def geglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(a) * b in fp32, returned in the inputs' dtype."""
    return GLUFunction.apply(a, b, GEGLU)


def swiglu_reference(a: torch.Tensor, b: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    if upcast:
        return (F.silu(upcast_ref(a)) * upcast_ref(b)).to(a.dtype)
    return F.silu(a) * b


def geglu_reference(a: torch.Tensor, b: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    if upcast:
        return (F.gelu(upcast_ref(a), approximate="tanh") * upcast_ref(b)).to(a.dtype)
    return F.gelu(a, approximate="tanh") * b


EXAMPLE_SHAPES: tuple[tuple[int, ...], ...] = ((3, 1), (37, 33), (2, 3, 130), (37, 1000))


def examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in EXAMPLE_SHAPES:
        a, b = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(2))
        out.append(Example((a, b), label=f"a,b{list(shape)}"))
    return out


def _bytes(a: torch.Tensor, b: torch.Tensor, **_: object) -> float:
    return 3.0 * a.numel() * a.element_size()  # read a and b, write y


# Elementwise; torch in the input dtype rounds twice (act, then product), so its error is a real
# yardstick. fp32: torch is the reference, so the floor is the allclose bound.
TOLERANCES = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1.6e-2),
    "float64": FLOAT64,
}

SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="swiglu",
        reference=swiglu_reference,
        implementation=swiglu,
        examples=examples,
        tolerances=TOLERANCES,
        flops=lambda a, b, **_: 6.0 * a.numel(),  # sigmoid (exp, add, div), two multiplies
        bytes=_bytes,
        backward=True,
        description="SwiGLU gate, silu(a) * b, fused forward and backward.",
        module=__name__,
    ),
    KernelSpec(
        name="geglu",
        reference=geglu_reference,
        implementation=geglu,
        examples=examples,
        tolerances=TOLERANCES,
        flops=lambda a, b, **_: 13.0 * a.numel(),  # tanh-approximate gelu (~12) and the product
        bytes=_bytes,
        backward=True,
        description="GeGLU gate, gelu_tanh(a) * b, fused forward and backward.",
        module=__name__,
    ),
)
