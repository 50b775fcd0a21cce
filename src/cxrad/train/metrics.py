"""Stage 7, train: the validation metrics that select checkpoints, and threshold picking."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def per_class_auroc(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> dict[str, float | None]:
    """AUROC of each class over its annotated rows; None when it has no positive or no negative."""
    out: dict[str, float | None] = {}
    for j, c in enumerate(classes):
        y = labels[:, j]
        m = ~np.isnan(y)
        yj = y[m]
        if (yj == 1).any() and (yj == 0).any():
            out[c] = float(roc_auc_score(yj, probs[m, j]))
        else:
            out[c] = None
    return out


def macro_auroc(per_class: dict[str, float | None]) -> float:
    """Mean of the defined per-class AUROCs (NaN when none is defined)."""
    vals = [v for v in per_class.values() if v is not None]
    return float(np.mean(vals)) if vals else math.nan


THRESHOLD_METHOD = "youden_j_on_val_midpoint"
"""Recorded in each run's config beside its thresholds (see :func:`youden_thresholds`)."""


def youden_thresholds(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], default: float = 0.5
) -> dict[str, float]:
    """Per-class decision thresholds maximising Youden's J = sensitivity + specificity - 1.

    Youden's J weighs a missed finding and a false alarm equally whatever the prevalence, which
    suits screening across sources whose prevalences differ wildly; the threshold is the ROC
    point farthest above the chance diagonal. Classes that cannot be scored on validation keep
    ``default``.

    Every threshold between the lowest score called positive at that point and the next lower
    score gives the same validation result; the one returned is the middle of that gap in
    logit space, not its edge. When validation separates a class almost perfectly the gap is
    wide, and its edge (what ``roc_curve`` reports) sits right against the positives, so a
    slight shift at test time turns into false negatives (or, for the other class, false
    alarms). The middle keeps the largest margin to both sides.
    """
    out: dict[str, float] = {}
    for j, c in enumerate(classes):
        y = labels[:, j]
        m = ~np.isnan(y)
        yj = y[m]
        if not ((yj == 1).any() and (yj == 0).any()):
            out[c] = default
            continue
        fpr, tpr, thr = roc_curve(yj, probs[m, j], drop_intermediate=False)
        k = int(np.argmax(tpr - fpr))
        hi = float(np.clip(thr[k], 0.0, 1.0))
        lo = float(thr[k + 1]) if k + 1 < len(thr) else 0.0
        out[c] = _logit_midpoint(lo, hi)
    return out


def _logit_midpoint(lo: float, hi: float, eps: float = 1e-7) -> float:
    """The probability half-way between ``lo`` and ``hi`` on the logit scale (``hi`` if equal)."""
    if not hi > lo:
        return hi
    a, b = np.clip([lo, hi], eps, 1 - eps)
    mid = (math.log(a / (1 - a)) + math.log(b / (1 - b))) / 2
    t = 1.0 / (1.0 + math.exp(-mid))
    # The result must fall strictly inside (lo, hi] to keep the validation operating point.
    return float(min(max(t, np.nextafter(lo, 1.0)), hi))
