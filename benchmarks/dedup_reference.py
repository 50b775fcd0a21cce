"""Benchmark reference: the exhaustive multi-index-hashing search cxrad used before faiss.

Kept only to measure the new search's recall (``bench_scale.py``); quadratic on crowded hashes.
Multi-index hashing (Norouzi et al., 2012): cut a hash into ``m`` blocks; two hashes within
``r`` differ by at most ``r // m`` bits on one block, so rows meet only rows near on a block.
"""

from __future__ import annotations

from itertools import combinations, pairwise

import numpy as np
import pandas as pd

from cxrad.manifest import STATUS_OK
from cxrad.split.hamming import hamming, hex_to_words

_CHUNK = 2_000_000


def reference_pairs(df: pd.DataFrame, max_distance: int = 8, fine_distance: int = 28) -> np.ndarray:
    """The old ``assign_dup_groups`` near pairs: 64-bit phash within ``max_distance`` (exhaustive),
    confirmed on ``phash256`` within ``fine_distance``, different sha1. ``(p, 2)`` row indices."""
    ok = (df["status"] == STATUS_OK).to_numpy() & df["phash"].notna().to_numpy()
    take = np.flatnonzero(ok)
    words = hex_to_words(df["phash"].iloc[take].astype(str).tolist())
    i, j, _ = near_pairs(words, max_distance)
    ci, cj = take[i], take[j]
    sha = df["sha1"].to_numpy(dtype=object)
    keep = sha[ci] != sha[cj]
    ci, cj = ci[keep], cj[keep]
    known = df["phash256"].notna().to_numpy()
    have = known[ci] & known[cj]
    ci, cj = ci[have], cj[have]
    if len(ci):
        fw = hex_to_words(df["phash256"].fillna("0" * 64).astype(str).tolist())
        d = hamming(fw[ci], fw[cj])
        ci, cj = ci[d <= fine_distance], cj[d <= fine_distance]
    return np.stack([ci, cj], axis=1) if len(ci) else np.zeros((0, 2), dtype=np.int64)


def near_pairs(words: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` within ``max_distance`` (exhaustive multi-index hashing)."""
    n, nw = words.shape
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, empty
    block_bits = int(np.clip(np.ceil(np.log2(n)), 8, 24))
    nblocks = int(np.clip(round(64 * nw / block_bits), 1, max_distance + 1))
    sub = max_distance // nblocks
    found_i, found_j, found_d = [], [], []
    for key, width in _blocks(words, nblocks):
        order = np.argsort(key, kind="stable")
        skey = key[order]
        starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
        ukeys = skey[starts]
        ends = np.r_[starts[1:], n]
        for mask in _masks(width, sub):
            q = key ^ mask
            pos = np.clip(np.searchsorted(ukeys, q), 0, len(ukeys) - 1)
            hit = np.flatnonzero(ukeys[pos] == q)
            if not len(hit):
                continue
            lo, hi = starts[pos[hit]], ends[pos[hit]]
            step = max(1, _CHUNK // int((hi - lo).max()))
            for cut in range(0, len(hit), step):
                sl = slice(cut, cut + step)
                counts = hi[sl] - lo[sl]
                rows = np.repeat(hit[sl], counts)
                offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                other = order[np.repeat(lo[sl], counts) + offs]
                keep = rows < other
                _check(words, [rows[keep]], [other[keep]], max_distance, found_i, found_j, found_d)
    if not found_i:
        return empty, empty, empty
    i, j, d = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
    _, first = np.unique(i * n + j, return_index=True)
    return i[first], j[first], d[first]


def _blocks(words: np.ndarray, nblocks: int) -> list[tuple[np.ndarray, int]]:
    """Cut every hash into ``nblocks`` contiguous bit ranges: ``(int key, width)`` per block."""
    bits = np.unpackbits(words.astype(">u8").view(np.uint8), axis=1)
    nbits = bits.shape[1]
    edges = np.linspace(0, nbits, nblocks + 1).round().astype(int)
    out = []
    for lo, hi in pairwise(edges):
        weights = (1 << np.arange(hi - lo - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)
        out.append(
            ((bits[:, lo:hi].astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64), hi - lo)
        )
    return out


def _masks(width: int, radius: int) -> list[np.uint64]:
    """Every XOR mask of ``width`` bits with at most ``radius`` bits set."""
    out = []
    for r in range(radius + 1):
        for bits in combinations(range(width), r):
            out.append(np.uint64(sum(1 << x for x in bits)))
    return out


def _check(
    words: np.ndarray,
    pi: list[np.ndarray],
    pj: list[np.ndarray],
    max_distance: int,
    out_i: list[np.ndarray],
    out_j: list[np.ndarray],
    out_d: list[np.ndarray],
) -> int:
    """Keep the candidate pairs within ``max_distance``; return how many were checked."""
    if not pi:
        return 0
    i = np.concatenate(pi)
    j = np.concatenate(pj)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    d = hamming(words[lo], words[hi])
    keep = d <= max_distance
    out_i.append(lo[keep])
    out_j.append(hi[keep])
    out_d.append(d[keep])
    return len(i)
