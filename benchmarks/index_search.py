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

# Notes are about topics: each topic has its own words, and every note also uses common words.
TOPICS = {
    "attention": ("注意力 分块 在线 归约 掩码", "softmax attention FlashAttention tiling"),
    "diffusion": ("扩散 去噪 采样 噪声 调度", "diffusion DDIM DDPM sampler"),
    "score": ("分数 匹配 朗之万 密度 梯度场", "score matching Langevin"),
    "guidance": ("引导 条件 分类器 无分类器", "guidance CFG classifier"),
    "norm": ("归一化 均值 方差 缩放", "LayerNorm RMSNorm rstd"),
    "activation": ("激活 门控 平滑 饱和", "GELU SiLU SwiGLU ReLU"),
    "precision": ("精度 溢出 下溢 舍入 尾数", "bf16 fp16 fp32 overflow"),
    "memory": ("显存 激活值 优化器 分片", "ZeRO memory Adam"),
    "checkpoint": ("检查点 重计算 反向 传播", "checkpoint recompute backward"),
    "autograd": ("自动微分 计算图 链式 法则", "autograd graph chain"),
    "ddp": ("分布式 通信 环形 规约", "DDP allreduce NCCL ring"),
    "packing": ("打包 填充 变长 序列", "packing varlen cu_seqlens padding"),
    "linear": ("线性 结合律 前缀 核函数", "linear kernel prefix associativity"),
    "ssm": ("状态 空间 扫描 递推 离散化", "Mamba SSM scan HiPPO"),
    "upsample": ("上采样 插值 双线性 棋盘", "bilinear PixelShuffle interpolate"),
    "receptive": ("感受野 卷积 步长 膨胀", "receptive conv stride dilation"),
    "transformer": ("残差 前馈 多头 位置", "Transformer FFN residual"),
    "rl": ("策略 价值 回报 动作 环境", "actor critic DDPG reward"),
    "sa": ("随机 近似 步长 收敛 迭代", "Robbins Monro stochastic"),
    "xgboost": ("提升 分裂 增益 叶子 二阶", "XGBoost boosting split"),
    "flow": ("流模型 可逆 雅可比 耦合", "flow NICE coupling Jacobian"),
    "matmul": ("矩阵 乘法 分块 累加 带宽", "matmul GEMM Triton bandwidth"),
    "algorithm": ("二叉树 祖先 合并 数组 指针", "LCA merge array pointer"),
    "edm": ("预条件 噪声 水平 缩放 参数化", "EDM sigma preconditioning"),
}
COMMON_ZH = (
    "我们 这里 计算 模型 训练 数据 方法 结果 公式 代码 问题 可以 需要 因为 所以 如果 那么 一个 两个 每个 "
    "时间 空间 输入 输出 参数 函数 张量 向量 矩阵 误差 实现 推导 直观 例子 下面 上面 其中 得到 表示 使用"
).split()
COMMON_EN = "tensor shape dtype kernel torch numpy batch loss step time".split()
TAGS = (
    "attention softmax FlashAttention Triton GPU 激活函数 归一化 扩散模型 采样 SDE 混合精度 显存 梯度 "
    "梯度检查点 自动微分 分布式 线性注意力 SSM 序列打包 上采样 卷积 Transformer 强化学习 优化"
).split()
CATEGORIES = ("深度学习", "生成模型", "强化学习", "工程实践", "算法题")


def sentence(rng: random.Random, topic: str) -> str:
    zh, en = (t.split() for t in TOPICS[topic])
    words = []
    for _ in range(rng.randint(6, 14)):
        r = rng.random()
        if r < 0.25:
            words.append(rng.choice(zh))
        elif r < 0.35:
            words.append(f" {rng.choice(en)} ")
        elif r < 0.9:
            words.append(rng.choice(COMMON_ZH))
        else:
            words.append(f" {rng.choice(COMMON_EN)} ")
    return "".join(words).strip() + "。"


def synthetic_note(rng: random.Random, i: int) -> str:
    topic = rng.choice(list(TOPICS))
    tags = rng.sample(TAGS, rng.randint(3, 6))
    zh, en = (t.split() for t in TOPICS[topic])
    title = f"{rng.choice(zh)}与 {rng.choice(en)}：笔记 {i}"
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
        "".join(sentence(rng, topic) for _ in range(3)),
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
        text = "".join(sentence(rng, topic) for _ in range(rng.randint(2, 5)))
        parts += [text, ""]
        size += len(text.encode()) + 40
    return "\n".join(parts)


