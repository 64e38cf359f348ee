"""Tiled, batched matrix multiplication with a fused bias + activation epilogue, and its backward.

`matmul(a, b, activation, bias)` computes `act(a @ b + bias)` for `a: (..., M, K)`, `b: (..., K, N)`
(batch dimensions broadcast as in `torch.matmul`; 2-D operands are a batch of one). Each program owns
one `BLOCK_M x BLOCK_N` tile of one batch entry, walks K in `BLOCK_K` steps accumulating in fp32 (fp64
for fp64 inputs), adds the bias and applies the activation to the accumulator and writes the tile
once. Programs are visited in groups of `GROUP_M` tile-rows so that neighbouring programs reuse the
same columns of `b` from L2. Offsets are int64: a batch of large matrices can exceed 2^31 elements.

The backward goes through the same kernel: with Z = a @ b + bias (kept when an activation needs it),
dZ = dY * act'(Z) (the activations module's elementwise kernel), dA = dZ @ B^T and dB = A^T @ dZ as
strided views (no transposed copies), dbias = dZ summed over rows; broadcast batch dimensions are
summed back to the operand's shape.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, acc_dtype, empty_out, finish, upcast_ref
from kernelnotes.kernels.activations import GELU_TANH, IDENTITY, RELU, SILU, _act_bwd, activate
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

ACTIVATIONS: tuple[str | None, ...] = (None, "relu", "gelu_tanh", "silu")
# The epilogue is activations.activate: one definition of each activation, NaN and inf included.
_ACT_CODE = {None: IDENTITY, "relu": RELU, "gelu_tanh": GELU_TANH, "silu": SILU}
# How the tile product is computed: tensor cores on the native 16-bit dtype, IEEE fp32, or fp64.
DOT_NATIVE, DOT_FP32, DOT_FP64 = 0, 1, 2


# --------------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------------


@triton.jit
def _matmul_kernel(
    A, B, C, Z, BIAS,
    M, N, K,
    stride_ab, stride_am, stride_ak,
    stride_bb, stride_bk, stride_bn,
    stride_cb, stride_cm, stride_cn,
    ACTIVATION: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STORE_Z: tl.constexpr,
    DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grouped ordering: GROUP_M consecutive tile-rows share each tile-column before moving on.
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_pid_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group

    # The tile's corner is an int64 scalar offset (a batch, or M * K, may pass 2^31 elements); the
    # offsets inside a tile stay int32 (BLOCK x stride < 2^31 for any row under 16M elements), which
    # keeps the 16-bit kernels from spilling the extra registers per-element int64 would take.
    row0 = pid_m.to(tl.int64) * BLOCK_M
    col0 = pid_n.to(tl.int64) * BLOCK_N
    rows_left = tl.minimum(M - row0, BLOCK_M).to(tl.int32)
    cols_left = tl.minimum(N - col0, BLOCK_N).to(tl.int32)
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = (
        (A + batch * stride_ab + row0 * stride_am) + rm[:, None] * stride_am + offs_k[None, :] * stride_ak
    )
    b_ptrs = (
        (B + batch * stride_bb + col0 * stride_bn) + offs_k[:, None] * stride_bk + rn[None, :] * stride_bn
    )

    acc_ty = tl.float64 if DOT == 2 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_ty)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=(rm[:, None] < rows_left) & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & (rn[None, :] < cols_left), other=0.0)
        if DOT == 0:
            # fp16/bf16 on a GPU: tensor cores on the native dtype, fp32 accumulation.
            acc = tl.dot(a, b, acc)
        else:
            # fp32 inputs, or the interpreter (whose bf16/fp16 dot is unreliable): exact products.
            acc = tl.dot(a.to(acc_ty), b.to(acc_ty), acc, input_precision="ieee")
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        acc += tl.load(BIAS + col0 + rn, mask=rn < cols_left, other=0.0).to(acc_ty)[None, :]
    corner = batch * stride_cb + row0 * stride_cm + col0 * stride_cn
    c_off = rm[:, None] * stride_cm + rn[None, :] * stride_cn
    c_mask = (rm[:, None] < rows_left) & (rn[None, :] < cols_left)
    if STORE_Z:
        tl.store((Z + corner) + c_off, acc.to(Z.dtype.element_ty), mask=c_mask)
    acc = activate(acc, ACTIVATION)
    tl.store((C + corner) + c_off, acc.to(C.dtype.element_ty), mask=c_mask)


# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------


def _block_sizes(
    M: int, N: int, K: int, dtype: torch.dtype, gpu: bool = not INTERPRET
) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages).

    Under the interpreter every program instance costs about a millisecond, so a few large tiles win.
    On a GPU a fixed, commonly good configuration is used (no autotuning: deterministic and cheap).
    """
    if not gpu:
        bm = min(128, max(16, triton.next_power_of_2(M)))
        bn = min(128, max(16, triton.next_power_of_2(N)))
        bk = min(128, max(16, triton.next_power_of_2(K)))
        return bm, bn, bk, 4, 1
    if dtype in (torch.float32, torch.float64):
        return 64, 64, 32, 8, 3  # FMA / DMMA dots: 4 warps spill with an activation epilogue
    return 128, 128, 32, 8, 3


