"""FLOP accounting for padded vs packed Transformer batches (used by notes/posts/sequence-packing.md)."""

import numpy as np


def sample_lengths(n, rng, median=320.0, sigma=0.9, min_len=8, max_len=2048):
    """Lognormal sequence lengths, clipped to [min_len, max_len] (a typical SFT/chat length profile)."""
    lengths = rng.lognormal(mean=np.log(median), sigma=sigma, size=n)
    return np.clip(np.round(lengths), min_len, max_len).astype(np.int64)


def layer_flops(seq_len, d_model, ffn_mult=4, causal=False):
    """Forward FLOPs of one Transformer layer on ONE sequence of length seq_len (arrays allowed).

    Projections: Q, K, V, O are 4 d x d matmuls (8 L d^2 FLOPs); the MLP is two d x ffn_mult*d matmuls
    (4 ffn_mult L d^2). Attention: QK^T and PV are 2 L^2 d each, halved under a causal mask when the
    kernel skips masked blocks.
    """
    seq_len = np.asarray(seq_len, dtype=np.float64)
    dense = (8 + 4 * ffn_mult) * seq_len * d_model**2
    attn = 4 * seq_len**2 * d_model * (0.5 if causal else 1.0)
    return dense, attn


def padded_batches(lengths, batch_size, pad_to=None):
    """Consecutive batches; every row is padded to the batch maximum (or to pad_to)."""
    rows = []
    for i in range(0, len(lengths), batch_size):
        chunk = lengths[i:i + batch_size]
        width = pad_to if pad_to is not None else int(chunk.max())
        rows.extend([width] * len(chunk))
    return np.array(rows)


def first_fit_decreasing(lengths, capacity):
    """Pack sequences into bins of `capacity` tokens; returns a list of lists of lengths."""
    bins, free = [], []
    for length in sorted(lengths.tolist(), reverse=True):
        for j, room in enumerate(free):
            if length <= room:
                bins[j].append(length)
                free[j] -= length
                break
        else:
            bins.append([length])
            free.append(capacity - length)
    return bins


def cost_table(lengths, d_model, batch_size, capacity, causal=False):
    """Total FLOPs of one layer under several batching strategies: (name, dense, attention, tokens)."""
    out = []

    def add(name, row_lengths, attn_override=None):
        dense, attn = layer_flops(row_lengths, d_model, causal=causal)
        attn_total = attn.sum() if attn_override is None else attn_override
        out.append((name, dense.sum(), attn_total, int(np.sum(row_lengths))))

    add(f"pad to {capacity}", padded_batches(lengths, batch_size, pad_to=capacity))
    add("pad to batch max", padded_batches(lengths, batch_size))
    sorted_lengths = np.sort(lengths)
    add("sort by length, pad to batch max", padded_batches(sorted_lengths, batch_size))
    bins = first_fit_decreasing(lengths, capacity)
    full = np.full(len(bins), capacity)
    _, attn_bins = layer_flops(full, d_model, causal=causal)
    add("FFD bins, full (cross-sequence) mask", full, attn_override=attn_bins.sum())
    add("packed varlen (block-diagonal)", lengths)
    return out, bins
