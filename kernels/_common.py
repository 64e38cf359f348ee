"""Small helpers shared by the op modules: device/interpreter facts and output buffers."""

from __future__ import annotations

import os

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Triton's CPU interpreter (3.9) rounds fp32->bf16 stores toward zero and computes garbage in bf16
# arithmetic. Kernels therefore load every input, then `.to(tl.float32)` before any arithmetic, and
# under the interpreter a bf16 result is stored into an fp32 buffer that torch rounds to nearest.
# On a GPU the kernel stores bf16 directly.


def store_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel should write for a result of `dtype` (fp32 for bf16 under the interpreter)."""
    return torch.float32 if (INTERPRET and dtype == torch.bfloat16) else dtype


def empty_out(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Allocate an output buffer in `store_dtype(dtype)`."""
    return torch.empty(shape, dtype=store_dtype(dtype), device=device)


def finish(buf: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a buffer made by `empty_out` back to the dtype the caller asked for."""
    return buf if buf.dtype == dtype else buf.to(dtype)


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(n)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def to_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)
