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


def empty_out(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
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


# ---- row-wise kernels (softmax, norms): one row of the last dimension per kernel row ----------------

MAX_FUSED_SIZE = 65536  # longest row held in one block; beyond this registers spill (Liger's bound)
TILE_ELEMENTS = 4096  # elements one program holds: several short rows share a program


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """A 2-D (rows, cols) view with unit column stride, copying only when no such view exists."""
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() > 0 else x.reshape(1, 1)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def row_blocks(n_rows: int, n_cols: int, op: str) -> tuple[int, int]:
    """(rows per program, padded row length) for a row-wise kernel that holds whole rows."""
    block_n = next_pow2(n_cols)
    if block_n > MAX_FUSED_SIZE:
        raise ValueError(f"{op} supports rows of at most {MAX_FUSED_SIZE} elements, got {n_cols}")
    return max(1, min(next_pow2(n_rows), TILE_ELEMENTS // block_n, 16)), block_n


def num_warps(elements: int) -> int:
    return 4 if elements <= 2048 else (8 if elements <= 8192 else 16)


def reduction_programs(x: torch.Tensor) -> int:
    """How many programs share the rows of a backward that writes one partial sum per program."""
    if INTERPRET or x.device.type != "cuda":
        return 4  # each interpreted program costs ~1 ms; a few long ones are cheapest
    return torch.cuda.get_device_properties(x.device).multi_processor_count
