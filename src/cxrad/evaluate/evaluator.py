"""Stage 8, evaluate: every metric of the report from predictions and manifest rows (no model, no I/O).

Kept separate from running the model so the metrics can be computed, and tested, on any
array of probabilities, for instance the outputs of another toolkit on the same manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrad.evaluate.bootstrap import Resamples, cluster_ids
from cxrad.evaluate.calibration import calibration_table
from cxrad.evaluate.metrics import MIN_COUNT, classification_metrics, point_auroc
from cxrad.evaluate.shortcut import audit_verdict, site_probe, source_probe, within_source_auroc
from cxrad.evaluate.single_label import top1_view
from cxrad.progress import Progress

logger = logging.getLogger(__name__)


def per_source(
    df: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    classes: Sequence[str],
    y_train: np.ndarray | None,
    min_count: int = MIN_COUNT,
) -> list[dict[str, Any]]:
    """The headline numbers restricted to each source (point estimates).

    Macro AUROC is over the classes eligible *within* that source, listed with it.
    """
    out = []
    src = df["source"].astype("string").fillna("<unknown>").to_numpy(dtype=object)
    for s in sorted(set(src)):
        m = src == s
        aucs = {c: point_auroc(y[m, j], p[m, j], min_count) for j, c in enumerate(classes)}
        aucs = {c: a for c, a in aucs.items() if a is not None}
        t1 = top1_view(y[m], p[m], classes, y_train)
        out.append(
            {
                "source": str(s),
                "n": int(m.sum()),
                "macro_auroc": float(np.mean(list(aucs.values()))) if aucs else None,
                "macro_classes": list(aucs),
                "n_single_label": t1["n"],
                "top1_accuracy": t1.get("accuracy"),
                "balanced_accuracy": t1.get("balanced_accuracy"),
                "majority_accuracy": t1.get("majority", {}).get("accuracy"),
            }
        )
    return out


def evaluate_predictions(
    df: pd.DataFrame,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    thresholds: Mapping[str, float] | None = None,
    y_train: np.ndarray | None = None,
    features: np.ndarray | None = None,
    feature_rows: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_COUNT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compute every section of the report for one set of predictions.

    Args:
        df: the evaluated manifest rows, aligned with ``probs`` (needs the class columns,
            ``source``, ``patient_id``; ``dup_group`` is used when present).
        probs: ``(N, C)`` probabilities for ``classes``.
        classes: the model's classes.
        thresholds: per-class thresholds picked on validation.
        y_train: ``(M, C)`` labels of the train split, for the baselines' class frequencies.
        features: model features for the source probe (None skips the probe).
        feature_rows: which rows ``features`` belong to (default: all ``N``, in order).
        n_boot: bootstrap resamples for CIs.
        seed: seeds the bootstrap and the probe.
        min_count: fewest positives / negatives for a class to be scored.
        progress: ``progress(done, total)`` over the per-class metrics.

    Returns:
        ``{"classification", "top1", "per_source", "shortcut", "calibration", "n"}``.
    """
    classes = list(classes)
    y = df[classes].to_numpy(dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    clusters = cluster_ids(df)
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    cls = classification_metrics(
        y, p, classes, clusters, thresholds, n_boot, seed, min_count, progress=progress
    )
    counts = Resamples(n_clusters, n_boot, seed + 1)
    top1 = top1_view(y, p, classes, y_train, clusters, counts)
    sources = df["source"].astype("string").fillna("<unknown>").to_numpy(dtype=object)
    within = within_source_auroc(y, p, classes, sources, min_count)
    fr = np.arange(len(df)) if feature_rows is None else np.asarray(feature_rows)
    probe = source_probe(features, sources[fr], clusters[fr], seed=seed)
    by_site = site_probe(features, df.iloc[fr], clusters[fr], seed=seed)
    return {
        "n": len(df),
        "n_clusters": n_clusters,
        "classification": cls,
        "top1": top1,
        "per_source": per_source(df, y, p, classes, y_train, min_count),
        "shortcut": {
            "probe": probe,
            "site_probe": by_site,
            "within_source": within,
            "verdict": audit_verdict(probe, within),
        },
        "calibration": calibration_table(y, p, classes),
    }
