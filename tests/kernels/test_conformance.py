"""One conformance suite over every kernel the plugin registry knows (kernelnotes.kernels.conformance).

A kernel registered by any plugin -- built-in or third-party -- is covered without a test of its own:
examples and gradients against the reference in every dtype, gradcheck in float64 (or TypeError),
NaN/inf and empty dimensions as torch, and a broken variant that must fail the check.
"""

from __future__ import annotations

import pytest

from kernelnotes.kernels import conformance
from kernelnotes.plugins.manager import get_plugin_manager
from kernelnotes.registry import load_kernels

from .helpers import DEVICE

SPECS = sorted(load_kernels(get_plugin_manager()).values(), key=lambda s: s.name)
CASES = conformance.cases(SPECS)


def test_every_registered_kernel_is_covered() -> None:
    covered = {spec.name for _, spec, _ in CASES}
    assert covered == {spec.name for spec in SPECS}
    for spec in SPECS:
        checks = {check for check, s, _ in CASES if s is spec}
        assert {"examples", "nonfinite", "empty", "broken"} <= checks, spec.name
        if spec.backward or "float64" not in spec.dtypes:
            assert "gradcheck" in checks, spec.name


@pytest.mark.parametrize(
    ("check", "spec", "dtype"),
    [pytest.param(c, s, d, id=f"{s.name}-{c}-{d}") for c, s, d in CASES],
)
def test_conformance(check: str, spec, dtype: str) -> None:
    conformance.run_check(check, spec, dtype, DEVICE)
