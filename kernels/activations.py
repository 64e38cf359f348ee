"""Elementwise activations with their gradients: relu, gelu (erf), gelu_tanh, silu and sigmoid.

One forward and one backward kernel serve every activation: the activation is a compile-time
constant, so each specialisation is branch-free. The math lives in small `@triton.jit` helpers that
`gated.py` reuses for swiglu/geglu and `matmul.py` for its fused epilogue. Math is fp32 for 16-bit
and fp32 inputs and fp64 for fp64 inputs; NaN propagates and +-inf give torch's values (relu keeps
NaN, and its gradient at NaN is 1 as torch's).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, empty_out, finish, next_pow2, upcast, upcast_ref
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

RELU, GELU, GELU_TANH, SILU, SIGMOID, IDENTITY = 0, 1, 2, 3, 4, 5

# Under the interpreter each program costs ~1 ms whatever its size, so use few large blocks there.
BLOCK = 8192 if INTERPRET else 1024


# ----------------------------------------------------------------------------------------------------
# Math helpers (compute dtype in, compute dtype out)
# ----------------------------------------------------------------------------------------------------


@triton.jit
def sigmoid_fwd(x):
    # exp(-|x|) <= 1 cannot overflow, unlike exp(-x) for very negative x.
    z = tl.exp(-tl.abs(x))
    return tl.where(x >= 0.0, 1.0 / (1.0 + z), z / (1.0 + z))


@triton.jit
def tanh(x):
    # libdevice.tanh is missing under the interpreter. exp(-2|x|) <= 1 never overflows, and the
    # sign is restored afterwards.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def gelu_erf_fwd(x):
    return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))


@triton.jit
def gelu_erf_grad(x):
    # d/dx x*Phi(x) = Phi(x) + x*phi(x)
    cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
    pdf = 0.3989422804014327 * tl.exp(-0.5 * x * x)
    return cdf + x * pdf


@triton.jit
def gelu_tanh_fwd(x):
    # 0.5 x (1 + tanh(u)) = x * sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3):
    # one exp and one division, few registers in matmul's epilogue. No clamp: exp(-2u) = inf gives
    # x / inf = -0 at -1e38 and NaN at -inf, as torch.
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    return x / (1.0 + tl.exp(-2.0 * u))


@triton.jit
def gelu_tanh_grad(x):
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    t = tanh(inner)
    d_inner = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner


@triton.jit
def silu_fwd(x):
    # x / (1 + exp(-x)): exp(-x) = inf gives -0 at -1e38 and NaN at -inf, as torch -- no clamp.
    return x / (1.0 + tl.exp(-x))


@triton.jit
def silu_grad(x):
    s = sigmoid_fwd(x)
    return s * (1.0 + x * (1.0 - s))


@triton.jit
def sigmoid_grad(x):
    s = sigmoid_fwd(x)
    return s * (1.0 - s)


@triton.jit
def activate(x, ACT: tl.constexpr):
    if ACT == 0:
        y = tl.where(x <= 0.0, 0.0, x)  # not tl.maximum, which drops NaN
    elif ACT == 1:
        y = gelu_erf_fwd(x)
    elif ACT == 2:
        y = gelu_tanh_fwd(x)
    elif ACT == 3:
        y = silu_fwd(x)
    elif ACT == 4:
        y = sigmoid_fwd(x)
    else:
        y = x
    return y


@triton.jit
def activate_grad(x, ACT: tl.constexpr):
    if ACT == 0:
        g = tl.where(x <= 0.0, 0.0, 1.0)  # torch's convention: relu'(0) = 0, relu'(NaN) = 1
    elif ACT == 1:
        g = gelu_erf_grad(x)
    elif ACT == 2:
        g = gelu_tanh_grad(x)
    elif ACT == 3:
        g = silu_grad(x)
    elif ACT == 4:
        g = sigmoid_grad(x)
    else:
        g = tl.where(x != x, 1.0, 1.0)  # identity (only the matmul epilogue uses it)
    return g


# ----------------------------------------------------------------------------------------------------
# Kernels and launchers
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _act_fwd_kernel(X, Y, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = upcast(tl.load(X + offs, mask=mask, other=0.0))
    tl.store(Y + offs, activate(x, ACT), mask=mask)


@triton.jit
def _act_bwd_kernel(X, DY, DX, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = upcast(tl.load(X + offs, mask=mask, other=0.0))
    dy = upcast(tl.load(DY + offs, mask=mask, other=0.0))
    tl.store(DX + offs, dy * activate_grad(x, ACT), mask=mask)


def _block(n: int) -> int:
    """Elements per program: BLOCK, shrunk for tiny tensors so padding lanes do not dominate."""
    return min(BLOCK, max(128, next_pow2(n)))


def _act_fwd(x: torch.Tensor, act: int) -> torch.Tensor:
    xc = x.contiguous()
    y = empty_out(xc.shape, x.dtype, x.device)
    n = xc.numel()
    if n:
        block = _block(n)
        _act_fwd_kernel[(triton.cdiv(n, block),)](xc, y, n, ACT=act, BLOCK=block)
    return finish(y, x.dtype)


def _act_bwd(x: torch.Tensor, dy: torch.Tensor, act: int) -> torch.Tensor:
    dyc = dy.contiguous()
    dx = empty_out(x.shape, x.dtype, x.device)
    n = x.numel()
    if n:
        block = _block(n)
        _act_bwd_kernel[(triton.cdiv(n, block),)](x, dyc, dx, n, ACT=act, BLOCK=block)
    return finish(dx, x.dtype)


class ActivationFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, act: int) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x)  # recomputing act'(x) from x is cheaper than storing it
        ctx.act = act
        return _act_fwd(x, act)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (x,) = ctx.saved_tensors
        return _act_bwd(x, dy, ctx.act), None


# ----------------------------------------------------------------------------------------------------
# Public functions and references
# ----------------------------------------------------------------------------------------------------


def _apply(x: torch.Tensor, act: int, op: str) -> torch.Tensor:
    if not x.is_floating_point():
        raise TypeError(f"{op} expects a floating-point tensor, not {x.dtype}")
    return ActivationFunction.apply(x, act)


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0), elementwise; NaN stays NaN."""
    return _apply(x, RELU, "relu")


