"""Benchmark every registered kernel against torch eager and torch.compile.

    python benchmarks/kernels.py [--ops a,b] [--dtypes float32,bfloat16] [--dry-run] [--out DIR]

For each KernelSpec (loaded through the plugin system, so third-party kernels are benchmarked too)
and each dtype, three contenders run on the same inputs:

- ``triton``: ``spec.implementation``,
- ``eager``: ``spec.reference(..., upcast=False)``, i.e. torch computing in the input dtype,
- ``compile``: ``torch.compile`` of that same eager reference.

Inputs. On a GPU an op is timed over a size sweep: ``SIZE_SWEEPS`` below maps an op name to a
function ``(device, dtype) -> list[Example]`` with realistic large shapes; an op without an entry is
timed on the spec's own examples (which, by convention, add larger shapes when the device is not
CPU). In ``--dry-run`` mode (the mode used on CPU and in CI) each op runs once on its smallest
registered example, timed with ``time.perf_counter``; the numbers mean nothing, the point is that the
script keeps working as kernels are added.

Metrics. GPU timings are ``triton.testing.do_bench`` medians. Matmul/attention-like ops report
TFLOP/s (``spec.flops / time``), everything else GB/s (``spec.bytes / time``), each also as a fraction
of this GPU's measured peak (a device-to-device copy for bandwidth, a large bf16 matmul for compute).
Peak memory of one call (``torch.cuda.max_memory_allocated`` above what was allocated before it) is
reported on GPU for the Triton kernel and torch eager, "n/a" on CPU. Ops in ``TRAINING_STEP`` (fused
linear cross-entropy, the MoE ops) are timed and measured as forward + backward of their first output.

Output. A rich table on stdout and a JSON file ``<device>-<date>.json`` (device = GPU name or "cpu")
in ``benchmarks/results/``; a dry run writes to ``--out`` (default: a fresh temporary directory) so
that CI never dirties the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Ops whose headline number is TFLOP/s; the rest are memory-bound and report GB/s.
COMPUTE_BOUND = frozenset({"matmul", "flash_attention", "varlen_attention", "linear_attention"})


# ----------------------------------------------------------------------------------------------
# GPU size sweeps, keyed by op name


def _sweep_selective_scan(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernels.selective_scan import make_inputs
    from kernelnotes.kernelspec import Example

    # Mamba-like widths (d_inner = 2 * d_model, state 16). Sequences stay short-ish because the eager
    # reference is a Python loop over time, which torch.compile unrolls.
    shapes = [(4, 1536, 64, 16), (8, 2048, 128, 16), (8, 4096, 128, 16)]
    return [
        Example(args=make_inputs(*s, device=device, dtype=dtype, seed=0), label=f"B,D,L,N={s}")
        for s in shapes
    ]


def _sweep_pixel_shuffle(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernelspec import Example

    shapes = [((8, 256, 64, 64), 2), ((16, 256, 128, 128), 2), ((8, 576, 128, 128), 3)]
    return [
        Example(args=(torch.randn(s, device=device, dtype=dtype), r), label=f"{s} r={r}") for s, r in shapes
    ]


def _sweep_upsample_bilinear(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernelspec import Example

    cases = [
        ((8, 64, 64, 64), {"scale_factor": 2.0, "align_corners": False}),
        ((16, 128, 128, 128), {"scale_factor": 2.0, "align_corners": False}),
        ((8, 64, 256, 256), {"size": (512, 512), "align_corners": True}),
    ]
    return [
        Example(args=(torch.randn(s, device=device, dtype=dtype),), kwargs=kw, label=f"{s} {kw}")
        for s, kw in cases
    ]


def _sweep_ddim_step(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernelspec import Example

    out = []
    for shape in [(16, 4, 64, 64), (32, 4, 128, 128), (16, 3, 512, 512)]:
        x, eps, noise = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))
        out.append(
            Example(args=(x, eps, 0.5, 0.6), kwargs={"eta": 1.0, "noise": noise}, label=f"{shape} eta=1")
        )
    return out


def _sweep_log_softmax(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernelspec import Example

    # (tokens, vocab) of language-model heads: the single-block kernel up to 8192, the online one above.
    shapes = [(8192, 4096), (4096, 32_000), (2048, 128_256)]
    return [
        Example(args=(3.0 * torch.randn(s, device=device, dtype=dtype),), label=f"{s[0]}x{s[1]}")
        for s in shapes
    ]


def _sweep_sigmoid(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernelspec import Example

    # Gates of an MLP / a mixture-of-experts router: (tokens, width).
    shapes = [(4096, 4096), (8192, 14_336), (16_384, 16_384)]
    return [
        Example(args=(torch.randn(s, device=device, dtype=dtype),), label=f"{s[0]}x{s[1]}") for s in shapes
    ]


def _sweep_fused_linear_cross_entropy(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernelspec import Example

    # (tokens, hidden, vocab): Llama-3-8B's head at 8192 tokens (the memory target), and a
    # 32k-vocabulary model. Timed and measured as loss + backward (see TRAINING_STEP).
    out = []
    for t, h, v in [(8192, 4096, 128256), (8192, 4096, 32000)]:
        hidden = torch.randn(t, h, device=device, dtype=dtype)
        weight = torch.randn(v, h, device=device, dtype=dtype) / h**0.5
        target = torch.randint(0, v, (t,), device=device)
        out.append(Example(args=(hidden, weight, target), label=f"T{t} H{h} V{v} +bwd"))
    return out


def _sweep_moe_router(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernels.moe import distinct_logits
    from kernelnotes.kernelspec import Example

    g = torch.Generator().manual_seed(0)
    cases = [(16384, 8, 2, True), (16384, 64, 6, True), (16384, 256, 8, False)]  # Mixtral, DeepSeek
    return [
        Example(
            args=(distinct_logits(t, e, g).to(device, dtype), k),
            kwargs={"normalize": n},
            label=f"T{t} E{e} k{k} +bwd",
        )
        for t, e, k, n in cases
    ]


def _sweep_moe_grouped_matmul(device: str, dtype: torch.dtype) -> list[Any]:
    from kernelnotes.kernelspec import Example

    out = []
    # (experts, K, N, tokens x top_k): Mixtral-8x7B's up projection, DeepSeek-MoE-16B's experts.
    for experts, k, n, rows in [(8, 4096, 14336, 16384), (64, 2048, 1408, 49152)]:
        counts = torch.distributions.Dirichlet(torch.full((experts,), 4.0)).sample() * rows
        sizes = counts.floor().long()
        sizes[0] += rows - int(sizes.sum())  # uneven groups that add up to `rows`
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]).to(device)
        x = torch.randn(rows, k, device=device, dtype=dtype)
        w = torch.randn(experts, k, n, device=device, dtype=dtype) / k**0.5
        out.append(Example(args=(x, w, offsets), label=f"E{experts} K{k} N{n} rows{rows} +bwd"))
    return out


SIZE_SWEEPS: dict[str, Callable[[str, torch.dtype], list[Any]]] = {
    "log_softmax": _sweep_log_softmax,
    "sigmoid": _sweep_sigmoid,
    "selective_scan": _sweep_selective_scan,
    "pixel_shuffle": _sweep_pixel_shuffle,
    "upsample_bilinear": _sweep_upsample_bilinear,
    "ddim_step": _sweep_ddim_step,
    "fused_linear_cross_entropy": _sweep_fused_linear_cross_entropy,
    "moe_router": _sweep_moe_router,
    "moe_grouped_matmul": _sweep_moe_grouped_matmul,
}

# Ops timed (and their peak memory measured) as forward + backward: their point is training. The
# fused cross-entropy's memory target is against `F.cross_entropy(h @ W.T, y)` with its backward,
# which is what the eager contender then runs.
TRAINING_STEP = frozenset({"fused_linear_cross_entropy", "moe_router", "moe_grouped_matmul"})


def _with_backward(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn's forward and the backward of its first output w.r.t. the floating-point tensor inputs."""

    def step(*args: Any, **kwargs: Any) -> Any:
        leaves = [
            a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args
        ]
        out = fn(*leaves, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        first.backward(torch.ones_like(first))
        return first

    return step


# ----------------------------------------------------------------------------------------------
# Helpers


def _tensors(example: Any) -> list[torch.Tensor]:
    values = [*example.args, *example.kwargs.values()]
    return [v for v in values if isinstance(v, torch.Tensor)]


def _smallest(examples: Sequence[Any]) -> Any:
    return min(examples, key=lambda ex: sum(t.numel() for t in _tensors(ex)))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn: Callable[[], Any], device: str, dry_run: bool) -> float:
    """Median of do_bench on GPU; one call with perf_counter in dry-run mode."""
    if dry_run:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _peak_mem_mib(fn: Callable[[], Any], device: str) -> float | None:
    """Memory one call allocates above what was live before it (GPU only)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def measure_peaks(device: str) -> dict[str, float] | None:
    """This GPU's achievable bandwidth (d2d copy, GB/s) and bf16 matmul throughput (TFLOP/s)."""
    if device != "cuda":
        return None
    import triton.testing

    def copy_bandwidth() -> float:
        src = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB, freed on return
        dst = torch.empty_like(src)
        ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
        return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9  # read + write

    bandwidth = copy_bandwidth()
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = triton.testing.do_bench(lambda: a @ b, return_mode="median")
    tflops = 2 * n**3 / (ms * 1e-3) / 1e12
    return {"bandwidth_gbps": bandwidth, "bf16_matmul_tflops": tflops}


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


