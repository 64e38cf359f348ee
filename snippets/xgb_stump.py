"""Second-order boosting with depth-1 trees (stumps) for logistic loss, in numpy.

Used by notes/posts/xgboost-second-order.md. Leaf weight w* = -G / (H + lambda); split gain
1/2 [G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)] - gamma.
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def logloss(y, margin):
    """Mean binary cross-entropy with logits, computed stably."""
    return float(np.mean(np.logaddexp(0.0, margin) - y * margin))


def grad_hess_logistic(y, margin):
    p = sigmoid(margin)
    return p - y, p * (1.0 - p)


def leaf_weight(G, H, lam):
    return -G / (H + lam)


def structure_score(G, H, lam):
    """-2 x (minimum of G w + 1/2 (H + lambda) w^2): larger is better."""
    return G * G / (H + lam)


def split_gain(GL, HL, GR, HR, lam, gamma):
    return 0.5 * (structure_score(GL, HL, lam) + structure_score(GR, HR, lam)
                  - structure_score(GL + GR, HL + HR, lam)) - gamma


def best_split(X, g, h, lam=1.0, gamma=0.0, min_child_weight=1e-3):
    """Exact greedy search: sort each feature once, sweep prefix sums of g and h."""
    G, H = g.sum(), h.sum()
    best = {"gain": -np.inf}
    for f in range(X.shape[1]):
        order = np.argsort(X[:, f], kind="stable")
        xs, GL, HL = X[order, f], np.cumsum(g[order]), np.cumsum(h[order])
        valid = xs[:-1] < xs[1:]                     # only cut between distinct values
        valid &= (HL[:-1] >= min_child_weight) & (H - HL[:-1] >= min_child_weight)
        gains = np.where(valid, split_gain(GL[:-1], HL[:-1], G - GL[:-1], H - HL[:-1], lam, gamma), -np.inf)
        i = int(np.argmax(gains))
        if gains[i] > best["gain"]:
            best = {"gain": float(gains[i]), "feature": f, "threshold": 0.5 * (xs[i] + xs[i + 1]),
                    "w_left": leaf_weight(GL[i], HL[i], lam),
                    "w_right": leaf_weight(G - GL[i], H - HL[i], lam)}
    return best


def best_split_bruteforce(X, g, h, lam=1.0, gamma=0.0, min_child_weight=1e-3):
    """Reference: try every midpoint threshold and sum g, h with boolean masks (O(n^2) per feature)."""
    best = {"gain": -np.inf}
    for f in range(X.shape[1]):
        values = np.unique(X[:, f])
        for thr in 0.5 * (values[:-1] + values[1:]):
            left = X[:, f] < thr
            GL, HL, GR, HR = g[left].sum(), h[left].sum(), g[~left].sum(), h[~left].sum()
            if min(HL, HR) < min_child_weight:
                continue
            gain = split_gain(GL, HL, GR, HR, lam, gamma)
            if gain > best["gain"]:
                best = {"gain": float(gain), "feature": f, "threshold": thr}
    return best


def fit_stump(X, g, h, lam=1.0, gamma=0.0):
    """A stump, or a single leaf when no split has positive gain (gamma acts as pruning)."""
    split = best_split(X, g, h, lam, gamma)
    if split["gain"] <= 0:
        w = leaf_weight(g.sum(), h.sum(), lam)
        return {"feature": None, "w_left": w, "w_right": w, "threshold": 0.0, "gain": 0.0}
    return split


def predict_stump(stump, X):
    if stump["feature"] is None:
        return np.full(len(X), stump["w_left"])
    return np.where(X[:, stump["feature"]] < stump["threshold"], stump["w_left"], stump["w_right"])


def boost(X, y, rounds=30, eta=0.3, lam=1.0, gamma=0.0, second_order=True):
    """Returns the list of stumps and the training log loss after each round (index 0 = before)."""
    margin = np.zeros(len(y))
    stumps, losses = [], [logloss(y, margin)]
    for _ in range(rounds):
        g, h = grad_hess_logistic(y, margin)
        if not second_order:
            h = np.ones_like(h)                          # plain gradient boosting: fit -g by least squares
        stump = fit_stump(X, g, h, lam, gamma)
        margin = margin + eta * predict_stump(stump, X)
        stumps.append(stump)
        losses.append(logloss(y, margin))
    return stumps, losses
