"""Softmax and logsumexp kernels against torch, under the project's correctness policy."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from kernelnotes.kernels import softmax as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, DTYPES, SEEDS, gpu

device = DEVICE
SPECS = {spec.name: spec for spec in mod.SPECS}


def _leaves(args: tuple) -> list:
    return [
        a.detach().clone().requires_grad_(True)
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    ]


def _grads(fn, args: tuple, kwargs: dict, seed: int) -> tuple[torch.Tensor, ...]:
    leaves = _leaves(args)
    out = fn(*leaves, **kwargs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1000 + seed)).to(out)
    wrt = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    return torch.autograd.grad(out, wrt, g)


def test_specs_validate() -> None:
    assert [s.name for s in mod.SPECS] == ["softmax", "log_softmax", "logsumexp"]
    for spec in mod.SPECS:
        assert isinstance(spec, KernelSpec)
        assert spec.module == "kernelnotes.kernels.softmax"
        assert spec.backward and spec.description
        assert set(spec.tolerances) == {"float32", "float16", "bfloat16", "float64"}
        for ex in spec.examples(device, torch.float16, 0):
            assert spec.flops(*ex.args) > 0 and spec.bytes(*ex.args) > 0


@pytest.mark.parametrize("variant", ["single", "online"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("name", list(SPECS))
def test_forward(name: str, dtype: torch.dtype, variant: str) -> None:
    spec = SPECS[name]
    tol = spec.tolerances[dtype_name(dtype)]
    # block_n=256 makes the online kernel walk several tiles (the last one ragged) on CPU shapes.
    kwargs = {"variant": variant, "block_n": 256}
    for seed in SEEDS:
        for ex in spec.examples(device, dtype, seed):
            out = spec.implementation(*ex.args, **kwargs)
            ref = spec.reference(*ex.args, upcast=True)
            low = spec.reference(*ex.args, upcast=False)
            assert out.dtype == dtype
            assert_matches(out, ref, low, tol, what=f"{name}/{variant} {ex.label} seed={seed}")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("name", list(SPECS))
def test_backward(name: str, dtype: torch.dtype) -> None:
    spec = SPECS[name]
    tol = spec.tolerances[dtype_name(dtype)]
    for seed in SEEDS:
        # The softmax backward kernel is the same for both forward variants; logsumexp's backward
        # recomputes softmax with the forward's variant, so alternate variants across seeds.
        variant = ("single", "online")[seed % 2]
        impl = lambda x, variant=variant: spec.implementation(x, variant=variant, block_n=256)
        for ex in spec.examples(device, dtype, seed):
            (got,) = _grads(impl, ex.args, {}, seed)
            (ref,) = _grads(spec.reference, ex.args, {"upcast": True}, seed)
            (low,) = _grads(spec.reference, ex.args, {"upcast": False}, seed)
            assert_matches(got, ref, low, tol, grad=True, what=f"d{name}/{variant} {ex.label} seed={seed}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_name)
@pytest.mark.parametrize("name", list(SPECS))
def test_checkpoint_same_gradients(name: str, dtype: torch.dtype) -> None:
    fn = SPECS[name].implementation
    x = (3 * torch.randn(5, 130)).to(device=device, dtype=dtype)
    plain = _grads(fn, (x,), {}, 0)
    ckpt = _grads(lambda t: checkpoint(fn, t, use_reentrant=False), (x,), {}, 0)
    torch.testing.assert_close(ckpt, plain, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["single", "online"])
def test_large_magnitude_is_stable(variant: str) -> None:
    # exp(1e4) overflows fp32: only the max-shift keeps this finite.
    x = torch.tensor([[1e4, 1e4 - 1, -1e4, 0.0], [-3e4, -3e4, -3e4 + 2, -3e4]], device=device)
    kw = {"variant": variant, "block_n": 2}
    torch.testing.assert_close(mod.softmax(x, **kw), torch.softmax(x, -1))
    torch.testing.assert_close(mod.logsumexp(x, **kw), torch.logsumexp(x, -1))


@pytest.mark.parametrize("variant", ["single", "online"])
def test_edge_shapes_and_layouts(variant: str) -> None:
    kw = {"variant": variant, "block_n": 16}
    # A single row, a length-1 last dim and a -inf entry.
    one = torch.randn(1, 77, device=device)
    one[0, 5] = -float("inf")
    torch.testing.assert_close(mod.softmax(one, **kw), torch.softmax(one, -1))
    col = torch.randn(9, 1, device=device)
    torch.testing.assert_close(mod.softmax(col, **kw), torch.ones_like(col))
    torch.testing.assert_close(mod.logsumexp(col, **kw), col[:, 0])
    # Non-contiguous inputs: a transposed matrix and a column slice (strided rows).
    xt = torch.randn(33, 7, device=device).t()
    torch.testing.assert_close(mod.softmax(xt, **kw), torch.softmax(xt, -1))
    xs = torch.randn(6, 50, device=device)[:, 3:40]
    torch.testing.assert_close(mod.logsumexp(xs, **kw), torch.logsumexp(xs, -1))


def test_auto_picks_by_row_length() -> None:
    assert mod._pick_variant(1000, "auto") == "single"
    assert mod._pick_variant(mod.MAX_SINGLE_BLOCK + 1, "auto") == "online"
    with pytest.raises(ValueError):
        mod._pick_variant(10, "tiled")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("n_cols", [4097, 50_000])
@pytest.mark.parametrize("name", [pytest.param(name, marks=gpu) for name in SPECS])
def test_gpu_long_rows(name: str, n_cols: int, dtype: torch.dtype) -> None:
    spec = SPECS[name]
    x = (3 * torch.randn(64, n_cols, device="cuda")).to(dtype)
    out = spec.implementation(x)
    ref, low = spec.reference(x), spec.reference(x, upcast=False)
    assert_matches(out, ref, low, spec.tolerances[dtype_name(dtype)])
    (got,) = _grads(spec.implementation, (x,), {}, 0)
    (gref,) = _grads(spec.reference, (x,), {"upcast": True}, 0)
    (glow,) = _grads(spec.reference, (x,), {"upcast": False}, 0)
    assert_matches(got, gref, glow, spec.tolerances[dtype_name(dtype)], grad=True)


@pytest.mark.parametrize("variant", ["single", "online"])
def test_logsumexp_of_inf_and_nan_rows_is_torchs(variant: str) -> None:
    inf, nan = float("inf"), float("nan")
    x = torch.tensor(
        [[1.0, inf, 2.0, 3.0], [nan, inf, 1.0, 1.0], [-inf, -inf, -inf, -inf], [inf, inf, 1.0, 2.0]],
        device=device,
    )
    kw = {"variant": variant, "block_n": 2}  # the online kernel sees +inf in one tile, NaN in another
    torch.testing.assert_close(mod.logsumexp(x, **kw), torch.logsumexp(x, -1), equal_nan=True)
    torch.testing.assert_close(mod.softmax(x, **kw), torch.softmax(x, -1), equal_nan=True)
    torch.testing.assert_close(mod.log_softmax(x, **kw), torch.log_softmax(x, -1), equal_nan=True)


@pytest.mark.parametrize("variant", ["single", "online"])
@pytest.mark.parametrize("name", list(SPECS))
def test_empty_dimensions_return_what_torch_returns(name: str, variant: str) -> None:
    spec = SPECS[name]
    for shape in [(3, 0), (0, 5), (2, 0, 4), (0,)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        out = spec.implementation(x, variant=variant)
        ref = spec.reference(x)
        assert out.shape == ref.shape, shape
        torch.testing.assert_close(out, ref)  # logsumexp over nothing is -inf
        (g,) = torch.autograd.grad(out.sum(), x)
        assert g.shape == x.shape


def test_log_softmax_keeps_precision_where_log_of_softmax_loses_it() -> None:
    # log(softmax) of a 100-unit gap underflows to -inf in fp32; log_softmax is exact.
    x = torch.tensor([[0.0, 100.0, 200.0]], device=device)
    torch.testing.assert_close(mod.log_softmax(x), torch.log_softmax(x, -1))
    assert torch.isfinite(mod.log_softmax(x)).all()
