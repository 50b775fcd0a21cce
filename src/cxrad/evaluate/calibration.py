"""Stage 8, evaluate: calibration (ECE, Brier, reliability bins) and temperature scaling.

A probability of 0.8 should be right about 80% of the time. ECE measures the gap with 15
equal-width bins; the Brier score is the mean squared error of the probability. Temperature
scaling divides the logits by one scalar fitted on validation, which fixes over-confidence
without changing any ranking (so AUROC is untouched).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

logger = logging.getLogger(__name__)

N_BINS = 15


def reliability_bins(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> dict[str, list]:
    """Per equal-width bin: count, mean predicted probability and observed positive rate.

    Annotated rows only (NaN labels skipped). Empty bins hold None.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    m = ~np.isnan(y)
    y, p = y[m], p[m]
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "mean_predicted": [float(a / n) if n else None for a, n in zip(sum_p, count, strict=True)],
        "fraction_positive": [
            float(a / n) if n else None for a, n in zip(sum_y, count, strict=True)
        ],
        "n": int(count.sum()),
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> float | None:
    """ECE = sum over bins of (bin share) * |positive rate - mean probability|; None if no labels."""
    b = reliability_bins(y, p, n_bins)
    total = sum(b["count"])
    if not total:
        return None
    gaps = [
        n * abs(fy - fp)
        for n, fy, fp in zip(b["count"], b["fraction_positive"], b["mean_predicted"], strict=True)
        if n
    ]
    return float(sum(gaps) / total)


def brier_score(y: np.ndarray, p: np.ndarray) -> float | None:
    """Mean of (p - y)² over annotated rows; None if there are none."""
    y = np.asarray(y, dtype=np.float64)
    m = ~np.isnan(y)
    if not m.any():
        return None
    return float(np.mean((np.asarray(p, dtype=np.float64)[m] - y[m]) ** 2))


def calibration_table(
    y: np.ndarray, p: np.ndarray, classes: Sequence[str], n_bins: int = N_BINS
) -> dict[str, Any]:
    """ECE, Brier score and reliability bins for every class, plus their means over classes."""
    per_class = []
    for j, name in enumerate(classes):
        per_class.append(
            {
                "class": name,
                "ece": expected_calibration_error(y[:, j], p[:, j], n_bins),
                "brier": brier_score(y[:, j], p[:, j]),
                "bins": reliability_bins(y[:, j], p[:, j], n_bins),
            }
        )
    eces = [r["ece"] for r in per_class if r["ece"] is not None]
    briers = [r["brier"] for r in per_class if r["brier"] is not None]
    return {
        "n_bins": n_bins,
        "per_class": per_class,
        "mean_ece": float(np.mean(eces)) if eces else None,
        "mean_brier": float(np.mean(briers)) if briers else None,
    }


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float, activation: str) -> float:
    z = logits / temperature
    if activation == "softmax":
        # y here is the target index per row.
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-np.mean(logp[np.arange(len(y)), y]))
    m = ~np.isnan(y)
    zz, yy = z[m], y[m]
    # Stable binary cross-entropy with logits.
    return float(np.mean(np.maximum(zz, 0) - zz * yy + np.log1p(np.exp(-np.abs(zz)))))


def fit_temperature(logits: np.ndarray, y: np.ndarray, activation: str = "sigmoid") -> float:
    """The scalar T > 0 minimising the validation NLL of ``logits / T``.

    Args:
        logits: ``(N, C)`` raw model outputs on the validation split.
        y: ``(N, C)`` labels (NaN skipped) for sigmoid runs; for softmax runs only rows with
            exactly one positive are used.
        activation: ``"sigmoid"`` or ``"softmax"``, as in the run's config.

    Returns:
        The temperature; 1.0 when there is nothing to fit on.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if activation == "softmax":
        pos = np.nan_to_num(y, nan=0.0) == 1
        keep = pos.sum(axis=1) == 1
        logits, target = logits[keep], pos[keep].argmax(axis=1)
        if not len(target):
            return 1.0
        fit_y: np.ndarray = target
    else:
        if not np.any(~np.isnan(y)):
            return 1.0
        fit_y = y
    res = minimize_scalar(
        lambda log_t: _nll(logits, fit_y, float(np.exp(log_t)), activation),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(res.x))
    logger.info("fitted temperature %.3f on %d validation images", t, len(logits))
    return t
