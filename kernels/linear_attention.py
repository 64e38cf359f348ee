"""Linear attention (Katharopoulos et al., 2020) with the elu(x)+1 feature map, in chunked form.

With `phi(x) = elu(x) + 1` (positive everywhere), causal linear attention is

    out_t = phi(q_t) S_t / (phi(q_t) . z_t + eps),  S_t = sum_{s<=t} phi(k_s)^T v_s,  z_t = sum_{s<=t} phi(k_s).

Computing it token by token is a sequential scan; computing it as masked quadratic attention costs
O(N^2). The chunked form does both halves where each is cheap: the sequence is cut into chunks of
`chunk_size` tokens; within a chunk the contribution is the masked quadratic form
`tril(phi(Q_c) phi(K_c)^T) V_c` (tensor-core friendly), and everything before the chunk is summarised by
the state `(S, z)` carried in fp32 from chunk to chunk. On a GPU, 16-bit inputs multiply on tensor
cores (operands in the input dtype, fp32 accumulation); fp32 inputs use exact fp32 products. One program handles one (batch, head) and a
slice of the value dimension, and walks the chunks in order.

`eps` (1e-6) in the denominator only guards against underflow of `phi(q) . z`: phi > 0, so the sum is
positive in exact arithmetic, but `exp` of very negative inputs can round it to zero.

Forward only: no autograd support.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelnotes.kernels._common import INTERPRET, empty_out, finish, require_dtype
from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

EPS = 1e-6

# --------------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------------


@triton.jit
def _phi(x):
    # elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise. The unused branch is kept from overflowing by
    # tl.where, not tl.minimum, which would turn NaN into 0 (and hide it from the output).
    return tl.where(x > 0, x + 1.0, tl.exp(tl.where(x > 0, 0.0, x)))


@triton.jit
def _dot(a, b, DOT_FP32: tl.constexpr, DT: tl.constexpr):
    """a @ b accumulated in fp32: exact fp32 products (fp32 inputs, the interpreter), else tensor cores on
    operands rounded to the input dtype DT, as FlashAttention does with its probabilities."""
    if DOT_FP32:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a.to(DT), b.to(DT))


@triton.jit
def _linear_attn_fwd_kernel(
    Q,
    K,
    V,
    O,
    n_heads,
    seqlen,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ob,
    stride_oh,
    stride_ot,
    dim_k,
    dim_v,
    eps,
    CAUSAL: tl.constexpr,
    DOT_FP32: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    DT: tl.constexpr = Q.dtype.element_ty
    bh = tl.program_id(0)
    pid_v = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    o_base = O + b * stride_ob + h * stride_oh

    offs_c = tl.arange(0, CHUNK)
    offs_dk = tl.arange(0, BLOCK_DK)
    offs_dv = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    dk_ok = offs_dk < dim_k
    dv_ok = offs_dv < dim_v

    # Carried state, always fp32: S = sum phi(k)^T v and z = sum phi(k) over the chunks seen so far.
    state = tl.zeros((BLOCK_DK, BLOCK_DV), dtype=tl.float32)
    z = tl.zeros((BLOCK_DK,), dtype=tl.float32)

    if not CAUSAL:
        # Non-causal: every query sees the full sums, so accumulate them first.
        for t0 in range(0, seqlen, CHUNK):
            t = t0 + offs_c
            t_ok = t < seqlen
            k = tl.load(
                k_base + t[:, None] * stride_kt + offs_dk[None, :],
                mask=t_ok[:, None] & dk_ok[None, :],
                other=0.0,
            )
            # Padding rows/columns must contribute 0, and phi(0) = 1: mask after the feature map.
            pk = tl.where(t_ok[:, None] & dk_ok[None, :], _phi(k.to(tl.float32)), 0.0)
            v = tl.load(
                v_base + t[:, None] * stride_vt + offs_dv[None, :],
                mask=t_ok[:, None] & dv_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            state += _dot(tl.trans(pk), v, DOT_FP32, DT)
            z += tl.sum(pk, 0)

    for t0 in range(0, seqlen, CHUNK):
        t = t0 + offs_c
        t_ok = t < seqlen
        qk_mask = t_ok[:, None] & dk_ok[None, :]
        q = tl.load(q_base + t[:, None] * stride_qt + offs_dk[None, :], mask=qk_mask, other=0.0)
        pq = tl.where(qk_mask, _phi(q.to(tl.float32)), 0.0)
        # Contribution of all earlier chunks (or of the whole sequence when not causal).
        num = _dot(pq, state, DOT_FP32, DT)
        den = tl.sum(pq * z[None, :], 1)
        if CAUSAL:
            k = tl.load(k_base + t[:, None] * stride_kt + offs_dk[None, :], mask=qk_mask, other=0.0)
            pk = tl.where(qk_mask, _phi(k.to(tl.float32)), 0.0)
            v = tl.load(
                v_base + t[:, None] * stride_vt + offs_dv[None, :],
                mask=t_ok[:, None] & dv_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            # Within the chunk: masked quadratic form, token i sees tokens j <= i.
            a = _dot(pq, tl.trans(pk), DOT_FP32, DT)
            a = tl.where(offs_c[:, None] >= offs_c[None, :], a, 0.0)
            num += _dot(a, v, DOT_FP32, DT)
            den += tl.sum(a, 1)
            state += _dot(tl.trans(pk), v, DOT_FP32, DT)
            z += tl.sum(pk, 0)
        out = num / (den[:, None] + eps)
        tl.store(
            o_base + t[:, None] * stride_ot + offs_dv[None, :],
            out.to(O.dtype.element_ty),
            mask=t_ok[:, None] & dv_ok[None, :],
        )


# --------------------------------------------------------------------------------------------------
# Launcher and public function
# --------------------------------------------------------------------------------------------------


def _block_dv(dim_v: int, dtype: torch.dtype, gpu: bool = not INTERPRET) -> int:
    """Value columns per program. On a GPU: split across programs (more parallelism, and a register
    tile that does not spill: 32 columns for tensor-core dots, 16 for fp32 FMA dots, checked with
    cross_compile). Under the interpreter one program per (batch, head) is cheapest."""
    if not gpu:
        return max(16, triton.next_power_of_2(dim_v))
    return min(16 if dtype == torch.float32 else 32, max(16, triton.next_power_of_2(dim_v)))


def linear_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, chunk_size: int
) -> torch.Tensor:
    """Launch the chunked kernel on `(batch, heads, seq, dim)` tensors (any strides but a unit last one)."""
    batch, n_heads, seqlen, dim_k = q.shape
    dim_v = v.shape[-1]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = empty_out((batch, n_heads, seqlen, dim_v), q.dtype, q.device)
    if out.numel() == 0:
        return finish(out, q.dtype)
    block_dk = max(16, triton.next_power_of_2(dim_k))
    block_dv = _block_dv(dim_v, q.dtype)
    grid = (batch * n_heads, triton.cdiv(dim_v, block_dv))
    _linear_attn_fwd_kernel[grid](
        q,
        k,
        v,
        out,
        n_heads,
        seqlen,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        dim_k,
        dim_v,
        EPS,
        CAUSAL=causal,
        DOT_FP32=INTERPRET or q.dtype == torch.float32,
        CHUNK=chunk_size,
        BLOCK_DK=block_dk,
        BLOCK_DV=block_dv,
        num_warps=4,
    )
    return finish(out, q.dtype)


MAX_HEAD_DIM = 256  # a wider head's state tile does not fit one program


def linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, chunk_size: int = 64
) -> torch.Tensor:
    """Linear attention with phi = elu + 1 for `q, k (batch, heads, seq, dk)`, `v (batch, heads, seq, dv)`.

    Causal by default (prefix sums); `causal=False` uses the sums over the whole sequence.
    `chunk_size` (a power of two >= 16) is the length of the quadratic intra-chunk block. The
    denominator gets `EPS = 1e-6`. Forward only.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"expected q, k (B, H, N, Dk) and v (B, H, N, Dv), got {q.shape}, {k.shape}, {v.shape}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    require_dtype("linear_attention", q, allowed=(torch.float32, torch.float16, torch.bfloat16))
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16, got {chunk_size}")
    if q.shape[-1] > MAX_HEAD_DIM or v.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"head dims above {MAX_HEAD_DIM} are not supported")
    return linear_attention_forward(q, k, v, causal, chunk_size)


