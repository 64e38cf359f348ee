"""一个 define-by-run 的微型自动微分：numpy 数组 + 记录父节点的计算图 + 反向拓扑序上的 VJP。

每个运算在前向时创建一个新 Tensor，记下父节点和一个 `vjp(g)` 闭包：给定输出的梯度 g，
返回对每个父节点的梯度（向量-雅可比积）。`backward()` 先对图做拓扑排序，再逆序传播。
"""

from __future__ import annotations

import numpy as np


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """广播的反向：把 g 沿被广播出来的维度求和，还原成 shape。"""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


class Tensor:
    def __init__(self, data, parents=(), vjp=None, op="leaf", requires_grad=False):
        self.data = np.asarray(data, dtype=np.float64)
        self.parents, self.vjp, self.op = parents, vjp, op
        self.requires_grad = requires_grad or any(p.requires_grad for p in parents)
        self.grad = None

    shape = property(lambda self: self.data.shape)

    def __repr__(self):
        return f"Tensor(op={self.op}, shape={self.shape})"

    # ---- 运算：前向算值，同时记下如何求 VJP ----
    def __add__(self, other):
        other = as_tensor(other)
        return Tensor(self.data + other.data, (self, other),
                      lambda g: (unbroadcast(g, self.shape), unbroadcast(g, other.shape)), "add")

    def __mul__(self, other):
        other = as_tensor(other)
        return Tensor(self.data * other.data, (self, other),
                      lambda g: (unbroadcast(g * other.data, self.shape), unbroadcast(g * self.data, other.shape)), "mul")

    def __matmul__(self, other):
        return Tensor(self.data @ other.data, (self, other),
                      lambda g: (g @ other.data.T, self.data.T @ g), "matmul")

    __radd__, __rmul__ = __add__, __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-as_tensor(other))

    def relu(self):
        mask = self.data > 0
        return Tensor(self.data * mask, (self,), lambda g: (g * mask,), "relu")

    def tanh(self):
        t = np.tanh(self.data)
        return Tensor(t, (self,), lambda g: (g * (1 - t * t),), "tanh")

    def exp(self):
        e = np.exp(self.data)
        return Tensor(e, (self,), lambda g: (g * e,), "exp")

    def log(self):
        return Tensor(np.log(self.data), (self,), lambda g: (g / self.data,), "log")

    def sum(self):
        return Tensor(self.data.sum(), (self,), lambda g: (np.broadcast_to(g, self.shape).copy(),), "sum")

    def mean(self):
        return self.sum() * (1.0 / self.data.size)

    # ---- 反向传播 ----
    def backward(self):
        order = topological_order(self)
        grads = {id(self): np.ones_like(self.data)}
        for node in reversed(order):                     # 输出在最后，逆序即从输出往输入
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if not node.parents:                         # 叶子：累加到 .grad
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node.parents, node.vjp(g)):
                if parent.requires_grad:                 # 同一节点被多处使用时梯度相加
                    grads[id(parent)] = grads[id(parent)] + pg if id(parent) in grads else pg


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def topological_order(root: Tensor) -> list[Tensor]:
    """迭代式 DFS 后序：每个节点都排在它的所有父节点之后。"""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node.parents if id(p) not in seen)
    return order
