"""Resampling of NCHW images: pixel shuffle (sub-pixel convolution's rearrangement) and bilinear upsampling.

- `pixel_shuffle(x, upscale_factor)` matches `F.pixel_shuffle` bit for bit: it only moves elements,
  and it moves them as integers of the same width so no float conversion can touch a bit.
- `upsample_bilinear(x, size=None, scale_factor=None, align_corners=False)` matches
  `F.interpolate(mode="bilinear")` computed in fp32, for both `align_corners` conventions, including
  how torch derives the output size and the source-coordinate scale from `scale_factor`.

Both kernels walk the flat output with one program per BLOCK elements and gather from the input
through its strides, so non-contiguous inputs (e.g. channels-last) need no copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernelnotes.kernels._common import empty_out, finish, require_dtype
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

# One program per 1024 output elements: large enough that the CPU interpreter launches few programs.
BLOCK = 1024

# ----------------------------------------------------------------------------------------------
# Triton kernels


@triton.jit
def _pixel_shuffle_kernel(
    x_ptr,
    out_ptr,
    total,
    C_out,
    H,
    W,
    sx_n,
    sx_c,
    sx_h,
    sx_w,
    R: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    # Decompose the contiguous output index (n, c, oh, ow) with oh = h*R + i, ow = w*R + j.
    W_out = W * R
    H_out = H * R
    ow = offs % W_out
    rest = offs // W_out
    oh = rest % H_out
    rest = rest // H_out
    c = rest % C_out
    n = rest // C_out
    h = oh // R
    i = oh % R
    w = ow // R
    j = ow % R
    src_c = c * (R * R) + i * R + j
    src = n * sx_n + src_c * sx_c + h * sx_h + w * sx_w
    vals = tl.load(x_ptr + src, mask=mask)
    tl.store(out_ptr + offs, vals, mask=mask)


@triton.jit
def _upsample_bilinear_kernel(
    x_ptr,
    out_ptr,
    total,
    C,
    H_in,
    W_in,
    H_out,
    W_out,
    scale_h,
    scale_w,
    sx_n,
    sx_c,
    sx_h,
    sx_w,
    ALIGN_CORNERS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    ow = offs % W_out
    rest = offs // W_out
    oh = rest % H_out
    rest = rest // H_out
    c = rest % C
    n = rest // C

    # Source coordinates exactly as torch computes them (in fp32).
    if ALIGN_CORNERS:
        src_h = scale_h * oh.to(tl.float32)
        src_w = scale_w * ow.to(tl.float32)
    else:
        src_h = tl.maximum(scale_h * (oh.to(tl.float32) + 0.5) - 0.5, 0.0)
        src_w = tl.maximum(scale_w * (ow.to(tl.float32) + 0.5) - 0.5, 0.0)
    # src >= 0, so truncation is floor; clamp guards against fp32 rounding just past the last row.
    h0 = tl.minimum(src_h.to(tl.int32), H_in - 1)
    w0 = tl.minimum(src_w.to(tl.int32), W_in - 1)
    h1 = tl.where(h0 < H_in - 1, h0 + 1, h0)
    w1 = tl.where(w0 < W_in - 1, w0 + 1, w0)
    lh1 = tl.minimum(tl.maximum(src_h - h0.to(tl.float32), 0.0), 1.0)
    lw1 = tl.minimum(tl.maximum(src_w - w0.to(tl.float32), 0.0), 1.0)
    lh0 = 1.0 - lh1
    lw0 = 1.0 - lw1

    base = n * sx_n + c * sx_c
    x00 = tl.load(x_ptr + base + h0 * sx_h + w0 * sx_w, mask=mask, other=0.0).to(tl.float32)
    x01 = tl.load(x_ptr + base + h0 * sx_h + w1 * sx_w, mask=mask, other=0.0).to(tl.float32)
    x10 = tl.load(x_ptr + base + h1 * sx_h + w0 * sx_w, mask=mask, other=0.0).to(tl.float32)
    x11 = tl.load(x_ptr + base + h1 * sx_h + w1 * sx_w, mask=mask, other=0.0).to(tl.float32)
    out = lh0 * (lw0 * x00 + lw1 * x01) + lh1 * (lw0 * x10 + lw1 * x11)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers


_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _pixel_shuffle_fwd(x: torch.Tensor, r: int) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"pixel_shuffle expects NCHW input; got shape {tuple(x.shape)}")
    if r < 1 or x.shape[1] % (r * r):
        raise ValueError(f"channels ({x.shape[1]}) must be divisible by upscale_factor**2 ({r * r})")
    n, c_in, h, w = x.shape
    c_out = c_in // (r * r)
    # Move raw bits: an integer view of the same width makes the copy exact for every float dtype
    # (and sidesteps the interpreter's lossy bf16 handling).
    bits = x.view(_SAME_WIDTH_INT[x.element_size()]) if x.is_floating_point() else x
    out = torch.empty((n, c_out, h * r, w * r), dtype=bits.dtype, device=x.device)
    total = out.numel()
    if total:
        grid = (triton.cdiv(total, BLOCK),)
        _pixel_shuffle_kernel[grid](bits, out, total, c_out, h, w, *bits.stride(), R=r, BLOCK=BLOCK)
    return out.view(x.dtype)


def _pair(v: float | int | Sequence[float | int]) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _bilinear_geometry(
    x: torch.Tensor,
    size: int | Sequence[int] | None,
    scale_factor: float | Sequence[float] | None,
    align_corners: bool,
) -> tuple[int, int, float, float]:
    """Output size and source-coordinate scales, following F.interpolate's rules."""
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    h_in, w_in = x.shape[-2:]
    if size is not None:
        h_out, w_out = (int(s) for s in _pair(size))
        scales: tuple[float | None, float | None] = (None, None)
    else:
        sf = _pair(scale_factor)  # type: ignore[arg-type]
        # torch: output = floor(input * scale), and the given scale (not in/out) drives the sampling.
        h_out, w_out = math.floor(float(h_in) * sf[0]), math.floor(float(w_in) * sf[1])
        scales = (float(sf[0]), float(sf[1]))

    def coord_scale(n_in: int, n_out: int, s: float | None) -> float:
        if align_corners:
            return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        return 1.0 / s if s is not None and s > 0 else n_in / n_out

    if h_out < 1 or w_out < 1:
        raise ValueError(f"output size must be positive; got {(h_out, w_out)}")
    return h_out, w_out, coord_scale(h_in, h_out, scales[0]), coord_scale(w_in, w_out, scales[1])


