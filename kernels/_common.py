"""Small helpers shared by the op modules: device/interpreter facts, compute dtypes, output buffers."""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Triton's CPU interpreter (3.9) rounds fp32->bf16 stores toward zero and computes garbage in bf16
# arithmetic. Kernels therefore load every input, then `.to(tl.float32)` before any arithmetic, and
# under the interpreter a bf16 result is stored into an fp32 buffer that torch rounds to nearest.
# On a GPU the kernel stores bf16 directly.


# ---- compute dtype: fp32 for 16-bit and fp32 inputs, fp64 for fp64 inputs (never a silent downcast) --

LOWP = (torch.float16, torch.bfloat16)


@triton.jit
def upcast(x):
    """The compute dtype of a loaded value: fp64 stays fp64, everything else becomes fp32."""
    if x.dtype == tl.float64:
        y = x
    else:
        y = x.to(tl.float32)
    return y


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The torch dtype of statistics (row max, mean, rstd, lse) kept for an input of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast_ref(x: torch.Tensor) -> torch.Tensor:
    """A reference's fp32 copy of a 16-bit tensor; fp32 and fp64 tensors are computed as they are."""
    return x.float() if x.dtype in LOWP else x


def require_dtype(op: str, *tensors: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
    """TypeError naming the op when an input's dtype is not one the kernel computes in."""
    for t in tensors:
        if t.dtype not in allowed:
            names = ", ".join(dtype_name(d) for d in allowed)
            raise TypeError(f"{op} supports {names}, not {dtype_name(t.dtype)}")


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
    """A 2-D (rows, cols) view with unit column stride, copying only when no such view exists.

    The row count is spelled out (not -1) so an empty last dimension, (3, 0), stays (3, 0).
    """
    if x.dim() == 0:
        return x.reshape(1, 1)
    x2 = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def row_blocks(
    n_rows: int, n_cols: int, op: str, *, block_n: int | None = None, max_cols: int = MAX_FUSED_SIZE
) -> tuple[int, int]:
    """(rows per program, columns per tile) of a row-wise kernel: the one row-blocking rule.

    Without `block_n` the kernel holds whole rows, padded to a power of two and at most `max_cols`
    (a clear ValueError beyond: the op's cap, listed in its KernelSpec). With `block_n` it walks rows
    in tiles of that width. Several short rows share a program so that lanes are not left idle.
    """
    if block_n is None:
        block_n = next_pow2(max(n_cols, 1))
        if block_n > max_cols:
            raise ValueError(f"{op} supports rows of at most {max_cols} elements, got {n_cols}")
    block_m = max(1, min(next_pow2(max(n_rows, 1)), TILE_ELEMENTS // block_n, 16))
    return block_m, block_n


def num_warps(elements: int) -> int:
    return 4 if elements <= 2048 else (8 if elements <= 8192 else 16)


def reduction_programs(x: torch.Tensor) -> int:
    """How many programs share the rows of a backward that writes one partial sum per program."""
    if INTERPRET or x.device.type != "cuda":
        return 4  # each interpreted program costs ~1 ms; a few long ones are cheapest
    return torch.cuda.get_device_properties(x.device).multi_processor_count
