"""LayerNorm 与 RMSNorm 的手写前向 / 反向（沿最后一维归一化），用来和 autograd 对照。

前向返回反向需要的中间量 (x_hat, rstd)；反向按笔记里推导的闭式公式计算 dx、dweight、dbias。
所有计算在输入的 dtype 里进行，调用方负责先转成 fp32 或 fp64。
"""

from __future__ import annotations

import torch


def layer_norm_forward(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # 有偏方差，与 nn.LayerNorm 一致
    rstd = torch.rsqrt(var + eps)
    x_hat = (x - mean) * rstd
    return x_hat * weight + bias, (x_hat, rstd)


def layer_norm_backward(dy, x_hat, rstd, weight):
    """dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))，其中 g = dy * weight。"""
    g = dy * weight
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    lead = tuple(range(dy.dim() - 1))
    dweight = (dy * x_hat).sum(dim=lead)
    dbias = dy.sum(dim=lead)
    return dx, dweight, dbias


def rms_norm_forward(x, weight, eps=1e-6):
    rstd = torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    x_hat = x * rstd
    return x_hat * weight, (x_hat, rstd)


def rms_norm_backward(dy, x_hat, rstd, weight):
    """dx = rstd * (g - x_hat * mean(g * x_hat))：比 LayerNorm 少了减均值那一项。"""
    g = dy * weight
    dx = rstd * (g - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    dweight = (dy * x_hat).sum(dim=tuple(range(dy.dim() - 1)))
    return dx, dweight
