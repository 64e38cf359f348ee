"""One fused DDIM / DDPM sampler step.

Given the noisy sample x_t, the model's noise prediction eps and the cumulative alphas
a_t = alpha_bar_t, a_p = alpha_bar_prev:

    x0     = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)
    sigma  = eta * sqrt((1 - a_p) / (1 - a_t)) * sqrt(1 - a_t / a_p)
    x_prev = sqrt(a_p) * x0 + sqrt(1 - a_p - sigma^2) * eps + sigma * noise

eta = 0 is deterministic DDIM; eta = 1 is DDPM's ancestral step. Unfused, torch runs ~10 elementwise
kernels over the whole image; here each element is read once (x_t, eps, noise) and written once,
and the per-batch coefficients are recomputed in registers (they cost nothing next to the loads).

Alphas may be Python floats, 0-d tensors, or 1-d tensors with one value per batch element (samplers
that step each image at its own timestep).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import acc_dtype, empty_out, finish, require_dtype, upcast
from kernelnotes.kernels.testing import FLOAT64
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

BLOCK = 1024

# ----------------------------------------------------------------------------------------------
# Triton kernel


@triton.jit
def _ddim_step_kernel(
    x_ptr,
    eps_ptr,
    noise_ptr,
    a_t_ptr,
    a_prev_ptr,
    out_ptr,
    total,
    per_batch,
    eta_ptr,
    HAS_NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # int64: > 2^31 elements
    mask = offs < total
    # Per-batch alphas: a gather from a tiny fp32 vector (one value per batch element) that stays
    # in cache; scalar alphas were broadcast to this vector by the launcher.
    bidx = offs // per_batch
    a_t = tl.load(a_t_ptr + bidx, mask=mask, other=0.5)
    a_p = tl.load(a_prev_ptr + bidx, mask=mask, other=0.5)

    eta = tl.load(eta_ptr)  # from memory, in the compute dtype: a Python float would arrive as fp32
    x = upcast(tl.load(x_ptr + offs, mask=mask, other=0.0))
    e = upcast(tl.load(eps_ptr + offs, mask=mask, other=0.0))

    x0 = (x - tl.sqrt(1.0 - a_t) * e) / tl.sqrt(a_t)
    sigma = eta * tl.sqrt((1.0 - a_p) / (1.0 - a_t)) * tl.sqrt(1.0 - a_t / a_p)
    # Clamp: with eta = 1 the radicand is 0 in exact arithmetic and may round slightly negative.
    dir_coef = tl.sqrt(tl.maximum(1.0 - a_p - sigma * sigma, 0.0))
    out = tl.sqrt(a_p) * x0 + dir_coef * e
    if HAS_NOISE:
        z = upcast(tl.load(noise_ptr + offs, mask=mask, other=0.0))
        out += sigma * z
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launcher

Alpha = float | torch.Tensor


def _alpha_vector(
    alpha: Alpha, batch: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A contiguous vector (fp32, or fp64 for fp64 inputs) with one alpha per batch element."""
    a = torch.as_tensor(alpha, device=device).to(dtype)
    if a.dim() == 0:
        return a.expand(batch).contiguous()
    if a.dim() == 1 and a.numel() == batch:
        return a.contiguous()
    raise ValueError(
        f"an alpha must be a float, a 0-d tensor or a 1-d tensor of length {batch}; got {tuple(a.shape)}"
    )


def _check(x_t: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor | None) -> None:
    if x_t.dim() < 1:
        raise ValueError("x_t needs a leading batch dimension")
    for name, t in (("eps", eps), ("noise", noise)):
        if t is not None and t.shape != x_t.shape:
            raise ValueError(f"{name} must have x_t's shape {tuple(x_t.shape)}; got {tuple(t.shape)}")


