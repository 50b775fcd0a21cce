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


def youden_thresholds(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], default: float = 0.5
) -> dict[str, float]:
    """Per-class decision thresholds maximising Youden's J = sensitivity + specificity - 1.

    Youden's J weighs a missed finding and a false alarm equally whatever the prevalence, which
    suits screening across sources whose prevalences differ wildly; the threshold is the ROC
    point farthest above the chance diagonal. Classes that cannot be scored on validation keep
    ``default``.
    """
    out: dict[str, float] = {}
    for j, c in enumerate(classes):
        y = labels[:, j]
        m = ~np.isnan(y)
        yj = y[m]
        if not ((yj == 1).any() and (yj == 0).any()):
            out[c] = default
            continue
        fpr, tpr, thr = roc_curve(yj, probs[m, j])
        k = int(np.argmax(tpr - fpr))
        out[c] = float(np.clip(thr[k], 0.0, 1.0))
    return out