def linear_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    chunk_size: int = 64,
    upcast: bool = True,
) -> torch.Tensor:
    """Prefix sums of phi(k)^T v and phi(k) in fp32, cast back (`upcast=False`: all in the input dtype).

    `chunk_size` is accepted for signature parity and ignored: the result does not depend on it.
    Materialises `(B, H, N, Dk, Dv)`: meant for test-sized inputs.
    """
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    pq = torch.nn.functional.elu(q) + 1
    pk = torch.nn.functional.elu(k) + 1
    kv = torch.einsum("bhsd,bhse->bhsde", pk, v)
    if causal:
        state, z = kv.cumsum(dim=2), pk.cumsum(dim=2)
    else:
        state = kv.sum(dim=2, keepdim=True).expand_as(kv)
        z = pk.sum(dim=2, keepdim=True).expand_as(pk)
    num = torch.einsum("bhsd,bhsde->bhse", pq, state)
    den = (pq * z).sum(dim=-1, keepdim=True)
    return (num / (den + EPS)).to(dtype)


# --------------------------------------------------------------------------------------------------
# Examples, cost model, spec
# --------------------------------------------------------------------------------------------------


def linear_attention_examples(device: str, dtype: torch.dtype, seed: int) -> list[Example]:
    """Ragged lengths (1, 17, 65, 130: partial and several chunks), dk != dv, causal and not."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    if device == "cpu":
        cases = [
            (1, 1, 1, 64, 64, True),
            (2, 2, 17, 33, 64, True),
            (1, 2, 130, 64, 37, True),
            (1, 1, 65, 64, 64, False),
        ]
    else:
        cases = [(2, 4, 130, 64, 64, True), (2, 8, 1024, 64, 64, True), (1, 4, 1000, 128, 96, False)]
    out: list[Example] = []
    for b, h, n, dk, dv, causal in cases:
        q = torch.randn(b, h, n, dk, generator=g).to(device=device, dtype=dtype)
        k = torch.randn(b, h, n, dk, generator=g).to(device=device, dtype=dtype)
        v = torch.randn(b, h, n, dv, generator=g).to(device=device, dtype=dtype)
        out.append(
            Example(
                args=(q, k, v),
                kwargs={"causal": causal},
                label=f"b{b} h{h} n{n} dk{dk} dv{dv} causal={causal}",
            )
        )
    return out


def linear_attention_flops(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, chunk_size: int = 64
) -> float:
    """Chunked form: per chunk, intra (2 C^2 Dk + 2 C^2 Dv) + state read (2 C Dk Dv) + update (2 C Dk Dv)."""
    b, h, n, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size
    intra = 2 * n * c * (dk + dv) if causal else 0
    return float(b * h * (intra + 4 * n * dk * dv))


def linear_attention_bytes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args, **kwargs) -> float:
    return float((q.numel() + k.numel() + 2 * v.numel()) * q.element_size())


SPECS: tuple[KernelSpec, ...] = (
    KernelSpec(
        dtypes=("float32", "float16", "bfloat16"),  # float64: TypeError (fp32 tiles and statistics)
        name="linear_attention",
        reference=linear_attention_reference,
        implementation=linear_attention,
        examples=linear_attention_examples,
        tolerances={
            "float32": Tolerance(atol=1e-4, rtol=1e-4, floor=1e-4),
            "float16": Tolerance(atol=1e-2, rtol=1e-2, floor=1e-3),
            "bfloat16": Tolerance(atol=2e-2, rtol=2e-2, floor=8e-3),
        },
        flops=linear_attention_flops,
        bytes=linear_attention_bytes,
        backward=False,
        caps={"head dim": MAX_HEAD_DIM},
        description="Causal chunked linear attention, phi = elu + 1, fp32 state, (batch, heads, seq, dim).",
        module=__name__,
    ),
)
