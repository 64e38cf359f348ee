"""The tile sizes a GPU uses compute the right thing too, checked here under the interpreter.

Launchers pick small register-sized tiles on a GPU and few large ones under the interpreter, so the
CPU suite alone never exercises the GPU tilings (partial tiles, causal diagonal blocks, several
value/state blocks per program). Each tile function takes `gpu=`; these tests force `gpu=True`
and hold the op to its usual policy on CPU. (fp16/bf16 dots still run in fp32 here; their numerics
are the GPU tests' business.)
"""

from __future__ import annotations

import functools
from types import ModuleType

import pytest
import torch

from kernelnotes.kernels import flash_attention, linear_attention, matmul, selective_scan, varlen_attention
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import Example, KernelSpec

from .helpers import grads

# op -> (module, name of its tile function)
TILED: dict[str, tuple[ModuleType, str]] = {
    "flash_attention": (flash_attention, "_block_sizes"),
    "varlen_attention": (flash_attention, "_block_sizes"),
    "matmul": (matmul, "_block_sizes"),
    "linear_attention": (linear_attention, "_block_dv"),
    "selective_scan": (selective_scan, "_blocks"),
}
SPECS = {
    s.name: s
    for m in (flash_attention, varlen_attention, matmul, linear_attention, selective_scan)
    for s in m.SPECS
}


@pytest.fixture
def gpu_tiles(monkeypatch: pytest.MonkeyPatch):
    def force(op: str) -> None:
        module, name = TILED[op]
        monkeypatch.setattr(module, name, functools.partial(getattr(module, name), gpu=True))

    return force


def _check(spec: KernelSpec, example: Example, dtype: str) -> None:
    tol = spec.tolerances[dtype]
    out = spec.implementation(*example.args, **example.kwargs)
    ref = spec.reference(*example.args, **example.kwargs)
    lowp = spec.reference(*example.args, upcast=False, **example.kwargs)
    assert_matches(out, ref, lowp, tol, what=f"{spec.name} {example.label} output")
    if spec.backward:
        got = grads(spec.implementation, example.args, dict(example.kwargs), seed=0)
        want = grads(functools.partial(spec.reference, upcast=True), example.args, dict(example.kwargs), 0)
        low = grads(functools.partial(spec.reference, upcast=False), example.args, dict(example.kwargs), 0)
        for i, (g, w, lo) in enumerate(zip(got, want, low)):
            assert_matches(g, w, lo, tol, grad=True, what=f"{spec.name} {example.label} grad {i}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # fp32 and 16-bit tiles differ
@pytest.mark.parametrize("op", sorted(TILED))
def test_gpu_tiling_matches_the_reference(op: str, dtype: str, gpu_tiles) -> None:
    gpu_tiles(op)
    spec = SPECS[op]
    for example in spec.examples("cpu", getattr(torch, dtype), 0):
        _check(spec, example, dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_tiling_of_head_dim_256(dtype: str, gpu_tiles) -> None:
    gpu_tiles("flash_attention")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, s, 1, 256, generator=g).to(getattr(torch, dtype)) for s in (33, 65, 65))
    _check(SPECS["flash_attention"], Example((q, k, v), {"causal": True}, label="d256"), dtype)


def test_the_tile_functions_really_differ_on_a_gpu() -> None:
    # Otherwise the tests above would re-test the interpreter's tiling.
    assert flash_attention._block_sizes(128, 130, 130, torch.bfloat16, False, gpu=True) != (
        flash_attention._block_sizes(128, 130, 130, torch.bfloat16, False, gpu=False)
    )
    assert matmul._block_sizes(256, 256, 256, torch.float32, gpu=True) != matmul._block_sizes(
        256, 256, 256, torch.float32, gpu=False
    )
    assert linear_attention._block_dv(96, torch.bfloat16, gpu=True) < linear_attention._block_dv(
        96, torch.bfloat16, gpu=False
    )
    assert selective_scan._blocks(1000, 33, gpu=True) != selective_scan._blocks(1000, 33, gpu=False)
