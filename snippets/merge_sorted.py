"""Merging sorted arrays in place (used by notes/posts/merge-sorted-arrays.md)."""

import numpy as np


def merge_from_back(nums1, m, nums2, n):
    """LeetCode 88: nums1 has length m + n, its first m entries sorted, the tail is free space."""
    i, j, k = m - 1, n - 1, m + n - 1
    while j >= 0:                                   # once nums2 is used up, nums1's prefix is already in place
        if i >= 0 and nums1[i] > nums2[j]:
            nums1[k] = nums1[i]
            i -= 1
        else:                                       # ties take nums2 first from the back: stable
            nums1[k] = nums2[j]
            j -= 1
        k -= 1
    return nums1


def merge_from_front_wrong(nums1, m, nums2, n):
    """The tempting front-to-back version without a copy: it overwrites nums1 before reading it."""
    i = j = k = 0
    while j < n:
        if i < m and nums1[i] <= nums2[j]:
            i += 1
        else:
            nums1[k] = nums2[j]
            j += 1
        k += 1
    return nums1


def next_gap(gap):
    return 0 if gap <= 1 else (gap + 1) // 2


def merge_gap(a, b):
    """Merge two sorted lists in place (a gets the smallest len(a) values) with O(1) extra space.

    Shell-sort-like: compare-exchange elements `gap` apart in the virtual concatenation a + b,
    with gap = ceil(total / 2), ceil(gap / 2), ..., 1. Returns the number of comparisons.
    """
    m, total = len(a), len(a) + len(b)
    comparisons = 0

    def get(t):
        return a[t] if t < m else b[t - m]

    def put(t, v):
        if t < m:
            a[t] = v
        else:
            b[t - m] = v

    gap = next_gap(total)
    while gap > 0:
        for i in range(total - gap):
            j = i + gap
            comparisons += 1
            x, y = get(i), get(j)
            if x > y:
                put(i, y)
                put(j, x)
        gap = next_gap(gap)
    return comparisons


def merge_insertion(a, b):
    """The O(m n) in-place alternative: push each b element from the back into a. Returns comparisons."""
    m, comparisons = len(a), 0
    for j in range(len(b) - 1, -1, -1):
        if m == 0:
            break
        comparisons += 1
        if a[-1] <= b[j]:
            continue
        last, t = a[-1], m - 2                       # a[-1] moves to b[j]; b[j] is inserted into a
        while t >= 0 and a[t] > b[j]:
            comparisons += 1
            a[t + 1] = a[t]
            t -= 1
        a[t + 1] = b[j]
        b[j] = last
    return comparisons


def gap_network_sorts_all_01(m, n):
    """0-1 principle: run the gap network on every pair of sorted 0-1 arrays (vectorised over inputs)."""
    zeros_a = np.arange(m + 1)[:, None]
    zeros_b = np.arange(n + 1)[:, None]
    a = (np.arange(m)[None, :] >= zeros_a).astype(np.int8)        # (m+1, m): all sorted 0-1 arrays
    b = (np.arange(n)[None, :] >= zeros_b).astype(np.int8)
    x = np.concatenate([np.repeat(a, n + 1, 0), np.tile(b, (m + 1, 1))], 1)
    total = m + n
    gap = next_gap(total)
    while gap > 0:
        for start in range(0, total - gap, gap):                   # pairs within one block are independent
            lo = np.arange(start, min(start + gap, total - gap))
            u, v = x[:, lo], x[:, lo + gap]
            x[:, lo], x[:, lo + gap] = np.minimum(u, v), np.maximum(u, v)
        gap = next_gap(gap)
    return bool((np.diff(x, axis=1) >= 0).all())
