"""The frozen description of a reference kernel that plugins register and the checker uses.

Deliberately free of torch imports: the CLI lists and searches notes without paying torch's import.
Dtypes are named by strings ("float32", "float16", "bfloat16", "float64"). A kernel that lists float64
computes in float64 (so `torch.autograd.gradcheck` applies); one that does not raises TypeError for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICES = ("cpu", "cuda")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Example:
    """One input case for a kernel: positional and keyword arguments plus a readable label."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class Tolerance:
    """Bounds for comparing a kernel with its fp32 reference.

    `atol`/`rtol` is the fixed allclose sanity bound. `factor` is FlashAttention's rule: the kernel's
    max error against the fp32 reference may be at most `factor` x the error of torch doing the same
    computation in the input dtype, plus `floor` -- a floor stated for outputs of magnitude <= 1 and
    reductions of <= 1024 terms, which `kernelnotes.kernels.testing.compare` scales up beyond those.
    """

    atol: float
    rtol: float
    factor: float = 2.0
    floor: float = 1e-6


@dataclass(frozen=True)
class KernelSpec:
    """A reference kernel: the torch reference, the Triton implementation and how to test them.

    - `reference(*args, upcast=True, **kwargs)` computes in fp32 and casts back to the input dtype;
      with `upcast=False` it computes in the input dtype (the yardstick of the tolerance rule).
    - `implementation(*args, **kwargs)` is the Triton-backed function with the same signature.
    - `examples(device, dtype, seed)` returns the registered example inputs (ragged shapes).
    - `flops(*args, **kwargs)` / `bytes(*args, **kwargs)` count work and traffic for benchmarks.
    - `reduction(*args, **kwargs)`: how many terms each output accumulates (K of a matmul, the row
      length of a softmax); the tolerance floor grows with it. None: elementwise (1).
    - `caps`: documented limits of the implementation, e.g. {"row width": 65536}; beyond them the
      implementation raises a clear ValueError. Shown by `kn kernels`.
    """

    name: str
    reference: Callable[..., Any]
    implementation: Callable[..., Any]
    examples: Callable[[str, Any, int], Sequence[Example]]
    tolerances: Mapping[str, Tolerance]
    dtypes: tuple[str, ...] = DTYPES
    devices: tuple[str, ...] = DEVICES
    flops: Callable[..., float] | None = None
    bytes: Callable[..., float] | None = None
    backward: bool = False
    description: str = ""
    module: str = ""
    reduction: Callable[..., int] | None = None
    caps: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"kernel name {self.name!r} must be lowercase snake_case")
        for what, values, allowed in (("dtype", self.dtypes, DTYPES), ("device", self.devices, DEVICES)):
            unknown = [v for v in values if v not in allowed]
            if unknown or not values:
                raise ValueError(f"kernel {self.name!r}: unknown {what}s {unknown}; use {allowed}")
        missing = [d for d in self.dtypes if d not in self.tolerances]
        if missing:
            raise ValueError(f"kernel {self.name!r}: no tolerance for dtypes {missing}")
        for fn_name in ("reference", "implementation", "examples"):
            if not callable(getattr(self, fn_name)):
                raise ValueError(f"kernel {self.name!r}: {fn_name} must be callable")