def _dot_mode(dtype: torch.dtype) -> int:
    if dtype == torch.float64:
        return DOT_FP64
    return DOT_FP32 if (INTERPRET or dtype == torch.float32) else DOT_NATIVE


def _as_batch(t: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
    """`t` broadcast to `batch` and viewed as (B, rows, cols); copies only when no such view exists."""
    t = t.expand(*batch, *t.shape[-2:])
    return t.reshape(math.prod(batch), *t.shape[-2:])


def _launch(
    a3: torch.Tensor,
    b3: torch.Tensor,
    activation: str | None,
    bias: torch.Tensor | None,
    store_z: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """act(a3 @ b3 + bias) for (B, M, K) @ (B, K, N); returns (output, pre-activation or None)."""
    batch, M, K = a3.shape
    N = b3.shape[2]
    c = empty_out((batch, M, N), a3.dtype, a3.device)
    z = empty_out((batch, M, N), a3.dtype, a3.device) if store_z else None
    if batch == 0 or M == 0 or N == 0:
        return c, z
    bm, bn, bk, warps, stages = _block_sizes(M, N, K, a3.dtype)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn), batch)
    # Strides are passed through, so transposed views need no copy; K == 0 runs no loop step and
    # leaves act(bias) (or act(0)), as torch's empty sum.
    _matmul_kernel[grid](
        a3, b3, c, z if z is not None else c, bias if bias is not None else c,
        M, N, K,
        a3.stride(0), a3.stride(1), a3.stride(2),
        b3.stride(0), b3.stride(1), b3.stride(2),
        c.stride(0), c.stride(1), c.stride(2),
        ACTIVATION=_ACT_CODE[activation], HAS_BIAS=bias is not None, STORE_Z=store_z,
        DOT=_dot_mode(a3.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return c, z


def _validate(a: torch.Tensor, b: torch.Tensor, activation: str | None, bias: torch.Tensor | None) -> None:
    if activation not in _ACT_CODE:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul expects (..., M, K) @ (..., K, N), got {tuple(a.shape)} @ {tuple(b.shape)}")
    if a.dtype != b.dtype or (bias is not None and bias.dtype != a.dtype):
        raise ValueError(
            f"dtype mismatch: {a.dtype} vs {b.dtype}" + (f" vs bias {bias.dtype}" if bias is not None else "")
        )
    if not a.is_floating_point():
        raise TypeError(f"matmul expects floating-point operands, not {a.dtype}")
    if bias is not None and bias.shape != (b.shape[-1],):
        raise ValueError(f"bias must have shape ({b.shape[-1]},), got {tuple(bias.shape)}")


class MatmulFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, activation: str | None
    ) -> torch.Tensor:
        batch = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        a3, b3 = _as_batch(a, batch), _as_batch(b, batch)
        bias_c = bias.contiguous() if bias is not None else None
        needs_grad = any(ctx.needs_input_grad[:3])
        store_z = needs_grad and activation is not None
        c, z = _launch(a3, b3, activation, bias_c, store_z)
        ctx.activation, ctx.batch = activation, batch
        ctx.has_bias = bias is not None
        if needs_grad:
            ctx.save_for_backward(a, b, finish(z, a.dtype) if z is not None else None)
        return finish(c, a.dtype).view(*batch, a.shape[-2], b.shape[-1])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        a, b, z = ctx.saved_tensors
        batch = ctx.batch
        M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        dz = dy.reshape(math.prod(batch), M, N)
        if z is not None:
            dz = _act_bwd(z, dz.contiguous(), _ACT_CODE[ctx.activation]).view_as(dz)
        a3, b3 = _as_batch(a, batch), _as_batch(b, batch)
        da = db = dbias = None
        if ctx.needs_input_grad[0]:
            da3, _ = _launch(dz, b3.transpose(1, 2), None, None, False)
            da = _sum_to(finish(da3, a.dtype).view(*batch, M, K), a.shape)
        if ctx.needs_input_grad[1]:
            db3, _ = _launch(a3.transpose(1, 2), dz, None, None, False)
            db = _sum_to(finish(db3, a.dtype).view(*batch, K, N), b.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = dz.to(acc_dtype(dz.dtype)).sum((0, 1)).to(a.dtype)
        return da, db, dbias, None


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to an operand's shape (fp32 sums for 16-bit gradients)."""
    if grad.shape == shape:
        return grad
    return grad.to(acc_dtype(grad.dtype)).sum_to_size(shape).to(grad.dtype)


# --------------------------------------------------------------------------------------------------
# Public function and reference
# --------------------------------------------------------------------------------------------------


def matmul(
    a: torch.Tensor, b: torch.Tensor, activation: str | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`act(a @ b + bias)` for `a: (..., M, K)`, `b: (..., K, N)`, `bias: (N,)`, batch dims broadcast.

    fp32 accumulation (fp64 for fp64), bias and activation applied to the accumulator. `activation`
    is one of None, "relu", "gelu_tanh", "silu". Differentiable in a, b and bias.
    """
    _validate(a, b, activation, bias)
    return MatmulFunction.apply(a, b, bias, activation)


def _activation_reference(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return x
    if activation == "relu":
        return torch.relu(x)
    if activation == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    if activation == "silu":
        return torch.nn.functional.silu(x)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def matmul_reference(
    a: torch.Tensor,
    b: torch.Tensor,
    activation: str | None = None,
    bias: torch.Tensor | None = None,
    upcast: bool = True,
) -> torch.Tensor:
    """torch: fp32 product, bias and activation, cast to a's dtype (`upcast=False`: all in a's dtype)."""
    if upcast:
        z = upcast_ref(a) @ upcast_ref(b)
        if bias is not None:
            z = z + upcast_ref(bias)
        return _activation_reference(z, activation).to(a.dtype)
    z = a @ b
    return _activation_reference(z + bias if bias is not None else z, activation)


# --------------------------------------------------------------------------------------------------
# Examples, cost model, spec
# --------------------------------------------------------------------------------------------------


def matmul_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    """Ragged, non-power-of-two shapes; b is scaled by 1/sqrt(K) so outputs stay O(1)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    if device == "cpu":
        shapes = [(3, 33, 1), (37, 130, 33), (17, 1000, 65)]
    else:
        shapes = [(3, 33, 1), (37, 130, 33), (1000, 1030, 777), (2048, 2048, 2048)]
    out: list[Example] = []
    for i, (m, k, n) in enumerate(shapes):
        a = torch.randn(m, k, generator=g).to(device=device, dtype=dtype)
        b = (torch.randn(k, n, generator=g) / math.sqrt(k)).to(device=device, dtype=dtype)
        act = ACTIVATIONS[i % len(ACTIVATIONS)]
        out.append(Example(args=(a, b), kwargs={"activation": act}, label=f"{m}x{k} @ {k}x{n}, {act}"))
    # Transposed (non-contiguous) operand with the remaining activation.
    a = torch.randn(65, 37, generator=g).to(device=device, dtype=dtype).t()
    b = (torch.randn(65, 130, generator=g) / math.sqrt(65)).to(device=device, dtype=dtype)
    out.append(
        Example(args=(a, b), kwargs={"activation": "silu"}, label="transposed a, 37x65 @ 65x130, silu")
    )
    if device == "meta":
        # Shape-only (the cross-compile check): an output of more than 2^31 elements, whose offsets
        # overflow int32 -- the kernel's int64 offsets must compile for it.
        a = torch.empty(46_341, 32, device="meta", dtype=dtype)
        b = torch.empty(32, 46_341, device="meta", dtype=dtype)
        out.append(
            Example(args=(a, b), kwargs={"activation": "relu"}, label="46341x32 @ 32x46341 (> 2^31 outputs)")
        )
    # A batch against one shared matrix (broadcast), with a bias in the epilogue.
    a = torch.randn(3, 19, 40, generator=g).to(device=device, dtype=dtype)
    b = (torch.randn(40, 23, generator=g) / math.sqrt(40)).to(device=device, dtype=dtype)
    bias = (0.5 * torch.randn(23, generator=g)).to(device=device, dtype=dtype)
    out.append(
        Example(
            args=(a, b),
            kwargs={"activation": "gelu_tanh", "bias": bias},
            label="3x19x40 @ 40x23 + bias, gelu_tanh",
        )
    )
    return out


def matmul_flops(
    a: torch.Tensor, b: torch.Tensor, activation: str | None = None, bias: torch.Tensor | None = None
) -> float:
    batch = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


def matmul_bytes(
    a: torch.Tensor, b: torch.Tensor, activation: str | None = None, bias: torch.Tensor | None = None
) -> float:
    batch = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    out = batch * a.shape[-2] * b.shape[-1]
    extra = bias.numel() if bias is not None else 0
    return float((a.numel() + b.numel() + out + extra) * a.element_size())


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="matmul",
        reference=matmul_reference,
        implementation=matmul,
        examples=matmul_examples,
        tolerances={
            # fp32: torch-in-fp32 *is* the reference, so the floor is the whole bound (summation
            # order); testing.compare scales it with the output's magnitude and sqrt(K).
            "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4),
            # fp16/bf16: one rounding step of an O(1) output may differ (summation order decides ties).
            "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3),
            "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1.6e-2),
            "float64": FLOAT64,
        },
        flops=matmul_flops,
        bytes=matmul_bytes,
        backward=True,
        reduction=lambda a, *_, **__: a.shape[-1],
        description="Batched tiled matmul (fp32 accumulation), fused bias + relu/gelu_tanh/silu epilogue, backward.",
        module=__name__,
    ),
)
