"""Stage 8, evaluate: the mean of a per-image score with a patient-clustered bootstrap CI.

Dice per film, heatmap mass in a box, pointing-game hits: each is one number per image, and
images of one patient are not independent, so the resamples draw patients (clusters).
"""

from __future__ import annotations

import numpy as np

from cxrad.evaluate.bootstrap import percentile_ci, resample_counts


def clustered_mean_ci(
    values: np.ndarray,
    clusters: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float | list[float] | int | None]:
    """Mean of ``values`` with a percentile CI from resampling clusters with replacement.

    Args:
        values: ``(N,)`` finite per-image numbers (NaNs are dropped with their cluster ids).
        clusters: ``(N,)`` integer cluster (patient) ids; None makes every image its own cluster.
        n_boot: bootstrap resamples.
        seed: resampling seed.
        level: CI coverage.

    Returns:
        ``{"mean", "ci", "n", "n_clusters"}``; ``mean`` and ``ci`` are None when there is no value.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.arange(len(v)) if clusters is None else np.asarray(clusters)
    keep = np.isfinite(v)
    v, c = v[keep], c[keep]
    if len(v) == 0:
        return {"mean": None, "ci": None, "n": 0, "n_clusters": 0}
    _, idx = np.unique(c, return_inverse=True)
    k = int(idx.max()) + 1
    sums = np.bincount(idx, weights=v, minlength=k)
    sizes = np.bincount(idx, minlength=k).astype(np.float64)
    counts = resample_counts(k, n_boot, seed).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (counts @ sums) / (counts @ sizes)
    return {
        "mean": float(v.mean()),
        "ci": percentile_ci(boot, level),
        "n": len(v),
        "n_clusters": k,
    }
