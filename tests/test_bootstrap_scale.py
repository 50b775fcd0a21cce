"""Stage 8, evaluate: the block-wise bootstrap equals per-resample scikit-learn on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrad.evaluate import bootstrap
from cxrad.evaluate.bootstrap import Resamples, percentile_ci, resample_counts
from cxrad.evaluate.metrics import classification_metrics
from cxrad.evaluate.single_label import top1_view


def test_resample_blocks_equal_the_whole_matrix() -> None:
    r = Resamples(37, 101, seed=5, block_elements=37 * 8)  # blocks of 8 resamples
    blocks = list(r.blocks())
    assert len(blocks) == 13 and all(len(b) <= 8 for b in blocks)
    assert np.array_equal(np.concatenate(blocks), resample_counts(37, 101, seed=5))
    assert len(r) == 101


def _case(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.3, 0.1, 0.5]).astype(float)
    y[: n // 4, 2] = np.nan  # a class not annotated for a quarter of the rows
    p = np.round(rng.random((n, 3)) + 0.5 * np.nan_to_num(y), 2)  # ties
    clusters = rng.integers(0, n // 3, n)  # patients with ~3 images each
    return y, p, np.unique(clusters, return_inverse=True)[1]


@pytest.mark.parametrize("block", [16, 10**9])
def test_classification_cis_equal_sklearn_per_resample(
    monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    y, p, clusters = _case()
    k = int(clusters.max()) + 1
    monkeypatch.setattr(bootstrap, "BLOCK_ELEMENTS", block * k)  # small blocks: many passes
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 50)  # and sub-blocks inside each
    m = classification_metrics(y, p, ["A", "B", "C"], clusters, n_boot=60, seed=3)
    counts = resample_counts(k, 60, seed=3)
    for j, row in enumerate(m["per_class"]):
        ok = ~np.isnan(y[:, j])
        ya, pa, ca = y[ok, j], p[ok, j], clusters[ok]
        assert row["auroc"] == pytest.approx(roc_auc_score(ya, pa))
        auc, ap = [], []
        for b in range(60):
            w = counts[b, ca]
            auc.append(roc_auc_score(ya, pa, sample_weight=w))
            ap.append(average_precision_score(ya, pa, sample_weight=w))
        assert row["auroc_ci"] == pytest.approx(percentile_ci(np.array(auc)), abs=1e-12)
        assert row["auprc_ci"] == pytest.approx(percentile_ci(np.array(ap)), abs=1e-12)
    mask = ~np.isnan(y)
    rows = np.nonzero(mask)[0]
    micro = [
        roc_auc_score(y[mask], p[mask], sample_weight=counts[b, clusters[rows]]) for b in range(60)
    ]
    assert m["micro"]["auroc_ci"] == pytest.approx(percentile_ci(np.array(micro)), abs=1e-12)


def test_top1_cis_equal_the_dense_weighted_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    n, c, k = 300, 3, 90
    t = rng.integers(0, c, n)
    y = np.eye(c)[t]
    p = rng.random((n, c)) + 0.8 * y
    clusters = rng.integers(0, k, n)
    monkeypatch.setattr(bootstrap, "BLOCK_ELEMENTS", 7 * k)
    got = top1_view(y, p, ["A", "B", "C"], clusters=clusters, counts=Resamples(k, 80, seed=2))
    counts = resample_counts(k, 80, seed=2)
    pred = p.argmax(1)
    acc, bal = [], []
    for b in range(80):
        w = counts[b, clusters].astype(float)
        acc.append(np.sum(w * (pred == t)) / w.sum())
        rec = [np.sum(w * (pred == t) * (t == i)) / np.sum(w * (t == i)) for i in range(c)]
        bal.append(np.mean(rec))
    assert got["accuracy_ci"] == pytest.approx(percentile_ci(np.array(acc)), abs=1e-12)
    assert got["balanced_accuracy_ci"] == pytest.approx(percentile_ci(np.array(bal)), abs=1e-12)