def _ddim_step_fwd(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t: Alpha,
    alpha_bar_prev: Alpha,
    eta: float,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    _check(x_t, eps, noise)
    batch = x_t.shape[0]
    acc = acc_dtype(x_t.dtype)
    a_t = _alpha_vector(alpha_bar_t, batch, x_t.device, acc)
    a_p = _alpha_vector(alpha_bar_prev, batch, x_t.device, acc)
    eta_t = torch.full((1,), eta, dtype=acc, device=x_t.device)
    # The kernel walks flat memory, so all three tensors must share the contiguous layout.
    x = x_t.contiguous()
    e = eps.contiguous()
    has_noise = noise is not None and eta != 0.0
    z = noise.contiguous() if has_noise else x  # type: ignore[union-attr]  # dummy pointer otherwise
    out = empty_out(x.shape, x.dtype, x.device)
    total = x.numel()
    if total:
        grid = (triton.cdiv(total, BLOCK),)
        _ddim_step_kernel[grid](
            x, e, z, a_t, a_p, out, total, total // batch, eta_t, HAS_NOISE=has_noise, BLOCK=BLOCK
        )
    return finish(out, x.dtype)


# ----------------------------------------------------------------------------------------------
# Public function and torch reference


def _default_noise(x_t: torch.Tensor, eta: float, noise: torch.Tensor | None) -> torch.Tensor | None:
    # Drawn from torch's global generator when needed and not given; pass `noise` to reproduce a step.
    if noise is None and eta != 0.0:
        return torch.randn_like(x_t)
    return noise


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t: Alpha,
    alpha_bar_prev: Alpha,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_{t-1} from x_t and the predicted noise eps (DDIM for eta=0, DDPM-like for eta=1), fused."""
    require_dtype(
        "ddim_step", x_t, eps, allowed=(torch.float32, torch.float16, torch.bfloat16, torch.float64)
    )
    return _ddim_step_fwd(x_t, eps, alpha_bar_t, alpha_bar_prev, float(eta), _default_noise(x_t, eta, noise))


def ddim_step_reference(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t: Alpha,
    alpha_bar_prev: Alpha,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    upcast: bool = True,
) -> torch.Tensor:
    """The closed form step by step in torch: fp32 (cast back) with `upcast`, else in the input dtype."""
    _check(x_t, eps, noise)
    noise = _default_noise(x_t, eta, noise)
    dtype = x_t.dtype
    work = acc_dtype(dtype) if upcast else dtype
    bshape = (x_t.shape[0],) + (1,) * (x_t.dim() - 1)
    a_t = _alpha_vector(alpha_bar_t, x_t.shape[0], x_t.device).to(work).view(bshape)
    a_p = _alpha_vector(alpha_bar_prev, x_t.shape[0], x_t.device).to(work).view(bshape)
    x, e = x_t.to(work), eps.to(work)
    x0 = (x - torch.sqrt(1 - a_t) * e) / torch.sqrt(a_t)
    sigma = eta * torch.sqrt((1 - a_p) / (1 - a_t)) * torch.sqrt(1 - a_t / a_p)
    out = torch.sqrt(a_p) * x0 + torch.sqrt((1 - a_p - sigma**2).clamp_min(0)) * e
    if noise is not None and eta != 0.0:
        out = out + sigma * noise.to(work)
    return out.to(dtype)


# ----------------------------------------------------------------------------------------------
# Example inputs


def ddim_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    # Alphas at mid-schedule (a_t in [0.3, 0.9]) where x0 = .../sqrt(a_t) does not blow up the
    # values; the per-batch case steps each image from its own timestep.
    per_batch_t = torch.tensor([0.35, 0.6, 0.82], device=device)
    per_batch_p = torch.tensor([0.42, 0.7, 0.9], device=device)
    cases = [
        Example(args=(t(2, 3, 5, 7), t(2, 3, 5, 7), 0.5, 0.6), label="eta=0, float alphas"),
        Example(
            args=(t(3, 4, 33), t(3, 4, 33), per_batch_t, per_batch_p),
            kwargs={"eta": 1.0, "noise": t(3, 4, 33)},
            label="eta=1, per-batch alphas",
        ),
        Example(
            args=(t(1, 130), t(1, 130), torch.tensor(0.3, device=device), torch.tensor(0.45, device=device)),
            kwargs={"eta": 0.5, "noise": t(1, 130)},
            label="eta=0.5, 0-d tensor alphas",
        ),
        Example(args=(t(1, 1), t(1, 1), 0.9, 0.95), label="single element"),
    ]
    if device != "cpu":
        cases.append(
            Example(args=(t(16, 4, 96, 96), t(16, 4, 96, 96), 0.7, 0.75), label="16x4x96x96 latents")
        )
    return cases


def _ddim_bytes(
    x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None
) -> float:
    n_read = 3 if (noise is not None and eta != 0.0) else 2
    return float((n_read + 1) * x_t.numel() * x_t.element_size())


def _ddim_flops(
    x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None
) -> float:
    # Per element: x0 (mul, sub, div), x_prev (2 mul, add), noise term (mul, add).
    return float(8 * x_t.numel())


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        name="ddim_step",
        reference=ddim_step_reference,
        implementation=ddim_step,
        examples=ddim_examples,
        tolerances={
            "float32": Tolerance(atol=1e-5, rtol=1e-5, floor=1e-5),
            "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=2e-3),
            "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=1.6e-2),
            "float64": FLOAT64,
        },
        flops=_ddim_flops,
        bytes=_ddim_bytes,
        backward=False,
        description="Fused DDIM/DDPM update: predict x0 from eps, then step to x_{t-1} (eta controls the noise).",
        module=__name__,
    ),
)
