"""Fused linear cross-entropy (loss, d hidden, d weight) against torch, under the correctness policy."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from kernelnotes.kernels import fused_linear_cross_entropy as mod
from kernelnotes.kernels._common import dtype_name
from kernelnotes.kernels.testing import assert_matches
from kernelnotes.kernelspec import KernelSpec

from .helpers import DEVICE, gpu

device = DEVICE
(SPEC,) = mod.SPECS
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _loss_and_grads(fn, hidden, weight, target, dloss: float, **kw) -> tuple[torch.Tensor, ...]:
    h = hidden.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    loss = fn(h, w, target, **kw)
    dh, dw = torch.autograd.grad(loss, (h, w), torch.tensor(dloss, dtype=loss.dtype, device=loss.device))
    return loss.detach(), dh, dw


def _inputs(tokens: int, hidden: int, vocab: int, dtype=torch.float64, seed: int = 0, ignored: float = 0.25):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=g, dtype=torch.float64) / hidden**0.5
    t = torch.randint(0, vocab, (tokens,), generator=g)
    t[torch.rand(tokens, generator=g) < ignored] = -100
    t[0] = t[0].clamp_min(0)
    return h.to(device, dtype), w.to(device, dtype), t.to(device)


def test_spec_validates() -> None:
    assert isinstance(SPEC, KernelSpec) and SPEC.name == "fused_linear_cross_entropy"
    assert SPEC.module == "kernelnotes.kernels.fused_linear_cross_entropy"
    assert SPEC.backward and SPEC.description
    assert set(SPEC.dtypes) == set(SPEC.tolerances) == {"float32", "float16", "bfloat16", "float64"}
    for ex in SPEC.examples(device, torch.bfloat16, 0):
        h, w, _ = ex.args
        assert SPEC.flops(*ex.args) == 2.0 * h.shape[0] * h.shape[1] * w.shape[0]
        assert SPEC.bytes(*ex.args) > 0
        out, ref = SPEC.implementation(*ex.args), SPEC.reference(*ex.args)
        assert out.shape == ref.shape == () and out.dtype == ref.dtype == torch.bfloat16, ex.label


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_forward_and_backward(dtype: torch.dtype) -> None:
    tol = SPEC.tolerances[dtype_name(dtype)]
    for seed, dloss in ((0, 1.0), (1, -2.5)):  # the upstream gradient scales both gradients
        for ex in SPEC.examples(device, dtype, seed):
            what = f"{ex.label} seed={seed}"
            loss, dh, dw = _loss_and_grads(SPEC.implementation, *ex.args, dloss)
            ref, dh_ref, dw_ref = _loss_and_grads(SPEC.reference, *ex.args, dloss, upcast=True)
            low, dh_low, dw_low = _loss_and_grads(SPEC.reference, *ex.args, dloss, upcast=False)
            assert loss.dtype == dh.dtype == dw.dtype == dtype
            assert_matches(loss, ref, low, tol, what=f"loss {what}")
            assert_matches(dh, dh_ref, dh_low, tol, grad=True, what=f"dhidden {what}")
            assert_matches(dw, dw_ref, dw_low, tol, grad=True, what=f"dweight {what}")


@pytest.mark.parametrize("chunk_size", [2, 64])
def test_gradcheck_float64(chunk_size: int) -> None:
    # Ragged token chunks (chunk 2 of 5 tokens) and vocabulary blocks (40 classes, blocks of 16),
    # with an ignored target; fast mode (random projections of the Jacobian) keeps the
    # interpreter's launches few.
    h, w, t = _inputs(5, 4, 40, seed=3)
    t[1] = -100
    assert mod._vocab_block(5, 40, 2) < 40 or not mod.INTERPRET
    h.requires_grad_(True)
    w.requires_grad_(True)
    fn = functools.partial(mod.fused_linear_cross_entropy, target=t, chunk_size=chunk_size)
    assert torch.autograd.gradcheck(
        lambda a, b: fn(a, b), (h, w), eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True
    )


def test_chunking_does_not_change_the_result() -> None:
    h, w, t = _inputs(37, 16, 700, seed=4)
    ref = F.cross_entropy(h @ w.t(), t)
    results = [
        _loss_and_grads(mod.fused_linear_cross_entropy, h, w, t, 0.5, chunk_size=c) for c in (1, 5, 37, 1000)
    ]
    torch.testing.assert_close(results[0][0], ref, rtol=1e-12, atol=1e-12)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_the_logits_never_exist_at_once() -> None:
    """Every tensor the op allocates, forward and backward, is far smaller than (tokens, vocab)."""

    class Largest(TorchDispatchMode):
        """The largest new storage any torch op returns (views, in-place ops and the Triton
        interpreter's copies of its arguments back into themselves allocate nothing)."""

        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = [a for a in [*args, *(kwargs or {}).values()] if isinstance(a, torch.Tensor)]
            seen = {a.untyped_storage().data_ptr() for a in inputs}
            for o in out if isinstance(out, tuple | list) else (out,):
                if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in seen:
                    Largest.numel = max(Largest.numel, o.untyped_storage().nbytes() // o.element_size())
            return out

    tokens, hidden, vocab = 256, 32, 2000
    h, w, t = _inputs(tokens, hidden, vocab, dtype=torch.float32, seed=5)
    h.requires_grad_(True)
    w.requires_grad_(True)
    with Largest():
        loss = mod.fused_linear_cross_entropy(h, w, t)
        loss.backward()
    # The largest tensors are the gradient of the weight and the (chunk, vocab) / (tokens, block) tiles.
    assert Largest.numel <= max(vocab * hidden, tokens * vocab // 8), Largest.numel
    torch.testing.assert_close(loss, F.cross_entropy(h.detach() @ w.detach().t(), t))
    # The probe sees a full (tokens, vocab) buffer when there is one: a single chunk of all tokens.
    Largest.numel = 0
    with Largest(), torch.no_grad():
        mod.fused_linear_cross_entropy(h, w, t, chunk_size=tokens)
    assert Largest.numel == tokens * vocab


def test_targets_are_validated_like_torch() -> None:
    h, w, _ = _inputs(4, 8, 5, dtype=torch.float32)
    for bad in (5, -1, 50):
        t = torch.tensor([0, bad, 1, 2], device=device)
        with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
            mod.fused_linear_cross_entropy(h, w, t)
        with pytest.raises(IndexError):
            F.cross_entropy(h @ w.t(), t)  # the behaviour copied
    # A custom ignore_index outside [0, V) is not an error, and ignored rows do not count.
    t = torch.tensor([0, 9, 4, 9], device=device)
    torch.testing.assert_close(
        mod.fused_linear_cross_entropy(h, w, t, ignore_index=9), F.cross_entropy(h @ w.t(), t, ignore_index=9)
    )
    # Every target ignored: 0/0 = nan, as in torch.
    assert torch.isnan(mod.fused_linear_cross_entropy(h, w, torch.full((4,), -100, device=device)))


def test_rejects_bad_arguments() -> None:
    h, w, t = _inputs(4, 8, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match="expected hidden"):
        mod.fused_linear_cross_entropy(h, w.t(), t)
    with pytest.raises(ValueError, match="expected target"):
        mod.fused_linear_cross_entropy(h, w, t[:3])
    with pytest.raises(TypeError, match="share a float dtype"):
        mod.fused_linear_cross_entropy(h, w.double(), t)
    with pytest.raises(TypeError, match="int64"):
        mod.fused_linear_cross_entropy(h, w, t.float())
    with pytest.raises(ValueError, match="chunk_size"):
        mod.fused_linear_cross_entropy(h, w, t, chunk_size=0)


def test_strided_inputs_and_partial_gradients() -> None:
    g = torch.Generator().manual_seed(6)
    wide = torch.randn(29, 40, generator=g, dtype=torch.float64).to(device)
    h = wide[:, 3:27]  # row stride 40
    w = torch.randn(24, 150, generator=g, dtype=torch.float64).to(device).t()  # (150, 24), column-major
    t = torch.randint(0, 150, (29,), generator=g).to(device)
    assert not h.is_contiguous() and not w.is_contiguous()
    loss, dh, dw = _loss_and_grads(mod.fused_linear_cross_entropy, h, w, t, 1.0, chunk_size=8)
    ref, dh_ref, dw_ref = _loss_and_grads(mod.fused_linear_cross_entropy_reference, h, w, t, 1.0)
    torch.testing.assert_close((loss, dh, dw), (ref, dh_ref, dw_ref), rtol=1e-10, atol=1e-12)
    # Only hidden needs a gradient (a frozen embedding): d weight is not computed.
    hh = h.detach().clone().requires_grad_(True)
    mod.fused_linear_cross_entropy(hh, w, t).backward()
    torch.testing.assert_close(hh.grad, dh_ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(mod.fused_linear_cross_entropy(h, w, t), ref)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])  # each has its own GPU tiles
def test_gpu_tiling_matches_the_reference(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "_block_sizes", functools.partial(mod._block_sizes, gpu=True))
    monkeypatch.setattr(mod, "MIN_CHUNK", 128)
    assert mod._block_sizes(torch.bfloat16) != mod._block_sizes.func(torch.bfloat16, gpu=False)
    tol = SPEC.tolerances[dtype]
    for ex in SPEC.examples(device, getattr(torch, dtype), 0)[1:3]:
        loss, dh, dw = _loss_and_grads(SPEC.implementation, *ex.args, 1.0)
        ref, dh_ref, dw_ref = _loss_and_grads(SPEC.reference, *ex.args, 1.0)
        low, dh_low, dw_low = _loss_and_grads(SPEC.reference, *ex.args, 1.0, upcast=False)
        assert_matches(loss, ref, low, tol, what=f"loss {ex.label}")
        assert_matches(dh, dh_ref, dh_low, tol, grad=True, what=f"dhidden {ex.label}")
        assert_matches(dw, dw_ref, dw_low, tol, grad=True, what=f"dweight {ex.label}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_name)
@pytest.mark.parametrize("shape", [pytest.param((4096, 2048, 32000), marks=gpu)])
def test_gpu_realistic_size(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    tol = SPEC.tolerances[dtype_name(dtype)]
    h, w, t = _inputs(*shape, dtype=dtype, seed=7)
    loss, dh, dw = _loss_and_grads(SPEC.implementation, h, w, t, 1.0)
    ref, dh_ref, dw_ref = _loss_and_grads(SPEC.reference, h, w, t, 1.0)
    low, dh_low, dw_low = _loss_and_grads(SPEC.reference, h, w, t, 1.0, upcast=False)
    assert_matches(loss, ref, low, tol)
    assert_matches(dh, dh_ref, dh_low, tol, grad=True)
    assert_matches(dw, dw_ref, dw_low, tol, grad=True)


def test_benchmark_dry_run_runs_the_training_steps(tmp_path) -> None:
    """benchmarks/kernels.py times the new ops as forward + backward; its dry run must keep working."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"
    spec = importlib.util.spec_from_file_location("kernelnotes_bench_script_flce", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    ops = ("fused_linear_cross_entropy", "moe_router", "moe_grouped_matmul")
    assert set(ops) <= bench.TRAINING_STEP and set(ops) <= set(bench.SIZE_SWEEPS)
    payload = bench.main(
        ["--dry-run", "--ops", ",".join(ops), "--compile-backend", "none", "--out", str(tmp_path)]
    )
    rows = {r["op"]: r for r in payload["results"]}
    assert set(rows) == set(ops)
    for op, row in rows.items():
        assert row["error"] is None, (op, row["error"])
        assert row["triton_ms"] > 0 and row["eager_ms"] > 0
