"""Stage 8, evaluate: patient-clustered bootstrap with vectorised weighted AUROC and AUPRC.

Images of one patient are not independent: resampling rows would make confidence intervals
too narrow. Here a bootstrap resample draws *clusters* (patients, merged with duplicate groups)
with replacement, which turns into an integer weight per row. AUROC and average precision are
then computed from weighted, tie-grouped ranks that are sorted once per class.

The work is linear in the number of test films and memory stays bounded: resamples are drawn
in blocks (:class:`Resamples`, never the whole ``(n_boot, n_clusters)`` matrix), and every
block serves all classes and metrics at once (:func:`bootstrap_metrics`) before the next is
drawn. Blocks come from one seeded generator in order, so they equal :func:`resample_counts`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 4_000_000
"""Resamples are processed in blocks of about this many (resample, tie level) cells (~32 MB)."""
BLOCK_ELEMENTS = 8_000_000
"""A block of drawn resamples holds about this many (resample, cluster) counts (~32 MB)."""


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


@dataclass(frozen=True)
class Resamples:
    """The cluster counts of ``n_boot`` resamples, drawn block by block when asked.

    Stands in for the ``(n_boot, n_clusters)`` matrix of :func:`resample_counts` (and equals
    it, block after block, for the same seed) without holding it: at a million films that
    matrix would be gigabytes.
    """

    n_clusters: int
    n_boot: int
    seed: int = 0
    block_elements: int = BLOCK_ELEMENTS

    def __len__(self) -> int:
        return self.n_boot

    def blocks(self) -> Iterator[np.ndarray]:
        """``(b, n_clusters)`` int32 blocks of consecutive resamples, ``n_boot`` rows in all."""
        rng = np.random.default_rng(self.seed)
        k = self.n_clusters
        step = max(1, self.block_elements // max(k, 1))
        p = np.full(k, 1.0 / k) if k else None
        for lo in range(0, self.n_boot, step):
            b = min(step, self.n_boot - lo)
            if k == 0:
                yield np.zeros((b, 0), dtype=np.int32)
            else:
                yield rng.multinomial(k, p, size=b).astype(np.int32)


def count_blocks(counts: np.ndarray | Resamples) -> Iterator[np.ndarray]:
    """Blocks of resample counts from a :class:`Resamples` or an in-memory ``(B, K)`` array."""
    if isinstance(counts, Resamples):
        yield from counts.blocks()
        return
    counts = np.asarray(counts)
    step = max(1, BLOCK_ELEMENTS // max(counts.shape[1] if counts.ndim == 2 else 1, 1))
    for lo in range(0, len(counts), step):
        yield counts[lo : lo + step]


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


@dataclass(frozen=True)
class _Prepared:
    """One metric's tie levels, sorted once: cluster-by-level positive/negative row counts."""

    metric: str
    a_pos: csr_matrix  # (L, K): positives of cluster k at level l
    a_neg: csr_matrix


def _prepare(
    metric: str, scores: np.ndarray, y: np.ndarray, clusters: np.ndarray, k: int
) -> _Prepared:
    y = np.asarray(y, dtype=np.float64)
    level = _levels(np.asarray(scores, dtype=np.float64), y, metric)
    n_levels = int(level.max()) + 1 if len(level) else 0
    c = np.asarray(clusters, dtype=np.int64)
    a_pos = csr_matrix((y, (level, c)), shape=(n_levels, k))
    a_neg = csr_matrix((1.0 - y, (level, c)), shape=(n_levels, k))
    return _Prepared(metric, a_pos, a_neg)


def _block_values(task: _Prepared, counts: np.ndarray) -> np.ndarray:
    """The metric for each resample of one block, in sub-blocks of ``CHUNK_ELEMENTS`` cells."""
    fn = _METRICS[task.metric]
    n_levels = task.a_pos.shape[0]
    step = max(1, CHUNK_ELEMENTS // max(n_levels, 1))
    out = []
    for lo in range(0, len(counts), step):
        c = counts[lo : lo + step].astype(np.float64).T  # (K, b)
        out.append(fn(np.asarray(task.a_pos @ c).T, np.asarray(task.a_neg @ c).T))
    return np.concatenate(out) if out else np.zeros(0)


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


def bootstrap_metrics(
    tasks: Mapping[Hashable, tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    counts: np.ndarray | Resamples,
) -> dict[Hashable, np.ndarray]:
    """Several metrics over the same resamples in one pass: ``{key: (n_boot,) values}``.

    Each task is ``(metric, scores, y, clusters)`` as for :func:`bootstrap_metric`. Scores are
    ranked once per task; each block of resamples is drawn once and serves every task, so the
    cost is linear in the rows and memory is one block plus the tasks' sparse level tables.
    """
    k = counts.n_clusters if isinstance(counts, Resamples) else np.asarray(counts).shape[-1]
    prepared = {key: _prepare(m, s, y, c, k) for key, (m, s, y, c) in tasks.items()}
    parts: dict[Hashable, list[np.ndarray]] = {key: [] for key in prepared}
    for block in count_blocks(counts):
        for key, task in prepared.items():
            parts[key].append(_block_values(task, block))
    return {key: np.concatenate(v) if v else np.zeros(0) for key, v in parts.items()}


def bootstrap_metric(
    metric: str,
    scores: np.ndarray,
    y: np.ndarray,
    clusters: np.ndarray,
    counts: np.ndarray | Resamples,
) -> np.ndarray:
    """One value of ``metric`` per resample: ``(n_boot,)``, NaN where a resample lacks a class.

    Args:
        metric: ``"auroc"`` or ``"auprc"`` (average precision).
        scores: ``(N,)`` model scores of the annotated rows.
        y: ``(N,)`` 0/1 labels.
        clusters: ``(N,)`` cluster index of each row, into the columns of ``counts``.
        counts: ``(n_boot, K)`` weights per cluster (:func:`resample_counts`) or a
            :class:`Resamples` that draws them block by block.
    """
    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(_METRICS)}")
    if len(counts) == 0:
        return np.zeros(0)
    return bootstrap_metrics({0: (metric, scores, y, clusters)}, counts)[0]


def percentile_ci(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The central ``level`` percentile interval of the finite values, or None if there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(v, [a, 100.0 - a])
    return [float(lo), float(hi)]
