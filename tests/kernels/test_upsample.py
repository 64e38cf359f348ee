"""Pixel shuffle (bit-exact) and bilinear upsampling against F.pixel_shuffle / F.interpolate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernelnotes.kernels import upsample as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

device = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SEEDS = range(5)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SPECS = {s.name: s for s in mod.SPECS}
SHUFFLE = SPECS["pixel_shuffle"]
BILINEAR = SPECS["upsample_bilinear"]


def image(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def check_bilinear(x: torch.Tensor, **kwargs) -> None:
    out = mod.upsample_bilinear(x, **kwargs)
    ref = mod.upsample_bilinear_reference(x, **kwargs)
    ref_lowp = mod.upsample_bilinear_reference(x, upcast=False, **kwargs)
    assert_matches(out, ref, ref_lowp, BILINEAR.tolerances[dtype_name(x.dtype)])


def test_specs_validate() -> None:
    assert [s.name for s in mod.SPECS] == ["pixel_shuffle", "upsample_bilinear"]
    for spec in mod.SPECS:
        assert isinstance(spec, KernelSpec)
        assert spec.module == "kernelnotes.kernels.upsample"
        assert spec.backward is False
    # A permutation moves float64 bits exactly; bilinear's sampling weights are fp32 (TypeError).
    assert set(SPECS["pixel_shuffle"].dtypes) == {"float32", "float16", "bfloat16", "float64"}
    assert set(SPECS["upsample_bilinear"].dtypes) == {"float32", "float16", "bfloat16"}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("name", list(SPECS))
def test_examples_run(name: str, dtype: torch.dtype) -> None:
    spec = SPECS[name]
    for ex in spec.examples(device, dtype, 0):
        out = spec.implementation(*ex.args, **ex.kwargs)
        ref = spec.reference(*ex.args, **ex.kwargs)
        assert out.shape == ref.shape and out.dtype == ref.dtype == dtype
        assert spec.bytes(*ex.args, **ex.kwargs) > 0
        assert spec.flops(*ex.args, **ex.kwargs) >= 0


# ---- pixel shuffle: a permutation, so equality is required -------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_pixel_shuffle_bit_exact(dtype: torch.dtype, seed: int) -> None:
    for ex in SHUFFLE.examples(device, dtype, seed):
        out = mod.pixel_shuffle(*ex.args)
        assert torch.equal(out, F.pixel_shuffle(*ex.args)), ex.label
        # The policy helper agrees (zero bounds).
        assert_matches(
            out,
            SHUFFLE.reference(*ex.args),
            SHUFFLE.reference(*ex.args, upcast=False),
            SHUFFLE.tolerances[dtype_name(dtype)],
        )


def test_pixel_shuffle_special_values_survive() -> None:
    # NaN payloads, infinities, -0.0 and subnormals are moved as raw bits.
    x = torch.tensor([float("nan"), float("inf"), -0.0, 1e-45], device=device).view(1, 4, 1, 1)
    out = mod.pixel_shuffle(x, 2)
    assert torch.equal(out.view(torch.int32), F.pixel_shuffle(x, 2).view(torch.int32))


def test_pixel_shuffle_non_contiguous_and_errors() -> None:
    x = image((2, 5, 6, 18)).permute(0, 3, 1, 2)  # (2, 18, 5, 6), not contiguous
    assert not x.is_contiguous()
    assert torch.equal(mod.pixel_shuffle(x, 3), F.pixel_shuffle(x, 3))
    with pytest.raises(ValueError):
        mod.pixel_shuffle(image((1, 6, 2, 2)), 2)  # 6 channels are not divisible by 4


# ---- bilinear --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_bilinear_matches_reference(dtype: torch.dtype, seed: int) -> None:
    for ex in BILINEAR.examples(device, dtype, seed):
        check_bilinear(*ex.args, **ex.kwargs)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ((1, 1, 1, 1), {"size": (3, 37)}),  # a single pixel broadcast
        ((3, 2, 37, 1), {"scale_factor": 3.0}),  # a length-1 width
        ((1, 2, 4, 4), {"size": 7}),  # an int size means a square output
        ((2, 1, 33, 10), {"scale_factor": 0.3}),  # strong downsampling
        ((1, 1, 5, 5), {"scale_factor": 1.0}),  # identity
    ],
    ids=str,
)
def test_bilinear_edge_cases(shape: tuple[int, ...], kwargs: dict, align_corners: bool) -> None:
    check_bilinear(image(shape, seed=1), align_corners=align_corners, **kwargs)


def test_bilinear_identity_is_exact() -> None:
    x = image((2, 3, 7, 9))
    assert torch.equal(mod.upsample_bilinear(x, scale_factor=1.0), x)
    assert torch.equal(mod.upsample_bilinear(x, size=(7, 9), align_corners=True), x)


def test_bilinear_large_magnitude_fp16() -> None:
    # Near fp16's maximum: the fp32 blend must not overflow where torch's result does not.
    x = (image((1, 2, 6, 5), seed=2).clamp(-1, 1) * 60000).to(torch.float16)
    check_bilinear(x, scale_factor=2.5, align_corners=False)


def test_bilinear_non_contiguous() -> None:
    x = image((2, 9, 11, 3)).permute(0, 3, 1, 2)  # channels-last storage
    out = mod.upsample_bilinear(x, size=(20, 5), align_corners=True)
    torch.testing.assert_close(
        out, mod.upsample_bilinear(x.contiguous(), size=(20, 5), align_corners=True), atol=0, rtol=0
    )
    check_bilinear(x, scale_factor=(1.5, 0.5))


def test_bilinear_argument_errors() -> None:
    x = image((1, 1, 4, 4))
    with pytest.raises(ValueError):
        mod.upsample_bilinear(x)
    with pytest.raises(ValueError):
        mod.upsample_bilinear(x, size=4, scale_factor=2.0)
    with pytest.raises(ValueError):
        mod.upsample_bilinear(x[0], scale_factor=2.0)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("align_corners", [False, True])
def test_large_shapes_gpu(dtype: torch.dtype, align_corners: bool) -> None:
    x = torch.randn(8, 64, 257, 190, device="cuda", dtype=dtype)
    check_bilinear(x, scale_factor=2.0, align_corners=align_corners)
    check_bilinear(x.to(memory_format=torch.channels_last), size=(511, 97), align_corners=align_corners)
    y = torch.randn(16, 3 * 16, 129, 67, device="cuda", dtype=dtype)
    assert torch.equal(mod.pixel_shuffle(y, 4), F.pixel_shuffle(y, 4))
