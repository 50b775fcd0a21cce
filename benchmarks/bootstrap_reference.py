"""Benchmark reference: the evaluation bootstrap before issue #17 (a copy, for bench_scale.py).

The whole ``(n_boot, n_clusters)`` count matrix is held, and tie levels are recomputed per
block of resamples. Kept only to measure the new one against it in the same run.

Original docstring: patient-clustered bootstrap with vectorised weighted AUROC and AUPRC.

Images of one patient are not independent: resampling rows would make confidence intervals
too narrow. Here a bootstrap resample draws *clusters* (patients, merged with duplicate groups)
with replacement, which turns into an integer weight per row. AUROC and average precision are
then computed for all resamples at once from weighted, tie-grouped ranks, so 1,000 resamples
of 17 classes over thousands of images take seconds instead of minutes.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 4_000_000
"""Resamples are processed in blocks of about this many (resample, tie level) cells (~32 MB)."""


def cluster_ids(df: pd.DataFrame) -> np.ndarray:
    """One integer cluster per row: rows sharing a patient or a duplicate group are one cluster.

    Rows without ``patient_id`` (and without ``dup_group``) are their own cluster. Patients and
    duplicate groups are merged transitively, so a picture that appears under two patients ties
    them together, as the split stage does.

    Args:
        df: manifest rows; uses ``patient_id`` and, if present, ``dup_group``.

    Returns:
        ``(N,)`` int64 labels in ``0 .. K-1``.
    """
    n = len(df)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys: list[np.ndarray] = []
    for col in ("patient_id", "dup_group"):
        if col in df.columns:
            s = df[col].astype("string")
            codes = np.where(s.isna().to_numpy(), -1, pd.factorize(s)[0])
            keys.append(codes)
    # Bipartite graph rows <-> key nodes; connected components are the clusters.
    rows, cols, offset = [], [], n
    for codes in keys:
        has = codes >= 0
        rows.append(np.flatnonzero(has))
        cols.append(codes[has] + offset)
        offset += int(codes.max()) + 1 if has.any() else 0
    if rows:
        r = np.concatenate(rows)
        c = np.concatenate(cols)
    else:
        r = c = np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(offset, offset))
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels[:n])[0].astype(np.int64)


def resample_counts(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each cluster is drawn in each resample: ``(n_boot, n_clusters)`` int32.

    Each row is one multinomial draw of ``n_clusters`` clusters with replacement, seeded so the
    same seed always gives the same intervals.
    """
    rng = np.random.default_rng(seed)
    if n_clusters == 0 or n_boot == 0:
        return np.zeros((n_boot, n_clusters), dtype=np.int32)
    p = np.full(n_clusters, 1.0 / n_clusters)
    return rng.multinomial(n_clusters, p, size=n_boot).astype(np.int32)


def _levels(scores: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """A group index per row: tied scores share a group, ordered as the metric sweeps them.

    Runs of consecutive tie levels that hold only negatives are merged (they only add to the
    false positives seen by the next positive), and for AUROC so are runs of positive-only
    levels. This is exact for any weights, and shrinks the ``(B, L)`` arrays to about twice the
    minority class, which is what makes 1,000 resamples cheap.
    """
    descending = metric == "auprc"
    _, level = np.unique(-scores if descending else scores, return_inverse=True)
    level = level.ravel()
    n_levels = int(level.max()) + 1 if len(level) else 0
    has_pos = np.bincount(level, weights=y, minlength=n_levels) > 0
    has_neg = np.bincount(level, weights=1.0 - y, minlength=n_levels) > 0
    kind = has_pos.astype(np.int8) + 2 * has_neg.astype(np.int8)  # 1 pos, 2 neg, 3 mixed
    if descending:
        boundary = (kind != 2) | (np.r_[0, kind[:-1]] != 2)
    else:
        boundary = (kind != np.r_[0, kind[:-1]]) | (kind == 3)
    group = np.cumsum(boundary) - 1
    return group[level]


def _level_weights(
    scores: np.ndarray,
    y: np.ndarray,
    clusters: np.ndarray,
    counts: np.ndarray,
    metric: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per tie level for each resample: two ``(B, L)`` arrays.

    A sparse ``(K, L)`` matrix counts the positive (negative) rows of each cluster at each
    level, so ``counts @ A`` gives the weights without ever building a ``(B, N)`` array.
    """
    y = np.asarray(y, dtype=np.float64)
    level = _levels(np.asarray(scores, dtype=np.float64), y, metric)
    n_levels = int(level.max()) + 1 if len(level) else 0
    k = counts.shape[1]
    a_pos = csr_matrix((y, (clusters, level)), shape=(k, n_levels))
    a_neg = csr_matrix((1.0 - y, (clusters, level)), shape=(k, n_levels))
    c = counts.astype(np.float64)
    return np.asarray((a_pos.T @ c.T).T), np.asarray((a_neg.T @ c.T).T)


def _auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    tp = np.cumsum(pos, axis=1)
    called = tp + np.cumsum(neg, axis=1)
    precision = np.where(called > 0, tp / np.where(called > 0, called, 1.0), 0.0)
    total = tp[:, -1] if tp.shape[1] else np.zeros(len(tp))
    return np.where(
        total > 0, np.sum(pos * precision, axis=1) / np.where(total > 0, total, 1.0), np.nan
    )


_METRICS = {"auroc": _auroc, "auprc": _average_precision}


def weighted_auroc(scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC for each row of weights ``w`` (``(B, N)``); ties count one half. NaN if one class has no weight.

    Equals ``sklearn.metrics.roc_auc_score(y, scores, sample_weight=w[b])`` for every ``b``.
    """
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    return bootstrap_metric("auroc", scores, y, np.arange(w.shape[1]), w)


def weighted_average_precision(scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision (area under the step PR curve) for each row of ``w``; NaN without positives.

    Equals ``sklearn.metrics.average_precision_score(y, scores, sample_weight=w[b])``.
    """
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    return bootstrap_metric("auprc", scores, y, np.arange(w.shape[1]), w)


def bootstrap_metric(
    metric: str,
    scores: np.ndarray,
    y: np.ndarray,
    clusters: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """One value of ``metric`` per resample: ``(n_boot,)``, NaN where a resample lacks a class.

    Args:
        metric: ``"auroc"`` or ``"auprc"`` (average precision).
        scores: ``(N,)`` model scores of the annotated rows.
        y: ``(N,)`` 0/1 labels.
        clusters: ``(N,)`` cluster index of each row, into the columns of ``counts``.
        counts: ``(n_boot, K)`` weights per cluster, from :func:`resample_counts`.
    """
    fn = _METRICS[metric]
    if len(counts) == 0:
        return np.zeros(0)
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    n_levels = 2 * (n_pos if metric == "auprc" else min(n_pos, n_neg)) + 2
    block = max(1, CHUNK_ELEMENTS // max(n_levels, 1))
    out = []
    for i in range(0, len(counts), block):
        pos, neg = _level_weights(scores, y, clusters, counts[i : i + block], metric)
        out.append(fn(pos, neg))
    return np.concatenate(out)


def percentile_ci(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The central ``level`` percentile interval of the finite values, or None if there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(v, [a, 100.0 - a])
    return [float(lo), float(hi)]