def _upsample_bilinear_fwd(
    x: torch.Tensor,
    size: int | Sequence[int] | None,
    scale_factor: float | Sequence[float] | None,
    align_corners: bool,
) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"upsample_bilinear expects NCHW input; got shape {tuple(x.shape)}")
    h_out, w_out, scale_h, scale_w = _bilinear_geometry(x, size, scale_factor, align_corners)
    n, c, h_in, w_in = x.shape
    # As torch: an empty batch is fine, empty channels or image sides are not.
    if c == 0 or 0 in (h_in, w_in, h_out, w_out):
        raise ValueError(
            f"upsample_bilinear needs channels and input/output sides > 0, got input {tuple(x.shape)}, "
            f"output {h_out}x{w_out}"
        )
    out = empty_out((n, c, h_out, w_out), x.dtype, x.device)
    total = out.numel()
    if total:
        grid = (triton.cdiv(total, BLOCK),)
        _upsample_bilinear_kernel[grid](
            x,
            out,
            total,
            c,
            h_in,
            w_in,
            h_out,
            w_out,
            scale_h,
            scale_w,
            *x.stride(),
            ALIGN_CORNERS=bool(align_corners),
            BLOCK=BLOCK,
        )
    return finish(out, x.dtype)


# ----------------------------------------------------------------------------------------------
# Public functions and torch references


