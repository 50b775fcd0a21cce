"""Stage 8, evaluate: AUROC, rates and differences with patient-bootstrap CIs, for row subsets.

The site-gap and subgroup sections score many small subsets (a held-out source, an age band);
these helpers give each one a point value and a 95% CI from the patient-clustered bootstrap
of :mod:`cxrad.evaluate.bootstrap`, with the same "too few to score" rule as the main table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from cxrad.evaluate.bootstrap import bootstrap_metric, percentile_ci, resample_counts
from cxrad.evaluate.metrics import MIN_COUNT, eligibility, point_auroc


def auroc_ci(
    y: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray,
    n_boot: int,
    seed: int,
    min_count: int = MIN_COUNT,
) -> dict[str, Any]:
    """``{"auroc", "ci", "n_pos", "n_neg", "status"}`` over the annotated rows; ``"boot"`` holds the resamples.

    Args:
        y: labels, 1 / 0 / NaN (NaN rows are skipped).
        scores: higher = more likely positive.
        clusters: cluster id per row (patients merged with duplicate groups), any integers.
        n_boot: bootstrap resamples (0: no CI).
        seed: seeds the resampling.
        min_count: fewest positives and negatives for a value.
    """
    y = np.asarray(y, dtype=np.float64)
    m = ~np.isnan(y)
    yy, ss = y[m], np.asarray(scores, dtype=np.float64)[m]
    n_pos = int(np.sum(yy == 1))
    n_neg = int(len(yy) - n_pos)
    status = eligibility(n_pos, n_neg, min_count)
    out: dict[str, Any] = {"n_pos": n_pos, "n_neg": n_neg, "status": status}
    if status != "ok":
        out.update(auroc=None, ci=None, boot=np.full(n_boot, np.nan))
        return out
    cl = np.unique(np.asarray(clusters)[m], return_inverse=True)[1].ravel()
    counts = resample_counts(int(cl.max()) + 1, n_boot, seed)
    boot = bootstrap_metric("auroc", ss, yy, cl, counts)
    out.update(auroc=point_auroc(yy, ss), ci=percentile_ci(boot), boot=boot)
    return out


def rate_ci(flags: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Fraction of True ``flags`` with a cluster-bootstrap CI: ``{"rate", "ci", "n"}`` (rate None if n = 0)."""
    f = np.asarray(flags, dtype=np.float64)
    n = len(f)
    if n == 0:
        return {"rate": None, "ci": None, "n": 0}
    cl = np.unique(np.asarray(clusters), return_inverse=True)[1].ravel()
    k = int(cl.max()) + 1
    counts = resample_counts(k, n_boot, seed).astype(np.float64)
    per = csr_matrix(
        (
            np.stack([f, np.ones(n)]).ravel(),
            (np.r_[cl, cl], np.r_[np.zeros(n), np.ones(n)].astype(int)),
        ),
        shape=(k, 2),
    )
    tot = counts @ per.toarray() if n_boot else np.zeros((0, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = tot[:, 0] / tot[:, 1]
    return {"rate": float(f.mean()), "ci": percentile_ci(boot), "n": n}


def difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a - b`` of two :func:`auroc_ci` results, with the CI of the difference of independent resamples."""
    if a.get("auroc") is None or b.get("auroc") is None:
        return {"value": None, "ci": None}
    return {"value": a["auroc"] - b["auroc"], "ci": percentile_ci(a["boot"] - b["boot"])}


def public(result: dict[str, Any]) -> dict[str, Any]:
    """A result without its bootstrap array (for JSON)."""
    return {k: v for k, v in result.items() if k != "boot"}


__all__ = ["auroc_ci", "difference", "public", "rate_ci"]
