"""在线 softmax (online softmax) 与分块注意力 (tiled attention) 的纯 PyTorch 参考实现。

两者都只用 fp32 累加，按块 (block) 扫描最后一维 / 键序列，保存的状态只有
running max `m`、running sum `l`（以及注意力里的未归一化输出 `acc`）。
"""

from __future__ import annotations

import math

import torch


def online_softmax(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """沿最后一维做 softmax，但每次只看 `block` 个元素：两遍扫描（一遍求 m、l，一遍写结果）。"""
    x32 = x.float()
    n = x32.shape[-1]
    lead = x32.shape[:-1]
    m = torch.full(lead, -math.inf, dtype=torch.float32, device=x.device)
    l = torch.zeros(lead, dtype=torch.float32, device=x.device)
    # 第一遍：在线更新 running max m 与 running sum l
    for s in range(0, n, block):
        xb = x32[..., s:s + block]
        m_new = torch.maximum(m, xb.amax(dim=-1))
        # m 仍为 -inf 时 exp(m - m_new) 会算出 nan，这里显式置 0
        scale = torch.where(torch.isinf(m), torch.zeros_like(m), torch.exp(m - m_new))
        l = l * scale + torch.exp(xb - m_new.unsqueeze(-1)).sum(dim=-1)
        m = m_new
    # 第二遍：用最终的 m、l 归一化
    out = torch.empty_like(x32)
    for s in range(0, n, block):
        out[..., s:s + block] = torch.exp(x32[..., s:s + block] - m.unsqueeze(-1)) / l.unsqueeze(-1)
    return out.to(x.dtype)


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block: int = 64,
    causal: bool = False,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """FlashAttention 式分块注意力，布局 (..., seq, dim)，返回 fp32。

    外层循环按 `block` 行切 Q，内层循环按 `block` 行扫 K、V；每个 Q 块只保存
    m（行最大值）、l（行指数和）与 acc（未归一化的输出），从不构造完整的 N x N 矩阵。
    causal=True 时掩码右下对齐：查询 i 可以看到键 j <= i + (Lk - Lq)。
    """
    q32, k32, v32 = q.float(), k.float(), v.float()
    lq, lk, d = q32.shape[-2], k32.shape[-2], q32.shape[-1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    out = torch.empty(*q32.shape[:-1], v32.shape[-1], dtype=torch.float32, device=q.device)
    for qs in range(0, lq, block):
        qb = q32[..., qs:qs + block, :]
        br = qb.shape[-2]
        m = torch.full((*qb.shape[:-1], 1), -math.inf, dtype=torch.float32, device=q.device)
        l = torch.zeros_like(m)
        acc = torch.zeros(*qb.shape[:-1], v32.shape[-1], dtype=torch.float32, device=q.device)
        qi = torch.arange(qs, qs + br, device=q.device).unsqueeze(-1)
        for ks in range(0, lk, block):
            if causal and ks > qs + br - 1 + (lk - lq):
                break  # 这个键块以及之后的块全部被掩掉
            kb, vb = k32[..., ks:ks + block, :], v32[..., ks:ks + block, :]
            s = (qb @ kb.transpose(-1, -2)) * scale
            if causal:
                kj = torch.arange(ks, ks + kb.shape[-2], device=q.device).unsqueeze(0)
                s = s.masked_fill(kj > qi + (lk - lq), -math.inf)
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(s - m_safe)
            alpha = torch.exp(m - m_safe)  # 旧状态的缩放因子；m=-inf 时为 0
            l = l * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + p @ vb
            m = m_new
        # 整行都被掩掉时 l=0，输出 0（与 FlashAttention 的约定一致）
        out[..., qs:qs + block, :] = acc / torch.where(l == 0, torch.ones_like(l), l)
    return out


def hbm_traffic_bytes(n: int, d: int, block: int = 128, bytes_per_elem: int = 2) -> tuple[float, float]:
    """单个注意力头前向的 HBM 读写量估计（字节）：(朴素实现, 分块实现)。

    朴素：读 Q、K，写 S (N^2)；读 S、写 P (2N^2)；读 P、V，写 O。
    分块（外层循环 Q 块）：Q 读一次、O 写一次，K、V 每个 Q 块各读一遍。
    """
    naive = (4 * n * d + 4 * n * n) * bytes_per_elem
    n_q_blocks = math.ceil(n / block)
    tiled = (2 * n * d + 2 * n * d * n_q_blocks) * bytes_per_elem
    return float(naive), float(tiled)
