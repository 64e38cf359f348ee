"""Hungarian algorithm and the DETR matching loss (used by notes/posts/detr-hungarian-matching.md)."""

import itertools

import numpy as np
import torch
import torch.nn.functional as F


def hungarian(cost):
    """Minimum-cost assignment for a rectangular cost matrix, O(n^2 m) with n = min side.

    Returns (rows, cols) like scipy.optimize.linear_sum_assignment: every row of the shorter
    side is assigned to a distinct column, sorted by row index.
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.shape[0] > c.shape[1]:                      # always put the shorter side on the rows
        cols, rows = hungarian(c.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = c.shape
    # dual potentials: u for rows, v for columns; reduced cost c[i, j] - u[i] - v[j] >= 0
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)          # owner[j] = row (1-based) holding column j, 0 = free
    prev = np.zeros(m + 1, dtype=np.int64)           # previous column on the alternating path
    for row in range(1, n + 1):
        owner[0] = row                               # column 0 is a virtual start column
        j_cur = 0
        slack = np.full(m + 1, np.inf)               # min reduced cost from the tree to each column
        in_tree = np.zeros(m + 1, dtype=bool)
        while True:                                  # Dijkstra-like growth until a free column is reached
            in_tree[j_cur] = True
            i_cur = owner[j_cur]
            reduced = c[i_cur - 1] - u[i_cur] - v[1:]
            free = ~in_tree[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            prev[1:][better] = j_cur
            cand = np.where(free, slack[1:], np.inf)
            j_next = int(np.argmin(cand)) + 1
            delta = cand[j_next - 1]
            # shift potentials so that the new column becomes tight, keeping all reduced costs >= 0
            u[owner[in_tree]] += delta
            v[in_tree] -= delta
            slack[~in_tree] -= delta
            j_cur = j_next
            if owner[j_cur] == 0:
                break
        while j_cur != 0:                            # flip the alternating path back to the start
            j_prev = prev[j_cur]
            owner[j_cur] = owner[j_prev]
            j_cur = j_prev
    cols = np.nonzero(owner[1:])[0]
    rows = owner[1:][cols] - 1
    order = np.argsort(rows)
    return rows[order], cols[order]


def brute_force_assignment(cost):
    """Try every injective map of the shorter side into the longer one; returns (best cost, rows, cols)."""
    c = np.asarray(cost, dtype=np.float64)
    n, m = c.shape
    best = (np.inf, None, None)
    if n <= m:
        for perm in itertools.permutations(range(m), n):
            total = c[np.arange(n), perm].sum()
            if total < best[0]:
                best = (total, np.arange(n), np.array(perm))
    else:
        for perm in itertools.permutations(range(n), m):
            total = c[perm, np.arange(m)].sum()
            if total < best[0]:
                order = np.argsort(perm)
                best = (total, np.array(perm)[order], np.arange(m)[order])
    return best


# ---------- boxes ----------

def box_cxcywh_to_xyxy(b):
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def pairwise_giou(a, b):
    """Generalised IoU between every box of a (N, 4) and b (M, 4), both xyxy; returns (N, M)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / union
    lt_c = torch.minimum(a[:, None, :2], b[None, :, :2])   # smallest enclosing box
    rb_c = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    area_c = (rb_c - lt_c).prod(-1)
    return iou - (area_c - union) / area_c


# ---------- DETR matcher and loss ----------

def matching_cost(logits, pred_boxes, tgt_labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0):
    """(num_queries, num_targets) cost: -p(class) + L1 on cxcywh + (-GIoU)."""
    prob = logits.float().softmax(-1)
    c_class = -prob[:, tgt_labels]
    c_l1 = torch.cdist(pred_boxes.float(), tgt_boxes.float(), p=1)
    c_giou = -pairwise_giou(box_cxcywh_to_xyxy(pred_boxes.float()), box_cxcywh_to_xyxy(tgt_boxes.float()))
    return w_class * c_class + w_l1 * c_l1 + w_giou * c_giou


def detr_loss(logits, pred_boxes, tgt_labels, tgt_boxes, no_object_weight=0.1,
              w_class=1.0, w_l1=5.0, w_giou=2.0):
    """Set loss of one image. logits: (Q, K+1), last class = no object; boxes in normalised cxcywh."""
    with torch.no_grad():
        cost = matching_cost(logits, pred_boxes, tgt_labels, tgt_boxes, w_class, w_l1, w_giou)
        q_idx, t_idx = hungarian(cost.cpu().numpy())
    q_idx, t_idx = torch.as_tensor(q_idx), torch.as_tensor(t_idx)
    num_classes = logits.shape[-1] - 1
    target_classes = torch.full((logits.shape[0],), num_classes, dtype=torch.long)
    target_classes[q_idx] = tgt_labels[t_idx]
    class_weight = torch.ones(num_classes + 1)
    class_weight[-1] = no_object_weight
    loss_ce = F.cross_entropy(logits.float(), target_classes, weight=class_weight)
    n_boxes = max(len(tgt_labels), 1)
    pb, tb = pred_boxes[q_idx].float(), tgt_boxes[t_idx].float()
    loss_l1 = (pb - tb).abs().sum() / n_boxes
    giou = torch.diag(pairwise_giou(box_cxcywh_to_xyxy(pb), box_cxcywh_to_xyxy(tb)))
    loss_giou = (1 - giou).sum() / n_boxes
    total = w_class * loss_ce + w_l1 * loss_l1 + w_giou * loss_giou
    return total, {"ce": loss_ce.item(), "l1": loss_l1.item(), "giou": loss_giou.item(),
                   "match": list(zip(q_idx.tolist(), t_idx.tolist()))}
