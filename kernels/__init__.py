"""Reference kernels, imported as `kernelnotes.kernels` (never as a top-level `kernels`).

One module per op, each with the same layers: `@triton.jit` kernels -> launchers ->
`torch.autograd.Function` (where the op has a backward) -> the torch reference -> `SPECS`, a tuple of
frozen `KernelSpec`s that the built-in plugin `kernelnotes.plugins.kernel_library` registers.

Without a CUDA device the kernels run on CPU tensors under Triton's interpreter: importing this
package sets TRITON_INTERPRET=1 in that case (before any kernel is decorated), so notes, tests and
the snippet worker behave the same on a laptop and in CPU-only CI.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernelnotes.kernelspec import KernelSpec

OP_MODULES: tuple[str, ...] = (
    "softmax",
    "activations",
    "gated",
    "layer_norm",
    "rms_norm",
    "matmul",
    "flash_attention",
    "varlen_attention",
    "cross_entropy",
    "linear_attention",
    "selective_scan",
    "upsample",
    "ddim",
    "fused_linear_cross_entropy",
    "moe",
)


def _select_interpreter() -> None:
    if "TRITON_INTERPRET" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_select_interpreter()


def all_specs() -> list[KernelSpec]:
    """Import every op module that exists and collect its SPECS."""
    specs: list[KernelSpec] = []
    for name in OP_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # op not written yet
            raise
        specs.extend(module.SPECS)
    return specs
