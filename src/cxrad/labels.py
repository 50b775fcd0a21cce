"""Shared vocabulary: the project's 17 classes and the score convention.

Every stage speaks these names. A manifest has one float column per class:
1 = present, 0 = known absent, NaN = the source does not annotate that class.
A higher score always means more abnormal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASSES: tuple[str, ...] = (
    "ATELECTASIS",
    "CARDIOMEGALY",
    "CONSOLIDATION",
    "COVID_19",
    "EDEMA",
    "EFFUSION",
    "EMPHYSEMA",
    "FIBROSIS",
    "HERNIA",
    "INFILTRATION",
    "MASS",
    "NODULE",
    "NORMAL",
    "PLEURAL_THICKENING",
    "PNEUMONIA",
    "PNEUMOTHORAX",
    "TUBERCULOSIS",
)
"""The original project's 17 classes, in its (alphabetical) order."""

NORMAL = "NORMAL"
FINDINGS: tuple[str, ...] = tuple(c for c in CLASSES if c != NORMAL)
"""The 16 abnormal findings: every class except NORMAL."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names used in the manifest's ``split`` column."""


def abnormal_score(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """One number per image, higher = more abnormal.

    ``1 - p(NORMAL)`` when the model has a NORMAL output, else the largest finding probability.

    Args:
        probs: ``(N, C)`` or ``(C,)`` probabilities in the order of ``classes``.
        classes: the model's class names.
    """
    p = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    if NORMAL in classes:
        return 1.0 - p[..., classes.index(NORMAL)]
    return p.max(axis=-1)
