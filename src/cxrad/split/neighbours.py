"""Stage 3, split: near-duplicate pairs by a bounded nearest-neighbour search (faiss, binary HNSW).

Chest X-rays crowd together in perceptual-hash space, so "every pair within ``r`` bits" grows
as ``n²`` on the 64-bit hash (751 pairs at 2k films, 2.66M at 131k). This search bounds the
work per film instead:

- rows whose hash is *identical* (blank films, templates, re-encoded copies) are linked by
  sorting, linear in ``n``, and only one hash per value enters the index;
- every distinct hash asks a binary HNSW graph (``faiss.IndexBinaryHNSW``) for its ``k``
  nearest hashes, so at most ``k`` candidates per film, and keeps those within ``radius``;
- queries run in chunks, and pairs are stored as int64 index arrays, never Python objects.

Large duplicate groups stay whole through transitivity (union-find on the pairs). The cost is
``O(n log n)``; recall against an exhaustive search is measured in ``benchmarks/bench_scale.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cxrad.errors import SplitError
from cxrad.progress import Progress

logger = logging.getLogger(__name__)

NEIGHBOURS = 16
"""Candidates per distinct hash (the work bound per film)."""
HNSW_M = 32
"""Graph degree; 32 found every planted pair within 28 bits in 64k crowded 256-bit hashes."""
EF_SEARCH = 64
EF_CONSTRUCTION = 64
QUERY_CHUNK = 32_768
TEMPLATE_COUNT = 32
"""A hash value shared by more than this many rows is logged as a blank/template film."""


@dataclass(frozen=True)
class NearPairs:
    """Pairs ``i < j`` (row indices) with their Hamming distance, plus search counts."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    identical_pairs: int
    distinct_hashes: int
    template_hashes: int


def words_to_codes(words: np.ndarray) -> np.ndarray:
    """``(n, w)`` uint64 words (big-endian bit order, as ``hex_to_words`` gives) -> faiss uint8 codes."""
    nbytes = 8 * (words.shape[1] if words.ndim == 2 else 1)
    return np.ascontiguousarray(words.astype(">u8").view(np.uint8).reshape(len(words), nbytes))


def _identical(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first_row_per_hash, inverse, counts)``: rows grouped by identical code."""
    keys = codes.view(np.dtype((np.void, codes.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    return first, inverse.ravel(), counts


def _build(codes: np.ndarray, m: int) -> object:
    import faiss

    index = faiss.IndexBinaryHNSW(codes.shape[1] * 8, m)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.hnsw.efSearch = EF_SEARCH
    index.add(codes)
    return index


def near_pairs(
    codes: np.ndarray,
    radius: int,
    k: int = NEIGHBOURS,
    chunk: int = QUERY_CHUNK,
    progress: Progress | None = None,
) -> NearPairs:
    """Pairs of rows whose codes are within ``radius`` bits, at most ``k`` candidates per hash.

    Args:
        codes: ``(n, nbytes)`` uint8 binary codes (see :func:`words_to_codes`).
        radius: the largest Hamming distance kept.
        k: neighbours asked per distinct hash.
        chunk: queries per faiss call (bounds the ``chunk × k`` result arrays).
        progress: ``progress(done, total)`` per chunk of queries.

    Returns:
        :class:`NearPairs`; identical codes are returned as distance-0 star edges.
    """
    if radius < 0:
        raise SplitError(f"the near-duplicate radius must be >= 0, got {radius}")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n = len(codes)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return NearPairs(empty, empty, empty, 0, n, 0)
    first, inverse, counts = _identical(codes)
    # identical hashes: a star from the first row of each value (linear)
    same = first[inverse] != np.arange(n)
    si, sj = first[inverse][same], np.flatnonzero(same)
    templates = int((counts > TEMPLATE_COUNT).sum())
    if templates:
        logger.info(
            "%d hash values are shared by more than %d rows (blank or template-like films); "
            "they are grouped by equality, not searched",
            templates,
            TEMPLATE_COUNT,
        )
    uniq = codes[first]
    u = len(uniq)
    parts_i, parts_j, parts_d = [si], [sj], [np.zeros(len(si), dtype=np.int64)]
    if u > 1:
        index = _build(uniq, HNSW_M)
        kk = min(k + 1, u)
        for lo in range(0, u, chunk):
            dist, nbr = index.search(uniq[lo : lo + chunk], kk)
            q = np.arange(lo, lo + len(dist), dtype=np.int64)[:, None]
            keep = (nbr >= 0) & (nbr != q) & (dist <= radius)  # -1: fewer than k found
            parts_i.append(first[np.broadcast_to(q, nbr.shape)[keep]])
            parts_j.append(first[nbr[keep].astype(np.int64)])
            parts_d.append(dist[keep].astype(np.int64))
            if progress is not None:
                progress(min(lo + chunk, u), u)
    # a pair found from both ends appears twice; keep one
    i, j, d = np.concatenate(parts_i), np.concatenate(parts_j), np.concatenate(parts_d)
    lo_, hi_ = np.minimum(i, j), np.maximum(i, j)
    key, pos = np.unique(lo_ * n + hi_, return_index=True)
    logger.debug("near_pairs: %d rows, %d distinct hashes, %d pairs", n, u, len(key))
    return NearPairs(lo_[pos], hi_[pos], d[pos], len(si), u, templates)
