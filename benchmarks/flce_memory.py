"""Peak memory of fused linear cross-entropy against `F.cross_entropy(h @ W.T, y)`, forward + backward.

    python benchmarks/flce_memory.py [--tokens 2048] [--hidden 512] [--vocab 32000] [--dtype float32]

Each variant runs in a fresh Python process (so one variant's freed memory, allocator caches or
imported modules never count for another) that:

1. imports torch and KernelNotes, builds hidden (T, H), weight (V, H) and targets with
   `requires_grad` on hidden and weight, and runs the variant once on a tiny problem (lazy
   initialisation, the Triton interpreter's first-call costs);
2. resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, value 5) and reads the current RSS;
3. computes the loss and its backward (gradients of hidden and weight), then reads the peak RSS
   (`VmHWM`).

The growth (peak minus the RSS before step 3) is what the step cost on top of its inputs; it
includes the gradients themselves (d weight is V x H, as big as the weight), which both variants
must produce. Variants:

- `torch`: `F.cross_entropy(h @ W.T, y).backward()` — the (T, V) logits, log-softmax and its
  gradient exist at once;
- `fused`: `kernelnotes.kernels.fused_linear_cross_entropy` — without a GPU its Triton kernels run
  under Triton's interpreter on CPU tensors, the same code path the GPU takes;
- `chunked-torch`: the same chunked algorithm written with torch ops (`chunked_torch_flce` below),
  for comparison with the kernels' memory (and as the fast CPU cross-check: the interpreter is slow).

Linux only (reads /proc). Prints a table; exits 1 when the fused variant misses the 4x target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

TARGET = 4.0  # the goal: at least 4x less peak memory than the unfused torch step
VARIANTS = ("torch", "fused", "chunked-torch")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def chunked_torch_flce(hidden: Any, weight: Any, target: Any, chunk: int, block: int) -> Any:
    """The op's algorithm in torch ops (fp32/fp64 inputs), returning the loss with .grad set on
    hidden and weight: forward over token chunks (log-sum-exp per token), backward over vocabulary
    blocks, every temporary updated in place as the kernels do in registers."""
    import torch

    T, V = hidden.shape[0], weight.shape[0]
    with torch.no_grad():
        lse = torch.empty(T, dtype=hidden.dtype)
        total = torch.zeros((), dtype=hidden.dtype)
        valid = target != -100
        safe = target.clamp_min(0)
        for s in range(0, T, chunk):
            logits = hidden[s : s + chunk] @ weight.t()
            picked = logits.gather(1, safe[s : s + chunk, None])[:, 0]
            m = logits.max(1).values
            lse[s : s + chunk] = m + logits.sub_(m[:, None]).exp_().sum(1).log()  # in place: one buffer
            total += ((lse[s : s + chunk] - picked) * valid[s : s + chunk]).sum()
            del logits
        n = valid.sum()
        scale = (valid / n).to(hidden.dtype)
        dh = torch.zeros_like(hidden)
        dw = torch.empty_like(weight)
        for v0 in range(0, V, block):
            w = weight[v0 : v0 + block]
            g = (hidden @ w.t()).sub_(lse[:, None]).exp_()
            rows = torch.nonzero((target >= v0) & (target < v0 + block))[:, 0]
            g[rows, target[rows] - v0] -= 1.0
            g.mul_(scale[:, None])
            torch.mm(g.t(), hidden, out=dw[v0 : v0 + block])
            dh.addmm_(g, w)
            del g
        hidden.grad, weight.grad = dh, dw
    return total / n


def _child(variant: str, tokens: int, hidden_size: int, vocab: int, dtype_name: str) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from kernelnotes.kernels import fused_linear_cross_entropy as flce

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)

    def step(h: Any, w: Any, y: Any) -> float:
        if variant == "torch":
            loss = F.cross_entropy(h @ w.t(), y)
            loss.backward()
        elif variant == "fused":
            loss = flce.fused_linear_cross_entropy(h, w, y)
            loss.backward()
        else:
            chunk = flce.default_chunk_size(h.shape[0], h.shape[1], w.shape[0])
            loss = chunked_torch_flce(h, w, y, chunk, flce._vocab_block(h.shape[0], w.shape[0], chunk))
        return float(loss)

    def inputs(t: int, hs: int, v: int) -> tuple[Any, Any, Any]:
        h = torch.randn(t, hs, dtype=dtype).requires_grad_(True)
        w = (torch.randn(v, hs, dtype=dtype) / hs**0.5).requires_grad_(True)
        return h, w, torch.randint(0, v, (t,))

    step(*inputs(64, 32, 300))  # warm-up: lazy initialisation is not the step's memory
    h, w, y = inputs(tokens, hidden_size, vocab)
    import gc

    gc.collect()
    exact = _reset_peak()
    before = _rss_kib("VmRSS")
    start = time.perf_counter()
    loss = step(h, w, y)
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    grads_ok = h.grad is not None and w.grad is not None
    return {
        "variant": variant,
        "loss": loss,
        "growth_mib": (peak - before) / 1024,
        "seconds": seconds,
        "peak_reset": exact,
        "grads": grads_ok,
    }


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--tokens",
        str(args.tokens),
        "--hidden",
        str(args.hidden),
        "--vocab",
        str(args.vocab),
        "--dtype",
        args.dtype,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.tokens, args.hidden, args.vocab, args.dtype)))
        return 0

    from rich.console import Console
    from rich.table import Table

    rows = [run_variant(v, args) for v in args.variants.split(",") if v]
    base = next((r["growth_mib"] for r in rows if r["variant"] == "torch"), None)
    table = Table(
        title=f"Peak RSS growth of loss + backward: tokens {args.tokens}, hidden {args.hidden}, "
        f"vocab {args.vocab}, {args.dtype} (each variant in a fresh process)"
    )
    for col in ("variant", "peak growth MiB", "vs torch", "loss", "time s"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        ratio = f"{base / r['growth_mib']:.1f}x less" if base and r["variant"] != "torch" else "-"
        table.add_row(
            r["variant"], f"{r['growth_mib']:.1f}", ratio, f"{r['loss']:.5f}", f"{r['seconds']:.1f}"
        )
    Console(width=120).print(table)
    weight_mib = args.vocab * args.hidden * 4 / 2**20 * (0.5 if args.dtype in ("float16", "bfloat16") else 1)
    print(f"(d weight alone, which every variant must allocate: {weight_mib:.1f} MiB)")
    if not all(r["peak_reset"] for r in rows):
        print(
            "warning: /proc/self/clear_refs unavailable: growth measured against the process's earlier peak"
        )
    fused = next((r for r in rows if r["variant"] == "fused"), None)
    if base and fused:
        ok = base / fused["growth_mib"] >= TARGET
        print(f"target >= {TARGET:.0f}x less than torch: {'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
