"""Stage 8, evaluate: metric code checked against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_roc_auc
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrad.evaluate.bootstrap import (
    bootstrap_metric,
    cluster_ids,
    percentile_ci,
    resample_counts,
    weighted_auroc,
    weighted_average_precision,
)
from cxrad.evaluate.metrics import classification_metrics, eligibility, sens_spec

NAN = np.nan


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    """300 rows, coarse scores (many ties), ~30% positives."""
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    s = np.round(rng.random(300) + 0.6 * y, 1)
    return y, s


def test_weighted_auroc_and_ap_match_sklearn_sample_weight(scored) -> None:
    y, s = scored
    clusters = np.random.default_rng(1).integers(0, 80, len(y))
    counts = resample_counts(80, 25, seed=3)
    auc = bootstrap_metric("auroc", s, y, clusters, counts)
    ap = bootstrap_metric("auprc", s, y, clusters, counts)
    for b in range(25):
        w = counts[b][clusters]
        assert auc[b] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)
    # Unit weights give the plain sklearn values.
    ones = np.ones((1, len(y)))
    assert weighted_auroc(s, y, ones)[0] == pytest.approx(roc_auc_score(y, s))
    assert weighted_average_precision(s, y, ones)[0] == pytest.approx(average_precision_score(y, s))


def test_weighted_auroc_is_nan_without_a_class() -> None:
    s = np.array([0.1, 0.4, 0.8])
    y = np.array([0.0, 1.0, 1.0])
    w = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
    out = weighted_auroc(s, y, w)
    assert np.isnan(out[0])  # the only negative has weight 0
    assert out[1] == pytest.approx(1.0)


def test_resample_counts_are_seeded_multinomials() -> None:
    a = resample_counts(50, 200, seed=7)
    assert a.shape == (200, 50)
    assert (a.sum(axis=1) == 50).all()
    assert np.array_equal(a, resample_counts(50, 200, seed=7))
    assert not np.array_equal(a, resample_counts(50, 200, seed=8))


def test_cluster_ids_merge_patients_and_duplicate_groups() -> None:
    df = pd.DataFrame(
        {
            "patient_id": pd.array(["a:1", "a:1", "a:2", None, None, "a:3"], dtype="string"),
            "dup_group": pd.array([0, 1, 2, 2, 3, 4], dtype="Int64"),
        }
    )
    c = cluster_ids(df)
    # rows 0,1 share a patient; row 2 and 3 share a duplicate group; 4 and 5 are alone.
    assert c[0] == c[1]
    assert c[2] == c[3]
    assert len({c[0], c[2], c[4], c[5]}) == 4
    no_ids = pd.DataFrame({"patient_id": pd.array([None, None, None], dtype="string")})
    assert len(set(cluster_ids(no_ids))) == 3


def _labels() -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(5)
    n = 200
    y = np.zeros((n, 3))
    y[:, 0] = rng.random(n) < 0.4
    y[:80, 0] = NAN  # unannotated rows for class A
    y[:, 1] = 0.0  # class B: no positives at all
    y[:, 2] = 0.0
    y[:3, 2] = 1.0  # class C: 3 positives
    p = rng.random((n, 3))
    p[:, 0] += 0.5 * np.nan_to_num(y[:, 0])
    # Make the unannotated rows score high: if NaN were read as negative, AUROC would drop.
    p[:80, 0] = 1.4
    return y, p, ["A", "B", "C"]


def test_classification_metrics_skip_nan_and_report_rare_classes() -> None:
    y, p, classes = _labels()
    m = classification_metrics(y, p, classes, np.arange(len(y)), {"A": 0.7}, n_boot=200, seed=0)
    a, b, c = m["per_class"]
    ann = ~np.isnan(y[:, 0])
    assert a["status"] == "ok"
    assert a["auroc"] == pytest.approx(roc_auc_score(y[ann, 0], p[ann, 0]))
    assert a["auprc"] == pytest.approx(average_precision_score(y[ann, 0], p[ann, 0]))
    assert a["n"] == 120 and a["n_unlabelled"] == 80
    assert a["auroc"] > roc_auc_score(np.nan_to_num(y[:, 0]), p[:, 0]) + 0.05
    monai_auc = compute_roc_auc(torch.tensor(p[ann, 0]), torch.tensor(y[ann, 0]))
    assert a["auroc"] == pytest.approx(float(monai_auc))
    assert b["status"].startswith("n/a: 0 positives") and b["auroc"] is None
    assert c["status"].startswith("n/a: 3 positives") and c["auroc_ci"] is None
    assert m["macro"]["classes"] == ["A"] and m["macro"]["auroc"] == pytest.approx(a["auroc"])
    assert set(m["excluded_classes"]) == {"B", "C"}
    # Thresholds: validation-picked where given, 0.5 otherwise.
    assert a["threshold"] == 0.7 and a["threshold_from"] == "validation"
    assert c["threshold"] == 0.5
    sens = np.mean(p[ann, 0][y[ann, 0] == 1] >= 0.7)
    assert a["sensitivity"] == pytest.approx(sens)


def test_bootstrap_ci_contains_point_and_is_deterministic() -> None:
    y, p, classes = _labels()
    kw = {"n_boot": 200, "seed": 11}
    m1 = classification_metrics(y, p, classes, np.arange(len(y)), **kw)
    m2 = classification_metrics(y, p, classes, np.arange(len(y)), **kw)
    m3 = classification_metrics(y, p, classes, np.arange(len(y)), n_boot=200, seed=12)
    a = m1["per_class"][0]
    lo, hi = a["auroc_ci"]
    assert lo < a["auroc"] < hi
    assert a["auprc_ci"][0] < a["auprc"] < a["auprc_ci"][1]
    assert m1["per_class"][0]["auroc_ci"] == m2["per_class"][0]["auroc_ci"]
    assert m1["per_class"][0]["auroc_ci"] != m3["per_class"][0]["auroc_ci"]
    assert m1["macro"]["auroc_ci"][0] < m1["macro"]["auroc"] < m1["macro"]["auroc_ci"][1]


def test_micro_average_pools_annotated_pairs_of_eligible_classes() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random((150, 3)) < 0.3).astype(float)
    y[:50, 1] = NAN
    p = rng.random((150, 3)) + 0.3 * np.nan_to_num(y)
    m = classification_metrics(y, p, ["A", "B", "C"], np.arange(150), n_boot=0)
    mask = ~np.isnan(y)
    assert m["micro"]["n_pairs"] == int(mask.sum())
    assert m["micro"]["auroc"] == pytest.approx(roc_auc_score(y[mask], p[mask]))
    assert m["micro"]["auroc_ci"] is None  # n_boot=0: point estimates only
    assert m["macro"]["auroc"] == pytest.approx(
        np.mean([roc_auc_score(y[mask[:, j], j], p[mask[:, j], j]) for j in range(3)])
    )


def test_cluster_bootstrap_is_wider_than_row_bootstrap() -> None:
    # 40 patients with 10 identical images each: the effective sample is 40, not 400.
    rng = np.random.default_rng(0)
    y_pat = (rng.random(40) < 0.5).astype(float)
    s_pat = rng.random(40) + 0.4 * y_pat
    y, s = np.repeat(y_pat, 10), np.repeat(s_pat, 10)
    patients = np.repeat(np.arange(40), 10)
    rows = np.arange(400)
    cl = percentile_ci(bootstrap_metric("auroc", s, y, patients, resample_counts(40, 500, 0)))
    rw = percentile_ci(bootstrap_metric("auroc", s, y, rows, resample_counts(400, 500, 0)))
    assert (cl[1] - cl[0]) > 2 * (rw[1] - rw[0])


def test_eligibility_and_sens_spec_by_hand() -> None:
    assert eligibility(0, 0) == "n/a: not annotated"
    assert eligibility(1, 10).startswith("n/a: 1 positive ")
    assert eligibility(10, 2).startswith("n/a: 2 negatives")
    assert eligibility(5, 5) == "ok"
    y = np.array([1, 1, 1, 0, 0, NAN])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.99])
    sens, spec = sens_spec(y, p, 0.5)
    assert sens == pytest.approx(2 / 3) and spec == pytest.approx(1 / 2)
