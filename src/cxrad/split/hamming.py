"""Stage 3, split: perceptual hashes as uint64 words, and Hamming distances between them.

The search for near pairs lives in :mod:`cxrad.split.neighbours` (faiss).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrad.errors import SplitError


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