def queries(rng: random.Random, n: int, common: bool = False) -> list[str]:
    """Topic queries as a reader types them (1-2 character words, mixed, English); or common words."""
    out = []
    for _ in range(n):
        if common:
            out.append(rng.choice(COMMON_ZH))
            continue
        zh, en = (t.split() for t in TOPICS[rng.choice(list(TOPICS))])
        kind = rng.random()
        if kind < 0.2:
            out.append(rng.choice(zh)[:1])  # one character
        elif kind < 0.6:
            out.append(rng.choice(zh))  # a word of two or more characters
        elif kind < 0.8:
            out.append(f"{rng.choice(en)} {rng.choice(zh)}")  # mixed
        else:
            out.append(" ".join(rng.sample(en, 2)))
    return out


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def search_latencies(index: Index, qs: list[str], clock=time.perf_counter) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    latencies, found = [], 0
    for q in qs:
        start = clock()
        hits = index.search(q, limit=10)
        latencies.append(clock() - start)
        found += bool(hits)
    return sorted(latencies), found


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def huge_note(rng: random.Random, megabytes: float) -> str:
    """A note of `megabytes` MB of diffusion prose (dense in 扩散, 采样, 噪声), in paragraphs."""
    paragraph = "".join(sentence(rng, "diffusion") for _ in range(40)) + "\n\n"
    head = "---\ntitle: 巨大的笔记\ndate: 2025-01-01\ntags: [扩散模型]\n---\n\n# 巨大的笔记\n\n"
    return head + paragraph * int(megabytes * 1e6 / len(paragraph.encode()) + 1)


def run(n_notes: int, n_queries: int, seed: int = 0, big_mb: float = 20) -> list[tuple[str, float, str, str]]:
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
        topic, found = search_latencies(index, queries(rng, n_queries))
        common, _ = search_latencies(index, queries(rng, n_queries // 4, common=True))
        # one huge note (pasted logs, a dumped dataset): indexed by its head, searched in bounded time
        big = notes / "big.md"
        big.write_text(huge_note(rng, big_mb), encoding="utf-8")
        big_index, report = timed(lambda: index.update(notes, resolver()))
        assert report.added == ["big.md"] and any("max_note_mb" in p.message for p in report.problems)
        # half the queries have the huge note among their hits (its title word 巨大 puts it first)
        big_qs = ["巨大 扩散", "巨大 采样 噪声", "扩散", "diffusion 巨大"] * max(1, n_queries // 8)
        big_qs += queries(rng, len(big_qs))
        big_search, _ = search_latencies(index, big_qs)
        big_cpu, _ = search_latencies(index, big_qs, time.process_time)  # CPU time: robust to a busy machine
        assert index.search("巨大 扩散")[0].path == "big.md"
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
            f"search p50 ({n_queries} topic queries)",
            statistics.median(topic),
            "≤ 10 ms",
            f"{found}/{n_queries} found hits",
        ),
        ("search p95 (topic queries)", _p95(topic), "", ""),
        ("search p50, words in every note", statistics.median(common), "", "worst case: ranks all notes"),
        (f"index one {big_mb:g} MB note", big_index, "", "its first max_note_mb (4 MB) indexed"),
        (
            f"search p95 with a {big_mb:g} MB note ({len(big_qs)} queries)",
            _p95(big_search),
            "≤ 50 ms",
            f"p50 {statistics.median(big_search) * 1e3:.1f} ms, CPU p95 {_p95(big_cpu) * 1e3:.1f} ms;"
            " half the queries hit the huge note",
        ),
    ]


def main(argv: list[str] | None = None) -> list[tuple[str, float, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--big-mb", type=float, default=20, help="Size of the one huge note (MB).")
    args = parser.parse_args(argv)
    rows = run(args.notes, args.queries, args.seed, args.big_mb)
    table = Table("measure", "time", "target", "detail", title="KernelNotes index and search")
    for name, seconds, target, detail in rows:
        shown = f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"
        table.add_row(name, shown, target, detail)
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
