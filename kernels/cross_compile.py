"""Compile every registered kernel for a GPU architecture on a machine without one, and inspect it.

Triton's compiler needs no GPU; only loading and launching a kernel does. So this module runs each
kernel's registered examples with the interpreter off, a stand-in driver that reports the target
(sm_90 for an H100 by default), and every launch turned into a compile-only warmup. The inputs live on
torch's "meta" device: they have shapes and dtypes but no storage, so the examples' GPU-sized cases
(`device != "cpu"`) cost nothing, and since outputs are never computed the backward of every op that
has one is compiled too. What CPU-only CI then learns about the real GPU path:

- it compiles: code that only the GPU path takes (tensor-core `tl.dot`, GPU tile sizes) is checked;
- `shared`: shared memory per program, against the architecture's limit (a launch would fail above it);
- `registers` and `spill` bytes, from `cuobjdump --dump-resource-usage` on the cubin: spills to local
  memory are the usual reason a Triton kernel is several times slower than it should be;
- `mma`: whether the PTX uses Hopper's `wgmma`, the older `mma.sync`, or no tensor-core instruction,
  and whether any of it is TF32 (fp32 inputs must use IEEE fp32, see the correctness policy).

Run it as a module; it must start in its own process because `kernelnotes.kernels` chooses the
interpreter at import time:

    python -m kernelnotes.kernels.cross_compile [--arch 90] [--ops a,b] [--json FILE]

`cross_compile()` does that from another process and returns the records; `problems()` turns them
into the findings CI fails on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Shared memory one program may use (the opt-in maximum per block), by compute capability.
_MODULE = "kernelnotes.kernels.cross_compile"  # __name__ is "__main__" under -m

# Shared memory one program may use (the opt-in maximum per block), by compute capability.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


@dataclasses.dataclass(frozen=True)
class Compiled:
    """One distinct compiled kernel of an op and dtype, and the first example that needed it."""

    op: str
    dtype: str
    example: str
    stage: str  # "fwd" or "bwd"
    kernel: str
    num_warps: int
    num_stages: int
    shared: int
    registers: int
    spill: int  # bytes of stack per thread (spilled registers); 0 is the goal
    mma: str  # "wgmma", "mma" or "none"
    tf32: bool


@dataclasses.dataclass(frozen=True)
class Failure:
    """An example whose kernels did not compile for the target."""

    op: str
    dtype: str
    example: str
    error: str


# ---- the compile-only run (inside a process with TRITON_INTERPRET=0) ----------------------------------


class _TargetDriver:
    """Answers the few questions JITFunction.run asks of a driver; nothing here ever launches."""

    def __init__(self, arch: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self.target

    def is_active(self) -> bool:
        return True


@functools.cache  # a kernel shared by two dtypes is read once
def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of the single function in a cubin, read by the cuobjdump Triton ships."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if not match:
        raise RuntimeError(f"unexpected cuobjdump output: {text[:200]}")
    return int(match[1]), int(match[2])


def _mma_kind(ptx: str) -> str:
    if "wgmma." in ptx:
        return "wgmma"
    return "mma" if "mma.sync" in ptx else "none"


@contextlib.contextmanager
def _compile_only(arch: int, sink: list[tuple[str, Any]]) -> Iterator[None]:
    """Within the block every Triton launch compiles for `arch` and appends (name, kernel) to sink."""
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    original = JITFunction.run

    def run(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        kernel = original(self, *args, grid=grid, warmup=True, **kwargs)
        sink.append((self.fn.__name__, kernel))
        return kernel

    previous = driver._active  # no public getter that avoids probing for a real driver
    driver.set_active(_TargetDriver(arch))
    JITFunction.run = run  # type: ignore[method-assign]
    try:
        yield
    finally:
        JITFunction.run = original  # type: ignore[method-assign]
        driver._active = previous


def _as_meta(value: Any, grad: bool) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.to("meta")
        return t.requires_grad_() if grad and t.is_floating_point() else t
    return value


def compile_specs(arch: int, ops: Sequence[str] | None = None) -> tuple[list[Compiled], list[Failure]]:
    """Compile the examples of the registered kernels (all, or `ops`) for `arch`; see the module doc."""
    if _interpreting():
        raise RuntimeError("cross-compiling needs a process with TRITON_INTERPRET=0; use cross_compile()")
    import torch

    from kernelnotes.kernels._common import to_dtype
    from kernelnotes.plugins.manager import get_plugin_manager
    from kernelnotes.registry import load_kernels

    specs = load_kernels(get_plugin_manager())
    unknown = sorted(set(ops or ()) - set(specs))
    if unknown:
        raise ValueError(f"unknown kernels {unknown}; `kn kernels` lists them")
    compiled: dict[tuple[str, str, str], Compiled] = {}  # by (op, dtype, kernel hash)
    failures: list[Failure] = []
    launched: list[tuple[str, Any]] = []
    with _compile_only(arch, launched):
        for spec in specs.values():
            if ops and spec.name not in ops:
                continue
            for dtype_name in spec.dtypes:
                # "meta" is not "cpu", so the examples include their GPU-sized cases.
                for example in spec.examples("meta", to_dtype(dtype_name), 0):
                    launched.clear()
                    n_forward = None
                    try:
                        args = [_as_meta(a, spec.backward) for a in example.args]
                        kwargs = {k: _as_meta(v, spec.backward) for k, v in example.kwargs.items()}
                        out = spec.implementation(*args, **kwargs)
                        n_forward = len(launched)
                        if spec.backward:
                            first = out[0] if isinstance(out, tuple) else out
                            first.backward(torch.empty_like(first))
                    except Exception as exc:  # one broken example must not hide the others
                        stage = "fwd" if n_forward is None else "bwd"
                        error = f"{stage}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                        failures.append(Failure(spec.name, dtype_name, example.label, error))
                        continue
                    for i, (name, kernel) in enumerate(launched):
                        key = (spec.name, dtype_name, kernel.hash)
                        if key not in compiled:
                            compiled[key] = _inspect(
                                kernel, name, spec.name, dtype_name, example.label, i < n_forward
                            )
    return list(compiled.values()), failures


def _inspect(kernel: Any, name: str, op: str, dtype: str, example: str, forward: bool) -> Compiled:
    registers, spill = _resource_usage(kernel.asm["cubin"])
    ptx = kernel.asm["ptx"]
    return Compiled(
        op=op,
        dtype=dtype,
        example=example,
        stage="fwd" if forward else "bwd",
        kernel=name,
        num_warps=kernel.metadata.num_warps,
        num_stages=kernel.metadata.num_stages,
        shared=kernel.metadata.shared,
        registers=registers,
        spill=spill,
        mma=_mma_kind(ptx),
        tf32="tf32" in ptx,
    )


def _interpreting() -> bool:
    from kernelnotes.kernels._common import INTERPRET

    return INTERPRET


# ---- what CI fails on --------------------------------------------------------------------------------


def problems(compiled: Sequence[Compiled], failures: Sequence[Failure], arch: int) -> list[str]:
    """Findings that would make the kernel fail or run far below its potential on the target."""
    found = [f"{f.op} [{f.dtype}, {f.example}]: does not compile for sm_{arch}: {f.error}" for f in failures]
    limit = SHARED_LIMIT.get(arch)
    for c in compiled:
        where = f"{c.op} [{c.dtype}, {c.example}] {c.kernel}"
        if limit is not None and c.shared > limit:
            found.append(f"{where}: needs {c.shared} B of shared memory, sm_{arch} has {limit}")
        if c.spill and c.dtype in ("float16", "bfloat16"):  # fp32/fp64 spills: in the table only
            found.append(f"{where}: spills {c.spill} B per thread ({c.registers} registers)")
        if c.tf32:
            found.append(f"{where}: uses TF32; fp32 dots must be pinned to input_precision='ieee'")
    return found


# ---- running it from another process -----------------------------------------------------------------


def cross_compile(
    arch: int = 90, ops: Sequence[str] | None = None, timeout: float = 1800
) -> tuple[list[Compiled], list[Failure]]:
    """Run `compile_specs` in a fresh interpreter (kernels must be decorated with the interpreter off)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compiled.json"
        cmd = [sys.executable, "-m", _MODULE, "--arch", str(arch), "--json", str(out), "--quiet"]
        if ops:
            cmd += ["--ops", ",".join(ops)]
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if not out.exists():
            raise RuntimeError(f"cross-compile process failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        data = json.loads(out.read_text())
    return [Compiled(**c) for c in data["compiled"]], [Failure(**f) for f in data["failures"]]


def _print_table(compiled: Sequence[Compiled], arch: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Triton kernels compiled for sm_{arch} (worst case per op, dtype and kernel)")
    for column in ("op", "dtype", "kernel", "variants", "warps", "shared KiB", "registers", "spill B", "mma"):
        table.add_column(column, justify="left" if column in ("op", "dtype", "kernel", "mma") else "right")
    groups: dict[tuple[str, str, str], list[Compiled]] = {}
    for c in compiled:
        groups.setdefault((c.op, c.dtype, c.kernel), []).append(c)
    for (op, dtype, kernel), group in groups.items():
        mma = sorted({c.mma + ("+tf32" if c.tf32 else "") for c in group})
        table.add_row(
            op,
            dtype,
            kernel,
            str(len(group)),
            "/".join(str(w) for w in sorted({c.num_warps for c in group})),
            f"{max(c.shared for c in group) / 1024:.1f}",
            str(max(c.registers for c in group)),
            str(max(c.spill for c in group)),
            ",".join(mma),
        )
    Console(width=max(Console().width, 150)).print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability as an integer (90 = H100)")
    parser.add_argument("--ops", default="", help="comma-separated kernel names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the records to this file")
    parser.add_argument("--quiet", action="store_true", help="print only the problems")
    args = parser.parse_args(argv)
    if _interpreting():  # the package chose the interpreter on import: start over without it
        argv = sys.argv[1:] if argv is None else list(argv)
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        return subprocess.run([sys.executable, "-m", _MODULE, *argv], env=env).returncode
    ops = [o for o in args.ops.split(",") if o]
    compiled, failures = compile_specs(args.arch, ops)
    if args.json:
        payload = {
            "arch": args.arch,
            "compiled": [dataclasses.asdict(c) for c in compiled],
            "failures": [dataclasses.asdict(f) for f in failures],
        }
        args.json.write_text(json.dumps(payload, indent=1))
    if not args.quiet:
        _print_table(compiled, args.arch)
    found = problems(compiled, failures, args.arch)
    for line in found:
        print(f"problem: {line}")
    print(
        f"{len(compiled)} kernels compiled for sm_{args.arch}, {len(failures)} examples failed, {len(found)} problems"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
