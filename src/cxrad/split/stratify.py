"""Stage 3, split: iterative stratification of grouped, multi-label items (Sechidis et al. 2011).

Items are connected components (all images of one patient or one duplicate group), each with
a size (images) and a count of positive images per class. The rarest class is placed first,
so it is spread over the splits before common classes fill them. One addition to the paper:
while a split with a non-zero ratio has no positive of the class yet, it is preferred, so a
rare class appears in every split whenever it has enough components.
"""

from __future__ import annotations

import numpy as np


def iterative_stratify(
    positives: np.ndarray, sizes: np.ndarray, ratios: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Split index (``0..len(ratios)-1``) for every item.

    Args:
        positives: ``(K, C)`` positive image counts per item and class (NaN labels excluded).
        sizes: ``(K,)`` images per item.
        ratios: ``(S,)`` target fractions of images per split; splits at 0 receive nothing.
        rng: decides the order among items of equal size, hence what a seed changes.
    """
    k = len(sizes)
    out = np.full(k, -1, dtype=np.int64)
    if k == 0:
        return out
    pos = np.asarray(positives, dtype=np.float64)
    has = pos > 0
    allowed = np.asarray(ratios) > 0
    want_lab = ratios[:, None] * pos.sum(axis=0)[None, :]
    want_size = ratios * float(sizes.sum())
    present = np.zeros_like(want_lab, dtype=bool)
    tie = rng.random(k)
    split_ids = np.arange(len(ratios))

    def place(item: int, label: int | None) -> None:
        if label is None:
            key = (want_size, split_ids * 0, allowed)
        else:
            key = (want_size, want_lab[:, label], ~present[:, label] & allowed, allowed)
        best = np.lexsort(key)[-1]  # last key is primary; largest wins
        out[item] = best
        want_lab[best] -= pos[item]
        want_size[best] -= sizes[item]
        present[best] |= has[item]

    remaining = np.ones(k, dtype=bool)
    while True:
        left = pos[remaining].sum(axis=0)
        if not (left > 0).any():
            break
        label = int(np.flatnonzero(left > 0)[np.argmin(left[left > 0])])
        items = np.flatnonzero(remaining & has[:, label])
        for item in items[np.lexsort((tie[items], -sizes[items]))]:
            place(int(item), label)
        remaining[items] = False
    items = np.flatnonzero(remaining)
    for item in items[np.lexsort((tie[items], -sizes[items]))]:
        place(int(item), None)
    return out
