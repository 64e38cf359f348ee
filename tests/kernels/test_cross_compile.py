"""Every kernel compiles for the H100 (sm_90) here, without a GPU, and its GPU build is sound.

`kernelnotes.kernels.cross_compile` compiles the GPU code path (tile sizes, tensor-core dots) that the
interpreter never takes; these tests fail CI when that path does not compile, needs more shared
memory than an H100 has, spills registers in a 16-bit kernel, or slips into TF32.
"""

from __future__ import annotations

import re

import pytest

from kernelnotes.kernels import all_specs
from kernelnotes.kernels.cross_compile import Compiled, Failure, _mma_kind, cross_compile, problems

ARCH = 90
SPECS = {spec.name: spec for spec in all_specs()}
GRADIENT_IN_FORWARD = {"cross_entropy"}  # Liger-style: dlogits is written by the forward kernel


@pytest.mark.parametrize("op", sorted(SPECS))
def test_compiles_for_sm90_without_problems(op: str) -> None:
    compiled, failures = cross_compile(ARCH, [op])

    assert not failures, failures
    # Every dtype the kernel claims was compiled, forward and (where it has one) backward.
    assert {c.dtype for c in compiled} == set(SPECS[op].dtypes)
    if SPECS[op].backward and op not in GRADIENT_IN_FORWARD:
        assert {c.stage for c in compiled} == {"fwd", "bwd"}
    assert problems(compiled, failures, ARCH) == []


@pytest.mark.parametrize("op", ["matmul", "flash_attention", "varlen_attention", "linear_attention"])
def test_16_bit_dots_use_hopper_tensor_cores(op: str) -> None:
    compiled, _ = cross_compile(ARCH, [op])
    # Kernels without a dot: attention's row-sum preprocess, matmul's elementwise activation backward.
    no_dot = ("preprocess", "_act_bwd_kernel")
    dots = [
        c for c in compiled if c.dtype in ("float16", "bfloat16") and not any(n in c.kernel for n in no_dot)
    ]
    # Head dim 256 is allowed mma.sync: its wgmma tiles do not fit the registers.
    main = [c for c in dots if not re.search(r"\bd256\b", c.example)]
    assert main and {c.mma for c in main} == {"wgmma"}, [(c.kernel, c.example, c.mma) for c in main]
    fp32 = [c for c in compiled if c.dtype == "float32"]
    assert fp32 and not any(c.tf32 for c in fp32)


def _record(**changes: object) -> Compiled:
    base = dict(
        op="op",
        dtype="bfloat16",
        example="x",
        stage="fwd",
        kernel="_k",
        num_warps=4,
        num_stages=2,
        shared=1024,
        registers=64,
        spill=0,
        mma="wgmma",
        tf32=False,
    )
    base.update(changes)
    return Compiled(**base)  # type: ignore[arg-type]


def test_problems_names_each_kind_of_finding() -> None:
    assert problems([_record()], [], ARCH) == []
    found = problems(
        [
            _record(shared=230 * 1024),
            _record(spill=48, registers=255),
            _record(dtype="float32", tf32=True),
            _record(dtype="float32", spill=64),  # fp32 spills are reported in the table, not failed
            _record(dtype="float64", spill=312),  # so are fp64 ones (the gradcheck path, not the fast one)
        ],
        [Failure("op", "float16", "x", "fwd: CompilationError: boom")],
        ARCH,
    )
    assert len(found) == 4
    assert "does not compile for sm_90" in found[0]
    assert "235520 B of shared memory, sm_90 has 232448" in found[1]
    assert "spills 48 B per thread (255 registers)" in found[2]
    assert "TF32" in found[3]


def test_mma_kind_reads_the_ptx() -> None:
    assert _mma_kind("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16") == "wgmma"
    assert _mma_kind("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") == "mma"
    assert _mma_kind("fma.rn.f32") == "none"
