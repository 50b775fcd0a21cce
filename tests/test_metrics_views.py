"""Stage 8, evaluate: calibration, baselines and the shortcut audit on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from cxrad.evaluate.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from cxrad.evaluate.shortcut import audit_verdict, source_probe, within_source_auroc
from cxrad.evaluate.single_label import single_label_targets, top1_view

NAN = np.nan


def test_ece_and_brier_by_hand() -> None:
    y = np.array([0, 1, 1, 1, NAN])
    p = np.array([0.1, 0.1, 0.9, 0.9, 0.5])
    # bin of 0.1: mean p 0.1, half positive -> gap 0.4; bin of 0.9: 0.9 vs 1.0 -> 0.1.
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert brier_score(y, p) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    b = reliability_bins(y, p)
    assert sum(b["count"]) == 4 and b["count"][1] == 2 and b["count"][13] == 2
    assert b["fraction_positive"][1] == pytest.approx(0.5)
    assert expected_calibration_error(np.array([NAN]), np.array([0.3])) is None
    # p = 1.0 falls in the last bin, not off the end.
    assert expected_calibration_error(np.array([1.0]), np.array([1.0])) == pytest.approx(0.0)


def test_fit_temperature_recovers_overconfidence() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(4000, 2))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    y[:100, 1] = NAN
    t = fit_temperature(3.0 * z, y)  # logits 3x too large
    assert t == pytest.approx(3.0, rel=0.1)
    # softmax: one positive per row, drawn from softmax(z)
    pz = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    k = (rng.random(len(z)) < pz[:, 1]).astype(int)
    ys = np.eye(2)[k]
    assert fit_temperature(0.5 * z, ys, "softmax") == pytest.approx(0.5, rel=0.15)


def test_single_label_targets_ignore_nan() -> None:
    y = np.array([[1, 0, NAN], [1, 1, 0], [NAN, NAN, 1], [0, 0, 0]])
    mask, t = single_label_targets(y)
    assert mask.tolist() == [True, False, True, False]
    assert t.tolist() == [0, -1, 2, -1]


def test_top1_view_and_baselines_by_hand() -> None:
    classes = ["NORMAL", "PNEUMONIA", "TB"]
    eye = np.eye(3)
    # evaluated: 5 NORMAL, 3 PNEUMONIA, 2 TB; train: 2 NORMAL, 6 PNEUMONIA, 2 TB
    y = eye[[0] * 5 + [1] * 3 + [2] * 2]
    y_train = eye[[0] * 2 + [1] * 6 + [2] * 2]
    pred = [0, 0, 0, 0, 1, 1, 1, 0, 2, 0]  # 4/5, 2/3, 1/2 right
    p = eye[pred] * 0.8 + 0.1
    v = top1_view(y, p, classes, y_train)
    assert v["n"] == 10
    assert v["accuracy"] == pytest.approx(0.7)
    assert v["balanced_accuracy"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)
    assert v["confusion"][1] == [1, 2, 0]
    assert v["majority"]["class"] == "PNEUMONIA" and v["majority"]["from"] == "train split"
    assert v["majority"]["accuracy"] == pytest.approx(0.3)
    assert v["majority"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert v["prior"]["accuracy"] == pytest.approx(0.2 * 0.5 + 0.6 * 0.3 + 0.2 * 0.2)
    assert v["prior"]["balanced_accuracy"] == pytest.approx((0.2 + 0.6 + 0.2) / 3)
    # Without train labels the evaluated set's own frequencies are used.
    v2 = top1_view(y, p, classes, None)
    assert v2["majority"]["class"] == "NORMAL" and v2["majority"]["accuracy"] == pytest.approx(0.5)
    assert v2["prior"]["accuracy"] == pytest.approx(0.25 + 0.09 + 0.04)


def test_top1_bootstrap_ci_contains_accuracy() -> None:
    rng = np.random.default_rng(1)
    y = np.eye(3)[rng.integers(0, 3, 300)]
    p = y * 0.5 + rng.random((300, 3))
    counts = np.random.default_rng(0).multinomial(300, np.full(300, 1 / 300), size=200)
    v = top1_view(y, p, ["A", "B", "C"], None, np.arange(300), counts)
    assert v["accuracy_ci"][0] < v["accuracy"] < v["accuracy_ci"][1]
    assert v["balanced_accuracy_ci"][0] < v["balanced_accuracy"] < v["balanced_accuracy_ci"][1]


def test_source_probe_separable_vs_random_features() -> None:
    rng = np.random.default_rng(0)
    n = 240
    sources = np.array(["nih", "peds", "tbx"])[np.arange(n) % 3]
    groups = np.arange(n) // 2  # pairs of images per patient
    codes = np.arange(n) % 3
    sep = rng.normal(0, 0.3, (n, 8)) + np.eye(3, 8)[codes] * 3
    noise = rng.normal(0, 1, (n, 8))
    good = source_probe(sep, sources, groups)
    bad = source_probe(noise, sources, groups)
    assert good["balanced_accuracy"] > 0.95 and good["flag"]
    assert bad["balanced_accuracy"] < 0.5 and not bad["flag"]
    assert good["chance"] == pytest.approx(1 / 3)
    assert source_probe(sep, ["nih"] * n, groups)["status"].startswith("n/a: only one source")


def test_within_source_gap_flags_a_source_shortcut() -> None:
    rng = np.random.default_rng(0)
    # Source a: 10% positives, source b: 90% positives; scores only know the source.
    n = 200
    src = np.array(["a"] * n + ["b"] * n)
    y = np.r_[rng.random(n) < 0.1, rng.random(n) < 0.9].astype(float)[:, None]
    p = np.r_[rng.random(n) * 0.5, 0.5 + rng.random(n) * 0.5][:, None]
    # class 2: positives only in source b, negatives only in source a -> cannot be checked
    y2 = np.r_[np.zeros(n), np.ones(n)][:, None]
    rows = within_source_auroc(np.c_[y, y2], np.c_[p, p], ["X", "TB"], src)
    x, tb = rows
    assert x["pooled"] > 0.8
    assert x["within"] == pytest.approx(0.5, abs=0.15)
    assert x["flag"] and "shortcut" in x["note"]
    assert tb["within"] is None and tb["note"].startswith("cannot be checked")
    verdict = audit_verdict({"status": "n/a: no features"}, rows)
    assert verdict["shortcut_suspected"] and verdict["flagged_classes"] == ["X"]
    assert "may have learned the source" in verdict["text"] and "TB" in verdict["unchecked_classes"]
