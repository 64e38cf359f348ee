"""Lowest common ancestor in a binary tree (used by notes/posts/lca-binary-tree.md)."""

from collections import deque
from itertools import pairwise


class TreeNode:
    __slots__ = ("left", "right", "val")

    def __init__(self, val, left=None, right=None):
        self.val, self.left, self.right = val, left, right

    def __repr__(self):
        return f"TreeNode({self.val})"


def build_tree(level_order):
    """LeetCode-style level order with None for missing children; returns (root, {val: node})."""
    if not level_order or level_order[0] is None:
        return None, {}
    root = TreeNode(level_order[0])
    nodes, queue, i = {root.val: root}, deque([root]), 1
    while queue and i < len(level_order):
        node = queue.popleft()
        for side in ("left", "right"):
            if i < len(level_order) and level_order[i] is not None:
                child = TreeNode(level_order[i])
                setattr(node, side, child)
                nodes[child.val] = child
                queue.append(child)
            i += 1
    return root, nodes


def lca_recursive(root, p, q):
    """Classic post-order recursion; assumes p and q are both in the tree."""
    if root is None or root is p or root is q:
        return root
    left = lca_recursive(root.left, p, q)
    right = lca_recursive(root.right, p, q)
    if left and right:              # p and q sit in different subtrees
        return root
    return left or right            # both on one side, or only one found so far


def lca_parent_pointers(root, p, q):
    """Iterative: record every node's parent with an explicit stack, then climb. None if p or q is absent."""
    if root is None:
        return None
    parent, stack = {root: None}, [root]
    while stack and (p not in parent or q not in parent):
        node = stack.pop()
        for child in (node.left, node.right):
            if child is not None:
                parent[child] = node
                stack.append(child)
    if p not in parent or q not in parent:
        return None
    ancestors = set()
    while p is not None:            # p itself counts as its own ancestor
        ancestors.add(p)
        p = parent[p]
    while q not in ancestors:
        q = parent[q]
    return q


def lca_bst(root, p, q):
    """Binary search tree: walk down while both values are on the same side."""
    lo, hi = min(p.val, q.val), max(p.val, q.val)
    node = root
    while node is not None:
        if hi < node.val:
            node = node.left
        elif lo > node.val:
            node = node.right
        else:
            return node             # split point (or one of them)
    return None


def path_to(root, target):
    """Root-to-target path via iterative DFS (the brute-force reference)."""
    stack = [(root, [root])] if root else []
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        for child in (node.left, node.right):
            if child is not None:
                stack.append((child, [*path, child]))
    return None


def lca_brute_force(root, p, q):
    pp, pq = path_to(root, p), path_to(root, q)
    if pp is None or pq is None:
        return None
    answer = None
    for a, b in zip(pp, pq):
        if a is not b:
            break
        answer = a
    return answer


def skewed_tree(depth, side="right"):
    """A chain 0 -> 1 -> ... -> depth-1 (a valid BST when side='right'); returns (root, list of nodes)."""
    nodes = [TreeNode(i) for i in range(depth)]
    for a, b in pairwise(nodes):
        setattr(a, side, b)
    return nodes[0], nodes


def random_tree(n, rng):
    """Random binary tree with values 0..n-1: each new node hangs off a random free child slot."""
    nodes = [TreeNode(0)]
    slots = [(nodes[0], "left"), (nodes[0], "right")]
    for v in range(1, n):
        parent, side = slots.pop(rng.randrange(len(slots)))
        child = TreeNode(v)
        setattr(parent, side, child)
        nodes.append(child)
        slots += [(child, "left"), (child, "right")]
    return nodes[0], nodes


def random_bst(values):
    root = None
    for v in values:
        if root is None:
            root = TreeNode(v)
            continue
        node = root
        while True:
            side = "left" if v < node.val else "right"
            child = getattr(node, side)
            if child is None:
                setattr(node, side, TreeNode(v))
                break
            node = child
    return root


def all_nodes(root):
    out, stack = [], [root] if root else []
    while stack:
        node = stack.pop()
        out.append(node)
        stack += [c for c in (node.left, node.right) if c is not None]
    return out
