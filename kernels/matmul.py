"""Tiled matrix multiplication with an optional fused activation epilogue.

`matmul(a, b, activation)` computes `act(a @ b)` for `a: (M, K)`, `b: (K, N)`: each program owns one
`BLOCK_M x BLOCK_N` tile of the output, walks K in `BLOCK_K` steps accumulating in fp32, applies the
activation to the fp32 accumulator and writes the tile once. Programs are visited in groups of
`GROUP_M` tile-rows so that neighbouring programs reuse the same columns of `b` from L2.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, empty_out, finish
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

ACTIVATIONS: tuple[str | None, ...] = (None, "relu", "gelu_tanh", "silu")
_ACT_CODE = {None: 0, "relu": 1, "gelu_tanh": 2, "silu": 3}


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _apply_activation(x, ACTIVATION: tl.constexpr):
    """Activation on an fp32 tile. tanh is written through exp: the interpreter has no libdevice.tanh.

    Exponents are clamped at 88 (exp(88) < fp32 max): beyond that x / (1 + exp(.)) is 0 to fp32
    precision anyway, and the clamp avoids inf intermediates (and the interpreter's overflow warnings).
    """
    if ACTIVATION == 1:
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == 2:
        # gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        x = x / (1.0 + tl.exp(tl.minimum(-2.0 * u, 88.0)))
    elif ACTIVATION == 3:
        x = x / (1.0 + tl.exp(tl.minimum(-x, 88.0)))
    return x


@triton.jit
def _matmul_kernel(
    A,
    B,
    C,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    ACTIVATION: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped ordering: GROUP_M consecutive tile-rows share each tile-column before moving on.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_pid_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = A + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = B + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & (offs_n[None, :] < N), other=0.0)
        if DOT_FP32:
            # fp32 inputs, or the interpreter (whose bf16/fp16 dot is unreliable): exact fp32 products.
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            # fp16/bf16 on a GPU: tensor cores on the native dtype, fp32 accumulation.
            acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    acc = _apply_activation(acc, ACTIVATION)
    c_ptrs = C + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


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
    if dtype == torch.float32:
        return 64, 64, 32, 8, 3  # fp32 FMA dots: 4 warps spill with an activation epilogue
    return 128, 128, 32, 8, 3


def matmul_forward(a: torch.Tensor, b: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """Launch the tiled matmul kernel; output has a's dtype."""
    if activation not in _ACT_CODE:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul expects (M, K) @ (K, N), got {tuple(a.shape)} @ {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"dtype mismatch: {a.dtype} vs {b.dtype}")
    M, K = a.shape
    N = b.shape[1]
    c = empty_out((M, N), a.dtype, a.device)
    if M == 0 or N == 0:
        return finish(c, a.dtype)
    if K == 0:
        # An empty sum is zero; the activation of zero is zero for all supported activations.
        return finish(c.zero_(), a.dtype)
    bm, bn, bk, warps, stages = _block_sizes(M, N, K, a.dtype)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    # Strides are passed through, so transposed views need no copy.
    _matmul_kernel[grid](
        a,
        b,
        c,
        M,
        N,
        K,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        c.stride(0),
        c.stride(1),
        ACTIVATION=_ACT_CODE[activation],
        DOT_FP32=INTERPRET or a.dtype == torch.float32,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_M=8,
        num_warps=warps,
        num_stages=stages,
    )
    return finish(c, a.dtype)


# --------------------------------------------------------------------------------------------------
# Public function and reference
# --------------------------------------------------------------------------------------------------


def matmul(a: torch.Tensor, b: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """`act(a @ b)` for `a: (M, K)`, `b: (K, N)`, fp32 accumulation, activation applied in fp32.

    `activation` is one of None, "relu", "gelu_tanh", "silu". Forward only (no autograd support).
    """
    return matmul_forward(a, b, activation)


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
    a: torch.Tensor, b: torch.Tensor, activation: str | None = None, upcast: bool = True
) -> torch.Tensor:
    """torch: fp32 product and activation, cast to a's dtype (`upcast=False`: all in a's dtype)."""
    if upcast:
        return _activation_reference(a.float() @ b.float(), activation).to(a.dtype)
    return _activation_reference(a @ b, activation)


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
    return out


def matmul_flops(a: torch.Tensor, b: torch.Tensor, activation: str | None = None) -> float:
    return 2.0 * a.shape[0] * a.shape[1] * b.shape[1]


def matmul_bytes(a: torch.Tensor, b: torch.Tensor, activation: str | None = None) -> float:
    M, K = a.shape
    N = b.shape[1]
    return float((M * K + K * N + M * N) * a.element_size())


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="matmul",
        reference=matmul_reference,
        implementation=matmul,
        examples=matmul_examples,
        tolerances={
            # fp32: torch-in-fp32 *is* the reference, so the floor is the whole bound (summation order).
            "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4),
            # fp16/bf16: one rounding step of an O(1) output may differ (summation order decides ties).
            "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3),
            "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1.6e-2),
        },
        flops=matmul_flops,
        bytes=matmul_bytes,
        backward=False,
        description="Tiled matmul (fp32 accumulation) with a fused relu/gelu_tanh/silu epilogue.",
        module=__name__,
    ),
)
