"""Stage 6, models: fit_decision picks the triage score with the best film-level J."""

from __future__ import annotations

import numpy as np
import pytest

from cxrad.models.calibrate import film_stats, fit_decision, fit_points

CLASSES = ["NORMAL", "PNEUMONIA"]


def _films(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping scores: 1 - p(NORMAL) separates the films only moderately (AUROC ~0.8)."""
    rng = np.random.default_rng(seed)
    sick = np.arange(n) % 2 == 1
    z = rng.normal(0, 1, n) + 1.2 * sick
    p_abn = 1 / (1 + np.exp(-z))
    probs = np.c_[1 - p_abn, np.clip(p_abn + rng.normal(0, 0.2, n), 0, 1)]
    labels = np.c_[(~sick).astype(float), sick.astype(float)]
    return probs, labels


def test_the_candidate_with_the_best_film_level_j_wins() -> None:
    probs, labels = _films()
    ops = fit_points(probs, labels, CLASSES, "spec=0.95")
    thr = np.array([ops[c].threshold for c in CLASSES])
    d = fit_decision(probs, labels, CLASSES, thr, "spec=0.95")
    alts = {k: v for k, v in d.alternatives.items() if k.startswith("triage_gate/")}
    assert set(alts) == {
        "triage_gate/not_normal",
        "triage_gate/max_finding",
        "triage_gate/finding_margin",
    }
    best = max(alts, key=lambda k: alts[k]["j"])
    assert d.score == best.removeprefix("triage_gate/")
    # the recorded J is what the chosen cut does to these films
    s = {
        "not_normal": 1 - probs[:, 0],
        "max_finding": probs[:, 1],
        "finding_margin": probs[:, 1] - thr[1],
    }[d.score]
    abnormal = s >= d.triage.threshold
    over = (probs >= thr) & np.array([False, True])
    stats = film_stats(over & abnormal[:, None], abnormal, labels[:, 1])
    assert stats["j"] == pytest.approx(alts[best]["j"])
    assert stats["normal_cleared"] == pytest.approx(alts[best]["normal_cleared"])


def test_a_normal_film_called_abnormal_is_not_cleared_even_with_no_finding() -> None:
    y_abn = np.array([0.0, 0.0, 1.0, 1.0])
    findings = np.zeros((4, 2), dtype=bool)  # nothing listed anywhere
    abnormal = np.array([True, False, True, True])  # one healthy film called abnormal
    stats = film_stats(findings, abnormal, y_abn)
    assert stats["normal_clean"] == 1.0 and stats["normal_cleared"] == 0.5
    assert stats["j"] == pytest.approx(0.5 + 1.0 - 1.0)
