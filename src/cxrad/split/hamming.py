"""Stage 3, split: Hamming-distance search over perceptual hashes without comparing all pairs.

Near-duplicate search over ~150k hashes cannot afford ``n²`` comparisons. Multi-index hashing
(Norouzi et al., 2012) relies on the pigeonhole principle: cut a hash into ``m`` blocks; two
hashes within distance ``r`` differ by at most ``r // m`` bits on at least one block. So each
row only meets rows whose block key is that close to its own, found by sorted lookup, and the
full distance is checked with vectorised popcounts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import combinations, pairwise

import numpy as np

from cxrad.errors import SplitError
from cxrad.progress import Progress

logger = logging.getLogger(__name__)

_CHUNK = 2_000_000  # candidate pairs checked per numpy batch (bounds memory)


def hex_to_words(hashes: Sequence[str]) -> np.ndarray:
    """Hex hash strings (all the same length) -> ``(n, words)`` uint64 array.

    Raises:
        SplitError: lengths differ or a string is not hex; says how to recompute.
    """
    if len(hashes) == 0:
        return np.zeros((0, 1), dtype=np.uint64)
    lengths = {len(h) for h in hashes}
    if len(lengths) != 1:
        raise SplitError(
            f"perceptual hashes have mixed lengths {sorted(lengths)}; "
            "re-run `cxrad ingest` so every row is hashed the same way"
        )
    nhex = lengths.pop()
    pad = (-nhex) % 16
    try:
        raw = b"".join(bytes.fromhex("0" * pad + h) for h in hashes)
    except ValueError as e:
        raise SplitError(f"a perceptual hash is not hex ({e}); re-run `cxrad ingest`") from e
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hashes), -1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distance between two ``(n, words)`` uint64 arrays."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int64)


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


def near_pairs(
    words: np.ndarray,
    max_distance: int,
    progress: Progress | None = None,
    block_bits: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with Hamming distance ``<= max_distance``.

    The hash is cut into ``m`` blocks of about ``block_bits`` bits; two hashes within ``r``
    are within ``r // m`` on at least one block, so each row probes, per block, every key
    within ``r // m`` of its own and compares only the rows found there.

    Args:
        words: ``(n, words)`` uint64 hashes, e.g. from :func:`hex_to_words`.
        max_distance: the search radius in bits.
        progress: called per block.
        block_bits: bits per block; default about ``log2(n)`` (small buckets), at least 8.

    Returns:
        ``(i, j, distance)`` arrays, sorted by ``(i, j)``.
    """
    n, nw = words.shape
    if max_distance < 0:
        raise SplitError(f"max_distance must be >= 0, got {max_distance}")
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, empty
    nbits = 64 * nw
    if block_bits is None:
        block_bits = int(np.clip(np.ceil(np.log2(n)), 8, 24))
    nblocks = int(np.clip(round(nbits / block_bits), 1, max_distance + 1))
    sub = max_distance // nblocks
    found_i, found_j, found_d = [], [], []
    checked = 0
    for b, (key, width) in enumerate(_blocks(words, nblocks)):
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
                checked += _check(
                    words, [rows[keep]], [other[keep]], max_distance, found_i, found_j, found_d
                )
        if progress is not None:
            progress(b + 1, nblocks)
    if not found_i:
        return empty, empty, empty
    i = np.concatenate(found_i)
    j = np.concatenate(found_j)
    d = np.concatenate(found_d)
    pair_key, first = np.unique(i * n + j, return_index=True)
    logger.debug(
        "near_pairs: %d blocks, probe radius %d, %d candidates, %d pairs within %d",
        nblocks,
        sub,
        checked,
        len(pair_key),
        max_distance,
    )
    return i[first], j[first], d[first]


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