# ----------------------------------------------------------------------------------------------
# Benchmark one spec


def _throughput(spec: Any, example: Any, ms: float | None) -> tuple[str, float | None]:
    """(unit, value) for the spec's headline metric at time `ms`."""
    compute = spec.name in COMPUTE_BOUND
    counter = spec.flops if compute else spec.bytes
    unit = "TFLOP/s" if compute else "GB/s"
    if counter is None or not ms:
        return unit, None
    work = float(counter(*example.args, **example.kwargs))
    scale = 1e12 if compute else 1e9
    return unit, work / (ms * 1e-3) / scale


def bench_spec(
    spec: Any,
    dtype: torch.dtype,
    device: str,
    *,
    dry_run: bool,
    compile_backend: str | None,
    peaks: dict[str, float] | None,
) -> list[dict[str, Any]]:
    from kernelnotes.kernels._common import dtype_name

    if dry_run or spec.name not in SIZE_SWEEPS:
        examples = list(spec.examples(device, dtype, 0))
        examples = [_smallest(examples)] if dry_run and examples else examples
    else:
        examples = SIZE_SWEEPS[spec.name](device, dtype)

    rows = []
    for ex in examples:
        row: dict[str, Any] = {"op": spec.name, "dtype": dtype_name(dtype), "input": ex.label, "error": None}
        args, kwargs = ex.args, dict(ex.kwargs)

        def eager(*a: Any, _ref: Callable[..., Any] = spec.reference, **k: Any) -> Any:
            return _ref(*a, upcast=False, **k)

        training = spec.name in TRAINING_STEP
        wrap = _with_backward if training else (lambda f: f)
        contenders: dict[str, Callable[..., Any] | None] = {
            "triton": wrap(spec.implementation),
            "eager": wrap(eager),
        }
        if compile_backend:
            # A fresh dynamo cache per input: a sweep would otherwise hit the recompile limit and
            # silently fall back to eager.
            torch._dynamo.reset()
            contenders["compile"] = wrap(torch.compile(eager, backend=compile_backend))
        else:
            contenders["compile"] = None
        try:
            for name, fn in contenders.items():
                if fn is None:
                    row[f"{name}_ms"] = None
                    continue
                call = functools.partial(fn, *args, **kwargs)
                if name == "compile" or not dry_run:
                    call()  # compile / JIT-warm outside the timed region
                row[f"{name}_ms"] = _time_ms(call, device, dry_run)
                row[f"{name}_peak_mib"] = _peak_mem_mib(call, device)
        except Exception as exc:  # one broken op must not hide the others' numbers
            row["error"] = f"{type(exc).__name__}: {exc}"
        unit, value = _throughput(spec, ex, row.get("triton_ms"))
        row["unit"] = unit
        row["throughput"] = value
        peak_key = "bf16_matmul_tflops" if unit == "TFLOP/s" else "bandwidth_gbps"
        row["fraction_of_peak"] = value / peaks[peak_key] if (peaks and value is not None) else None
        for other in ("eager", "compile"):
            t, o = row.get("triton_ms"), row.get(f"{other}_ms")
            row[f"speedup_vs_{other}"] = o / t if (t and o) else None
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Output


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(payload: dict[str, Any], console: Any | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
            console = Console(width=200)
    peaks = payload["peaks"]
    title = f"KernelNotes kernels on {payload['device']} ({payload['date']})"
    if payload["dry_run"]:
        title += " [dry run: one call, timings meaningless]"
    table = Table(title=title)
    for col in ("op", "dtype", "input"):
        table.add_column(col, no_wrap=col != "input")
    for col in (
        "triton ms",
        "eager ms",
        "compile ms",
        "x eager",
        "x compile",
        "throughput",
        "% peak",
        "peak MiB",
        "eager MiB",
    ):
        table.add_column(col, justify="right", no_wrap=True)
    for r in payload["results"]:
        throughput = "n/a" if r["throughput"] is None else f"{r['throughput']:.3g} {r['unit']}"
        frac = "n/a" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.0f}%"
        cells = [
            r["op"],
            r["dtype"],
            r["input"] if not r["error"] else f"{r['input']} [red]{r['error']}[/red]",
            _fmt(r.get("triton_ms")),
            _fmt(r.get("eager_ms")),
            _fmt(r.get("compile_ms")),
            _fmt(r.get("speedup_vs_eager"), ".2f"),
            _fmt(r.get("speedup_vs_compile"), ".2f"),
            throughput,
            frac,
            _fmt(r.get("triton_peak_mib"), ".1f"),
            _fmt(r.get("eager_peak_mib"), ".1f"),
        ]
        table.add_row(*cells)
    console.print(table)
    if peaks:
        console.print(
            f"peak: {peaks['bandwidth_gbps']:.0f} GB/s (d2d copy), "
            f"{peaks['bf16_matmul_tflops']:.0f} TFLOP/s (bf16 matmul)"
        )


