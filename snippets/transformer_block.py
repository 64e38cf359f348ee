"""GPT 式 pre-norm Transformer block，以及它的参数量、前向 FLOPs 的解析公式。

`PreNormBlock.forward(x, trace=...)` 可以把每一步的名字和形状记进一个列表，用来对照正文里的形状表。
注意力用显式的矩阵乘写出（而不是调用 SDPA），这样 FLOP 计数器能看到每一次乘法。
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PreNormBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, bias: bool = True) -> None:
        super().__init__()
        assert d_model % n_heads == 0
        self.d, self.h = d_model, n_heads
        d_ff = d_ff or 4 * d_model
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)   # W_Q, W_K, W_V 拼成一个矩阵
        self.proj = nn.Linear(d_model, d_model, bias=bias)      # W_O
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor, causal: bool = True, trace: list | None = None) -> torch.Tensor:
        def note(name: str, t: torch.Tensor) -> torch.Tensor:
            if trace is not None:
                trace.append((name, tuple(t.shape)))
            return t

        B, N, d = x.shape
        dh = d // self.h
        note("x", x)
        h = note("ln1(x)", self.ln1(x))
        qkv = note("qkv = h W_qkv", self.qkv(h))
        q, k, v = (t.view(B, N, self.h, dh).transpose(1, 2) for t in qkv.split(d, dim=-1))
        note("q, k, v (split heads)", q)
        s = note("scores q k^T", q @ k.transpose(-1, -2) / math.sqrt(dh))
        if causal:
            mask = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)
            s = s.masked_fill(mask, float("-inf"))
        p = note("softmax", torch.softmax(s, dim=-1))
        a = note("p v", p @ v)
        a = note("merge heads", a.transpose(1, 2).reshape(B, N, d))
        x = note("x + attn W_O", x + self.proj(a))
        u = note("fc1 + gelu", F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))
        return note("x + fc2", x + self.fc2(u))


def block_params(d: int, d_ff: int | None = None, bias: bool = True) -> dict[str, int]:
    """一个 block 的参数量，按来源拆开。d_ff 默认 4d。"""
    d_ff = d_ff or 4 * d
    b = 1 if bias else 0
    return {
        "attn W_qkv, W_O": 4 * d * d,
        "mlp W_1, W_2": 2 * d * d_ff,
        "biases": b * (3 * d + d + d_ff + d),
        "layernorms": 2 * 2 * d,
    }


def forward_flops_per_token(d: int, n_ctx: int, d_ff: int | None = None) -> dict[str, int]:
    """每个 token 一次前向的矩阵乘 FLOPs（乘加算 2），注意力按完整的 N x N 计。"""
    d_ff = d_ff or 4 * d
    return {
        "qkv": 2 * 3 * d * d,
        "q k^T": 2 * n_ctx * d,
        "p v": 2 * n_ctx * d,
        "W_O": 2 * d * d,
        "mlp": 2 * 2 * d * d_ff,
    }
