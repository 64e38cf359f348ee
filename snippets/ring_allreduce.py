"""在一个进程里模拟 N 个 worker 的 all-reduce：环形算法（reduce-scatter + all-gather）与朴素的汇总到 0 号。

每个 worker 的数据是一个一维张量；"发送"就是把一个分块复制给下一个 worker，并记下发送的字节数。
同一步里所有 worker 同时收发：先收集全部消息，再统一应用，和真实的同步环一样。
另有 alpha-beta 通信时间模型和 DDP 梯度分桶（bucketing）与反向计算重叠的时间线模拟。
"""

from __future__ import annotations

import torch


def ring_allreduce(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """返回 (每个 worker 得到的结果, 每个 worker 发送的字节数)。"""
    n = len(tensors)
    chunks = [list(t.clone().tensor_split(n)) for t in tensors]   # chunks[worker][c]
    sent = [0] * n
    # reduce-scatter：第 s 步 worker r 把分块 (r - s) mod n 发给 r+1，对方累加
    for s in range(n - 1):
        msgs = [(r, (r - s) % n, chunks[r][(r - s) % n].clone()) for r in range(n)]
        for r, c, payload in msgs:
            chunks[(r + 1) % n][c] += payload
            sent[r] += payload.numel() * payload.element_size()
    # 现在 worker r 持有完整求和的分块 (r + 1) mod n
    # all-gather：第 s 步 worker r 把分块 (r + 1 - s) mod n 发给 r+1，对方覆盖
    for s in range(n - 1):
        msgs = [(r, (r + 1 - s) % n, chunks[r][(r + 1 - s) % n].clone()) for r in range(n)]
        for r, c, payload in msgs:
            chunks[(r + 1) % n][c].copy_(payload)
            sent[r] += payload.numel() * payload.element_size()
    return [torch.cat(c) for c in chunks], sent


def naive_allreduce(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """所有 worker 把整份数据发给 0 号，0 号求和后再发回每个 worker。"""
    n = len(tensors)
    total = tensors[0].clone()
    sent = [0] * n
    for r in range(1, n):
        total += tensors[r]
        sent[r] += tensors[r].numel() * tensors[r].element_size()
    sent[0] += (n - 1) * total.numel() * total.element_size()
    return [total.clone() for _ in range(n)], sent


def allreduce_time(n: int, nbytes: float, alpha: float, bandwidth: float, algo: str = "ring") -> float:
    """alpha-beta 模型下的耗时（秒）。alpha：每条消息的延迟；bandwidth：每条链路的字节/秒。"""
    if n == 1:
        return 0.0
    if algo == "ring":      # 2(n-1) 步，每步每个 worker 收发 nbytes/n
        return 2 * (n - 1) * (alpha + nbytes / n / bandwidth)
    if algo == "naive":     # 0 号的链路串行地收 n-1 份、再发 n-1 份
        return 2 * (n - 1) * (alpha + nbytes / bandwidth)
    raise ValueError(algo)


def make_buckets(grad_bytes: list[int], cap: float) -> list[list[int]]:
    """按反向传播产生梯度的顺序（参数的逆序）把参数编号装桶，每桶不超过 cap 字节（单个大参数独占一桶）。"""
    buckets, current, size = [], [], 0
    for i in reversed(range(len(grad_bytes))):
        if current and size + grad_bytes[i] > cap:
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += grad_bytes[i]
    if current:
        buckets.append(current)
    return buckets


def simulate_overlap(grad_bytes: list[int], cap: float, n: int, alpha: float, bandwidth: float,
                     backward_seconds_per_byte: float) -> dict[str, float]:
    """反向计算按参数逆序依次产出梯度；一个桶的梯度齐了就在通信流上排队做环形 all-reduce。"""
    ready, t = {}, 0.0
    for i in reversed(range(len(grad_bytes))):
        t += grad_bytes[i] * backward_seconds_per_byte
        ready[i] = t
    backward_end = t
    comm_end, comm_total = 0.0, 0.0
    buckets = make_buckets(grad_bytes, cap)
    for b in buckets:
        start = max(comm_end, max(ready[i] for i in b))
        duration = allreduce_time(n, sum(grad_bytes[i] for i in b), alpha, bandwidth)
        comm_end = start + duration
        comm_total += duration
    return {"buckets": len(buckets), "backward": backward_end, "comm": comm_total,
            "step_end": max(comm_end, backward_end), "exposed": max(0.0, comm_end - backward_end)}
