"""The one timing method for check tables: what a "ms" column on a page means.

- On CUDA: one warm-up call (Triton's JIT compilation and autotuning happen there, never in a
  timing), then `triton.testing.do_bench`'s median, which flushes the L2 cache between runs and
  synchronises the device: the method benchmarks/kernels.py uses too.
- On CPU: the median wall time of `repeats` calls (the first is the warm-up when `repeats` > 1).
  A Triton kernel on CPU runs under Triton's interpreter, whose time is not the kernel's: callers
  do not time it there (`times_kernels(device)`), and pages say so instead of showing a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def times_kernels(device: str) -> bool:
    """Whether a Triton kernel's time on `device` says anything about the kernel (not on CPU)."""
    return device == "cuda"


def timed(fn: Callable[[], Any], device: str, repeats: int = 1) -> tuple[Any, float]:
    """`fn()`'s value (from its first call) and its median time in milliseconds."""
    if device == "cuda":
        import torch
        from triton.testing import do_bench

        value = fn()  # warm-up: compilation and autotuning stay out of the measurement
        torch.cuda.synchronize()
        return value, float(do_bench(fn, warmup=10, rep=max(25, 10 * repeats), return_mode="median"))
    times: list[float] = []
    value = None
    for i in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
        if i == 0:
            value = result
    if len(times) > 1:
        times = times[1:]  # the first call warmed caches up
    return value, sorted(times)[len(times) // 2]