def gelu(x: torch.Tensor, approximate: Literal["none", "tanh"] = "none") -> torch.Tensor:
    """GELU, exact (erf) by default or the tanh approximation, computed in fp32."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', not {approximate!r}")
    return _apply(x, GELU if approximate == "none" else GELU_TANH, "gelu")


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (GPT-2 style)."""
    return _apply(x, GELU_TANH, "gelu_tanh")


def silu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x), computed in fp32."""
    return _apply(x, SILU, "silu")


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x)) elementwise, through exp(-|x|) so that no exponent overflows."""
    return _apply(x, SIGMOID, "sigmoid")


def _upcast(fn, x: torch.Tensor, upcast: bool) -> torch.Tensor:
    return fn(upcast_ref(x)).to(x.dtype) if upcast else fn(x)


def relu_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return _upcast(F.relu, x, upcast)


def gelu_reference(x: torch.Tensor, approximate: str = "none", *, upcast: bool = True) -> torch.Tensor:
    return _upcast(lambda t: F.gelu(t, approximate=approximate), x, upcast)


def gelu_tanh_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return _upcast(lambda t: F.gelu(t, approximate="tanh"), x, upcast)


def silu_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return _upcast(F.silu, x, upcast)


def sigmoid_reference(x: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
    return _upcast(torch.sigmoid, x, upcast)


# ----------------------------------------------------------------------------------------------------
# Examples, cost model, specs
# ----------------------------------------------------------------------------------------------------

EXAMPLE_SHAPES: tuple[tuple[int, ...], ...] = ((3, 1), (37, 33), (2, 3, 130), (37, 1000))


def examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in EXAMPLE_SHAPES:
        x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
        out.append(Example((x,), label=f"x{list(shape)}"))
    return out


def _bytes(x: torch.Tensor, **_: object) -> float:
    return 2.0 * x.numel() * x.element_size()  # read x, write y


def _flops_per_element(k: float):
    return lambda x, **_: k * x.numel()


# Elementwise ops. torch in fp32 *is* the reference, so the fp32 floor is the allclose bound; for
# fp16/bf16 torch on CPU rounds the same fp32 math once (its error is often exactly 0), so the floor
# is about one ulp of the output dtype for |y| < 4 (the examples are standard normal).
TOLERANCES = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5, floor=1e-5),
    "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1.6e-2),
    "float64": FLOAT64,
}

# (name, function, reference, flops per element counting exp/erf as one, description)
_TABLE = (
    ("relu", relu, relu_reference, 1.0, "ReLU, max(x, 0)."),
    ("gelu", gelu, gelu_reference, 8.0, "GELU with the exact erf form, 0.5*x*(1+erf(x/sqrt(2)))."),
    ("gelu_tanh", gelu_tanh, gelu_tanh_reference, 12.0, "GELU with the tanh approximation."),
    ("silu", silu, silu_reference, 5.0, "SiLU / swish, x*sigmoid(x)."),
    ("sigmoid", sigmoid, sigmoid_reference, 4.0, "Sigmoid, 1/(1+exp(-x)) through exp(-|x|)."),
)

SPECS: tuple[KernelSpec, ...] = tuple(
    KernelSpec(
        name=name,
        reference=ref,
        implementation=fn,
        examples=examples,
        tolerances=TOLERANCES,
        flops=_flops_per_element(flops),
        bytes=_bytes,
        backward=True,
        description=description,
        module=__name__,
    )
    for name, fn, ref, flops, description in _TABLE
)
