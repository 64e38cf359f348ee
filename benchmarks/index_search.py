"""Benchmark: index and search N synthetic notes (mixed Chinese/English, ~3 KB each).

    python benchmarks/index_search.py            # 10,000 notes, the issue's targets
    python benchmarks/index_search.py --notes 200 --queries 50   # quick run (the test suite uses it)

Prints a table of medians; every figure is measured in this one run, side by side.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kernelnotes.index import Index
from kernelnotes.parse import IncludeResolver

ZH_WORDS = (
    "扩散 模型 采样 梯度 显存 注意力 分块 归一化 激活 函数 训练 推理 精度 溢出 缩放 矩阵 乘法 内核 并行 "
    "序列 打包 线性 状态 空间 扫描 损失 优化 随机 近似 收敛 噪声 方差 均值 反向 传播 计算 图 检查点 重计算 "
    "数据 分布 概率 密度 分数 匹配 引导 条件 上采样 卷积 感受野 参数 张量 批次 向量 标量 误差 容差 基准"
).split()
EN_WORDS = (
    "softmax attention FlashAttention kernel Triton tiling online running max sum gradient checkpoint memory "
    "bandwidth throughput latency diffusion sampler DDIM DDPM score matching guidance LayerNorm RMSNorm GELU "
    "SiLU SwiGLU packing varlen cu_seqlens linear recurrence scan Mamba precision bf16 fp16 fp32 overflow"
).split()
TAGS = (
    "attention softmax FlashAttention Triton GPU 激活函数 归一化 扩散模型 采样 SDE 混合精度 显存 梯度 "
    "梯度检查点 自动微分 分布式 线性注意力 SSM 序列打包 上采样 卷积 Transformer 强化学习 优化"
).split()
CATEGORIES = ("深度学习", "生成模型", "强化学习", "工程实践", "算法题")


def sentence(rng: random.Random) -> str:
    words = [
        rng.choice(ZH_WORDS) if rng.random() < 0.7 else f" {rng.choice(EN_WORDS)} "
        for _ in range(rng.randint(6, 14))
    ]
    return "".join(words).strip() + "。"


def synthetic_note(rng: random.Random, i: int) -> str:
    tags = rng.sample(TAGS, rng.randint(3, 6))
    title = f"{rng.choice(ZH_WORDS)}{rng.choice(ZH_WORDS)}与 {rng.choice(EN_WORDS)} 笔记 {i}"
    parts = [
        "---",
        f"title: {title}",
        f"date: 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"categories: [{rng.choice(CATEGORIES)}]",
        "tags: [" + ", ".join(tags) + "]",
        f"slug: note-{i}",
        "---",
        "",
        f"# {title}",
        "",
        "".join(sentence(rng) for _ in range(3)),
        "",
        "<!-- more -->",
        "",
    ]
    size = sum(len(p.encode()) for p in parts)
    block = 0
    while size < 3000:
        if block < 3 and rng.random() < 0.25:
            code = f'```python exec="on" session="s"\nx{block} = torch.randn({rng.randint(2, 64)}, 8)\nprint(x{block}.sum())\n```'
            parts += [code, ""]
            block += 1
        text = "".join(sentence(rng) for _ in range(rng.randint(2, 5)))
        parts += [text, ""]
        size += len(text.encode()) + 40
    return "\n".join(parts)


def queries(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.3:
            out.append(rng.choice(ZH_WORDS)[:1])  # one character
        elif kind < 0.6:
            out.append(rng.choice(ZH_WORDS))  # two characters
        elif kind < 0.8:
            out.append(f"{rng.choice(EN_WORDS)} {rng.choice(ZH_WORDS)}")  # mixed
        else:
            out.append(f"{rng.choice(EN_WORDS)} {rng.choice(EN_WORDS)}")
    return out


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run(n_notes: int, n_queries: int, seed: int = 0) -> list[tuple[str, float, str, str]]:
    """Return rows (measure, seconds, target, detail)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        notes = root / "notes"
        notes.mkdir()
        for i in range(n_notes):
            sub = notes / f"part{i % 20:02d}"
            sub.mkdir(exist_ok=True)
            (sub / f"note-{i}.md").write_text(synthetic_note(rng, i), encoding="utf-8")
        megabytes = sum(p.stat().st_size for p in notes.rglob("*.md")) / 1e6
        index = Index(root / "index.db")
        resolver = lambda: IncludeResolver(root, root / "snippets")
        full, report = timed(lambda: index.update(notes, resolver()))
        assert len(report.added) == n_notes, report.problems[:3]
        again, report = timed(lambda: index.update(notes, resolver()))
        assert report.parsed == 0
        target = notes / "part03" / "note-3.md"
        target.write_text(
            target.read_text(encoding="utf-8") + "\n新加的一段：采样与扩散。\n", encoding="utf-8"
        )
        one, report = timed(lambda: index.update(notes, resolver()))
        assert report.updated == ["part03/note-3.md"]
        latencies, found = [], 0
        for q in queries(rng, n_queries):
            seconds, hits = timed(lambda q=q: index.search(q, limit=10))
            latencies.append(seconds)
            found += bool(hits)
        latencies.sort()
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return [
        (
            f"full index of {n_notes:,} notes ({megabytes:.1f} MB)",
            full,
            "≤ 5 s at 10k",
            f"{n_notes / full:,.0f} notes/s",
        ),
        ("re-index, nothing changed", again, "≤ 0.5 s", ""),
        ("re-index after one note changed", one, "≤ 0.2 s", ""),
        (
            f"search p50 ({n_queries} mixed queries)",
            statistics.median(latencies),
            "≤ 10 ms",
            f"{found}/{n_queries} found hits",
        ),
        ("search p95", p95, "", ""),
    ]


def main(argv: list[str] | None = None) -> list[tuple[str, float, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = run(args.notes, args.queries, args.seed)
    table = Table("measure", "time", "target", "detail", title="KernelNotes index and search")
    for name, seconds, target, detail in rows:
        shown = f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"
        table.add_row(name, shown, target, detail)
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
