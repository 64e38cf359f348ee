"""What the kernel tests share: the device, the dtype/seed grid, the GPU mark, a gradient helper."""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SEEDS = range(5)
# GPU-only tests run wherever CUDA is present and are reported as skipped elsewhere
gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def grads(fn, args: tuple, kwargs: dict, seed: int) -> tuple[torch.Tensor, ...]:
    """Gradients of `fn(*args, **kwargs)` w.r.t. its floating-point tensor arguments, for a fixed
    random upstream gradient (the same for every implementation compared)."""
    leaves = [
        a.detach().clone().requires_grad_(True)
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    ]
    out = fn(*leaves, **kwargs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1000 + seed)).to(out)
    wrt = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    return torch.autograd.grad(out, wrt, g)
