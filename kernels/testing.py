"""The correctness policy every kernel is held to, shared by the tests and the snippet checker.

FlashAttention's rule: the kernel's max error against the fp32 reference is at most
`tol.factor` x the max error of torch doing the same computation in the input dtype, plus `tol.floor`;
and a fixed allclose sanity bound (`tol.atol`, `tol.rtol`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernelnotes.kernelspec import Tolerance


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_rel: float
    torch_lowp_abs: float
    bound: float
    ok: bool
    message: str


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


def compare(
    out: torch.Tensor,
    ref: torch.Tensor,
    ref_lowp: torch.Tensor | None,
    tol: Tolerance,
    *,
    factor: float | None = None,
    what: str = "output",
) -> Comparison:
    """Compare `out` with the fp32 reference `ref` under the policy. `ref_lowp` is torch in the input dtype."""
    if out.shape != ref.shape:
        return Comparison(
            float("inf"),
            float("inf"),
            0.0,
            0.0,
            False,
            f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}",
        )
    o, r = out.float(), ref.float()
    if not torch.isfinite(o).all() and torch.isfinite(r).all():
        return Comparison(float("inf"), float("inf"), 0.0, 0.0, False, f"{what}: non-finite values")
    err = max_abs(o, r)
    rel = ((o - r).abs() / r.abs().clamp_min(1e-6)).max().item() if o.numel() else 0.0
    base = max_abs(ref_lowp, r) if ref_lowp is not None else 0.0
    bound = (factor if factor is not None else tol.factor) * base + tol.floor
    close = torch.allclose(o, r, atol=tol.atol, rtol=tol.rtol)
    ok = (err <= bound or ref_lowp is None) and close
    message = (
        f"{what}: max abs err {err:.3e} (torch in input dtype {base:.3e}, bound {bound:.3e}), "
        f"allclose(atol={tol.atol:g}, rtol={tol.rtol:g}) {'ok' if close else 'FAILED'}"
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
) -> None:
    """Assert the policy; gradients get a 3x factor instead of 2x."""
    factor = max(tol.factor, 3.0) if grad else None
    result = compare(out, ref, ref_lowp, tol, factor=factor, what=what)
    assert result.ok, result.message