def pixel_shuffle(x: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    """(N, C*r*r, H, W) -> (N, C, H*r, W*r), bit-identical to F.pixel_shuffle."""
    return _pixel_shuffle_fwd(x, int(upscale_factor))


def pixel_shuffle_reference(x: torch.Tensor, upscale_factor: int, upcast: bool = True) -> torch.Tensor:
    # A pure permutation: fp32 and the input dtype give the same bits, so `upcast` changes nothing.
    return F.pixel_shuffle(x, upscale_factor)


def upsample_bilinear(
    x: torch.Tensor,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Bilinear resize of an NCHW tensor, as F.interpolate(mode="bilinear") computed in fp32."""
    require_dtype("upsample_bilinear", x, allowed=(torch.float32, torch.float16, torch.bfloat16))
    return _upsample_bilinear_fwd(x, size, scale_factor, align_corners)


def upsample_bilinear_reference(
    x: torch.Tensor,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    align_corners: bool = False,
    upcast: bool = True,
) -> torch.Tensor:
    xin = x.float() if upcast else x
    out = F.interpolate(
        xin, size=size, scale_factor=scale_factor, mode="bilinear", align_corners=align_corners
    )
    return out.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Example inputs


def _image(
    shape: tuple[int, ...], *, device: str, dtype: torch.dtype, seed: int, channels_last: bool = False
):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # Values in [-2, 2): one bf16/fp16 rounding flip then stays far below the tolerance floors.
    x = torch.rand(shape, generator=gen) * 4 - 2
    x = x.to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def pixel_shuffle_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    cases = [
        ((2, 12, 5, 7), 2, False),
        ((1, 27, 3, 1), 3, True),
        ((3, 4, 1, 1), 2, False),
        ((1, 5, 4, 6), 1, False),
    ]
    if device != "cpu":
        cases += [((8, 256, 67, 129), 2, False), ((4, 576, 33, 65), 3, True)]
    return [
        Example(
            args=(_image(s, device=device, dtype=dtype, seed=seed + i, channels_last=cl), r),
            label=f"{s} r={r}{' channels_last' if cl else ''}",
        )
        for i, (s, r, cl) in enumerate(cases)
    ]


def upsample_bilinear_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    cases: list[tuple[tuple[int, ...], dict, bool]] = [
        ((2, 3, 5, 7), {"scale_factor": 2.0, "align_corners": False}, False),
        ((2, 3, 5, 7), {"scale_factor": 2.0, "align_corners": True}, False),
        ((1, 2, 9, 13), {"scale_factor": 1.7, "align_corners": False}, True),
        ((1, 2, 9, 13), {"size": (20, 11), "align_corners": True}, False),
        ((1, 3, 11, 6), {"scale_factor": (0.5, 1.5), "align_corners": False}, False),
        ((1, 1, 1, 5), {"size": (4, 9), "align_corners": False}, False),
        ((1, 1, 4, 5), {"size": (1, 1), "align_corners": True}, False),
    ]
    if device != "cpu":
        cases += [
            ((8, 64, 129, 255), {"scale_factor": 2.0, "align_corners": False}, False),
            ((4, 32, 100, 77), {"size": (333, 250), "align_corners": True}, True),
        ]
    return [
        Example(
            args=(_image(s, device=device, dtype=dtype, seed=seed + i, channels_last=cl),),
            kwargs=kw,
            label=f"{s} {kw}{' channels_last' if cl else ''}",
        )
        for i, (s, kw, cl) in enumerate(cases)
    ]


def _pixel_shuffle_bytes(x: torch.Tensor, upscale_factor: int) -> float:
    return 2.0 * x.numel() * x.element_size()


def _bilinear_out_numel(x: torch.Tensor, size=None, scale_factor=None, align_corners: bool = False) -> int:
    h_out, w_out, _, _ = _bilinear_geometry(x, size, scale_factor, align_corners)
    return x.shape[0] * x.shape[1] * h_out * w_out


def _bilinear_bytes(x: torch.Tensor, size=None, scale_factor=None, align_corners: bool = False) -> float:
    # Ideal traffic: each input read once (neighbour reuse hits the cache), each output written once.
    return float((x.numel() + _bilinear_out_numel(x, size, scale_factor, align_corners)) * x.element_size())


def _bilinear_flops(x: torch.Tensor, size=None, scale_factor=None, align_corners: bool = False) -> float:
    # As written: 6 multiplies and 3 adds per output element.
    return 9.0 * _bilinear_out_numel(x, size, scale_factor, align_corners)


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="pixel_shuffle",
        reference=pixel_shuffle_reference,
        implementation=pixel_shuffle,
        examples=pixel_shuffle_examples,
        # A permutation: the kernel must be exact (the tests use torch.equal); zero bounds say so.
        tolerances={
            d: Tolerance(atol=0.0, rtol=0.0, factor=0.0, floor=0.0)
            for d in ("float32", "float16", "bfloat16", "float64")
        },
        flops=lambda x, upscale_factor: 0.0,
        bytes=_pixel_shuffle_bytes,
        backward=False,
        description="Rearrange (N, C*r*r, H, W) into (N, C, H*r, W*r), bit-exact with F.pixel_shuffle.",
        module=__name__,
    ),
    KernelSpec(
        dtypes=("float32", "float16", "bfloat16"),  # float64: TypeError (fp32 sampling weights)
        name="upsample_bilinear",
        reference=upsample_bilinear_reference,
        implementation=upsample_bilinear,
        examples=upsample_bilinear_examples,
        tolerances={
            "float32": Tolerance(atol=1e-5, rtol=1e-5, floor=1e-5),
            # Floors of about one ulp at |x| = 2: a single rounding flip against the reference is fine.
            "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3),
            "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1.6e-2),
        },
        flops=_bilinear_flops,
        bytes=_bilinear_bytes,
        backward=False,
        description="Bilinear resize of NCHW images (F.interpolate mode='bilinear', both align_corners).",
        module=__name__,
    ),
)