# ----------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ops", default="", help="comma-separated spec names (default: all registered)")
    p.add_argument(
        "--dtypes",
        default="",
        help="comma-separated dtypes (default: float32,bfloat16; float32 in a dry run)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="one call per op on its smallest example (CPU/CI mode)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="directory for the JSON (default: benchmarks/results, or a temp dir in a dry run)",
    )
    p.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile backend (default: inductor on GPU; 'eager' in a dry run, which exercises dynamo "
        "without a C++ toolchain); 'none' skips torch.compile",
    )
    p.add_argument("--plugins-dir", default=None, help="also load plugins from this folder")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from kernelnotes.kernels._common import to_dtype
    from kernelnotes.plugins.manager import get_plugin_manager
    from kernelnotes.registry import load_kernels

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dry_run = args.dry_run
    if device == "cpu" and not dry_run:
        print("no CUDA GPU: running in --dry-run mode (CPU timings of the Triton interpreter mean nothing)")
        dry_run = True

    specs = load_kernels(get_plugin_manager(args.plugins_dir))
    wanted = [s.strip() for s in args.ops.split(",") if s.strip()]
    unknown = [name for name in wanted if name not in specs]
    if unknown:
        raise SystemExit(f"unknown ops {unknown}; registered: {sorted(specs)}")
    selected = [specs[name] for name in (wanted or sorted(specs))]

    dtypes = [s.strip() for s in args.dtypes.split(",") if s.strip()] or (
        ["float32"] if dry_run else ["float32", "bfloat16"]
    )
    backend = args.compile_backend or ("eager" if dry_run else "inductor")
    backend = None if backend == "none" else backend

    peaks = None if dry_run else measure_peaks(device)
    results: list[dict[str, Any]] = []
    for spec in selected:
        for name in dtypes:
            if name not in spec.dtypes or device not in spec.devices:
                continue
            results.extend(
                bench_spec(
                    spec, to_dtype(name), device, dry_run=dry_run, compile_backend=backend, peaks=peaks
                )
            )

    now = dt.datetime.now()
    payload: dict[str, Any] = {
        "device": _device_name(device),
        "date": now.date().isoformat(),
        "timestamp": now.isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "compile_backend": backend,
        "peaks": peaks,
        "results": results,
    }
    print_table(payload)

    if args.out is not None:
        out_dir = Path(args.out)
    elif dry_run:
        out_dir = Path(tempfile.mkdtemp(prefix="kernelnotes-bench-"))
    else:
        out_dir = RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{_slug(payload['device'])}-{payload['date']}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    payload["path"] = str(path)
    return payload


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any(r["error"] for r in result["results"]) else 0)
