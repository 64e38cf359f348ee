"""The correctness policy every kernel is held to, shared by the tests and the snippet checker.

FlashAttention's rule: the kernel's max error against the fp32 reference is at most `tol.factor` x
the max error of torch doing the same computation in the input dtype, plus a floor; and a fixed
allclose sanity bound (`tol.atol`, `tol.rtol`). Non-finite values must sit where the reference has
them: NaN where it has NaN, the same infinity where it has an infinity; errors are measured on the
finite rest.

**Why the floor scales.** Where torch in the input dtype is exactly right (always for fp32, whose
"low-precision" run *is* the reference, and often for fp16/bf16 on CPU, which rounds the same fp32
math once), the 2x term is 0 and the floor is the whole bound. A floor fixed in absolute terms then
fails correct kernels on large outputs: one fp32 ulp of an output of 5,000 is 4.9e-4, and a matmul
over K = 20,001 terms that sums in another order than torch is some ulps off at that magnitude. Two
facts set the scale of an honest kernel's error:

- rounding error is relative: it grows with the magnitude of the output, so the floor is multiplied
  by `max(1, max |reference|)` (finite entries; below 1 the stated floor already is absolute);
- accumulated over n terms in another order, rounding errors add up like a random walk, ~sqrt(n)
  roundings (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., sec. 4.2 -- the
  worst case is n, the typical case sqrt(n)), so the floor is multiplied by `sqrt(n / 1024)` when
  the reduction is longer than the 1024 terms the registered floors were measured on.

So `bound = factor * err_torch_lowp + floor * max(1, max|ref|) * sqrt(max(1, n / 1024))`. The
allclose sanity bound's `atol` scales by the same factor: an entry near zero that is the difference
of large terms (a gradient summed over rows, a matmul entry with cancellation) carries rounding
error of the size of those terms, which `rtol` -- relative to the entry itself -- does not see; torch
in bf16 misses the unscaled bound there by as much as the kernel does. Everything else is unchanged: a kernel whose error is not of rounding size -- a dropped term, a wrong constant, a
missed row -- still fails, because such errors are of the order of the output itself (the conformance
suite keeps a deliberately broken kernel per op to prove it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kernelnotes.kernelspec import Tolerance

REDUCTION_BASE = 1024  # reduction length the registered floors were measured at

# float64, shared by every op that computes it. The kernel itself is held to float64 precision by the
# floor: torch in float64 *is* the reference, so the 2x term is 0 and the bound is 1e-12 (a few
# thousand fp64 ulps at magnitude 1, scaled as above) -- a kernel that computes in fp32 (error ~1e-7)
# fails it. The allclose sanity bound is fp32's: it is the bound a note's function is checked
# against (the checker passes no torch-in-input-dtype result), and a note that computes float64
# inputs in fp32, as teaching code often does, is not wrong for it.
FLOAT64 = Tolerance(atol=1e-5, rtol=1e-5, floor=1e-12)


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_rel: float
    torch_lowp_abs: float
    bound: float
    ok: bool
    message: str


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max |a - b| over the entries where both are finite (0 for none)."""
    a, b = _widen(a), _widen(b)
    finite = torch.isfinite(a) & torch.isfinite(b)
    return (a - b)[finite].abs().max().item() if finite.any() else 0.0


def _widen(t: torch.Tensor) -> torch.Tensor:
    return t.double() if t.dtype == torch.float64 else t.float()


def nonfinite_mismatch(out: torch.Tensor, ref: torch.Tensor) -> int:
    """How many entries are NaN in one and not the other, or infinite and unequal."""
    o, r = _widen(out), _widen(ref)
    nan = torch.isnan(o) != torch.isnan(r)
    inf = (torch.isinf(o) | torch.isinf(r)) & ~torch.isnan(o) & ~torch.isnan(r) & (o != r)
    return int((nan | inf).sum().item())


def floor_scale(ref: torch.Tensor, reduction: int = 1) -> float:
    """max(1, max |ref|) * sqrt(max(1, reduction / 1024)): how far the floors grow (see the module doc)."""
    r = _widen(ref)
    finite = r[torch.isfinite(r)]
    magnitude = finite.abs().max().item() if finite.numel() else 0.0
    return max(1.0, magnitude) * math.sqrt(max(1.0, reduction / REDUCTION_BASE))


def scaled_floor(tol: Tolerance, ref: torch.Tensor, reduction: int = 1) -> float:
    """`tol.floor` scaled by the output's magnitude and the reduction length (see the module doc)."""
    return tol.floor * floor_scale(ref, reduction)


def _mismatch(message: str) -> Comparison:
    """A comparison that failed before any error could be measured (shape, NaN/inf placement)."""
    return Comparison(float("inf"), float("inf"), 0.0, 0.0, False, message)


def compare(
    out: torch.Tensor,
    ref: torch.Tensor,
    ref_lowp: torch.Tensor | None,
    tol: Tolerance,
    *,
    factor: float | None = None,
    what: str = "output",
    reduction: int = 1,
) -> Comparison:
    """Compare `out` with the fp32 reference `ref` under the policy. `ref_lowp` is torch in the input
    dtype; `reduction` is the number of terms each output accumulates (1: elementwise)."""
    if out.shape != ref.shape:
        return _mismatch(f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    o, r = _widen(out), _widen(ref)
    bad = nonfinite_mismatch(o, r)
    if bad:
        return _mismatch(f"{what}: {bad} NaN/inf entries where the reference has none or another value")
    finite = torch.isfinite(r)
    o, r = o[finite], r[finite]
    err = max_abs(o, r)
    rel = ((o - r).abs() / r.abs().clamp_min(1e-6)).max().item() if o.numel() else 0.0
    base = max_abs(ref_lowp[finite], r) if ref_lowp is not None else 0.0
    scale = floor_scale(r, reduction)
    bound = (factor if factor is not None else tol.factor) * base + tol.floor * scale
    atol = tol.atol * scale
    close = torch.allclose(o, r, atol=atol, rtol=tol.rtol)
    ok = (err <= bound or ref_lowp is None) and close
    message = (
        f"{what}: max abs err {err:.3e} (torch in input dtype {base:.3e}, bound {bound:.3e}), "
        f"allclose(atol={atol:.3g}, rtol={tol.rtol:g}) {'ok' if close else 'FAILED'}"
    )
    return Comparison(err, rel, base, bound, ok, message)


def assert_matches(
    out: torch.Tensor,
    ref: torch.Tensor,
    ref_lowp: torch.Tensor | None,
    tol: Tolerance,
    *,
    grad: bool = False,
    what: str = "output",
    reduction: int = 1,
) -> None:
    """Assert the policy; gradients get a 3x factor instead of 2x."""
    factor = max(tol.factor, 3.0) if grad else None
    result = compare(out, ref, ref_lowp, tol, factor=factor, what=what, reduction=reduction)
    assert result.ok, result.message
