"""Stage 6, models: how far a set of scores moved from the run's validation scores (for adapt).

A run records, per class, 21 quantiles of its val logits (:func:`score_reference`, written by
``finalise``). A site's logits are compared with them: the mean shift (in logits) and a
Kolmogorov-Smirnov statistic approximated on those quantiles (the largest gap between the
site's empirical CDF and the val CDF at the recorded quantiles; exact to within 1/20).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

LEVELS = np.linspace(0.0, 1.0, 21)


def score_reference(logits: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class quantiles and mean of val logits, small enough to live in the run config."""
    z = np.asarray(logits, dtype=np.float64)
    return {
        "levels": LEVELS.round(3).tolist(),
        "quantiles": {
            c: np.quantile(z[:, j], LEVELS).round(5).tolist() for j, c in enumerate(classes)
        },
        "mean": {c: round(float(z[:, j].mean()), 5) for j, c in enumerate(classes)},
        "n": len(z),
    }


def score_shift(
    reference: dict[str, Any] | None, logits: np.ndarray, classes: Sequence[str]
) -> dict[str, Any] | None:
    """Per class ``{"ks", "mean_shift"}`` of ``logits`` against ``reference`` (None without one)."""
    if not reference:
        return None
    z = np.asarray(logits, dtype=np.float64)
    levels = np.asarray(reference["levels"])
    out = {}
    for j, c in enumerate(classes):
        q = reference["quantiles"].get(c)
        if q is None:
            continue
        site = np.sort(z[:, j])
        cdf = np.searchsorted(site, np.asarray(q), side="right") / len(site)
        out[c] = {
            "ks": round(float(np.max(np.abs(cdf - levels))), 4),
            "mean_shift": round(float(site.mean() - reference["mean"][c]), 4),
        }
    return out
