"""Stage 8: the subgroup section (age band, sex, view, pediatric vs adult)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrad.evaluate.sites import TRIAGE
from cxrad.evaluate.subgroups import attributes, subgroup_lines, subgroup_section
from cxrad.models import DecisionStep, RunConfig


def rows(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n)
    sex = rng.choice(["M", "female"], n)
    src = np.where(np.arange(n) < 60, "kaggle-pediatric", "nih")
    y = (np.arange(n) % 2).astype(float)
    meta = [
        "{}" if s == "kaggle-pediatric" else json.dumps({"age": str(a), "sex": x})
        for s, a, x in zip(src, age, sex, strict=True)
    ]
    df = pd.DataFrame(
        {
            "PNEUMONIA": y,
            "NORMAL": 1 - y,
            "source": src,
            "meta": meta,
            "view": np.where(np.arange(n) % 3 == 0, "AP Supine", "PA"),
            "patient_id": [f"p{i // 2}" for i in range(n)],
        }
    )
    noise = np.where(src == "nih", 0.4, 1.5)  # worse for children
    s = y + rng.normal(0, 1, n) * noise
    p = 1 / (1 + np.exp(-s))
    return df, np.stack([1 - p, p], axis=1)


def test_attributes_read_meta_view_and_population() -> None:
    df, _ = rows()
    a = attributes(df)
    assert set(a["sex"].dropna()) == {"M", "F"} and a["sex"][:60].isna().all()
    assert set(a["view"]) == {"AP", "PA"}
    assert (a["population"][:60] == "pediatric").all() and (a["population"][60:] == "adult").all()
    assert a["age_band"][:60].isna().all() and a["age_band"][60:].notna().all()


def test_subgroup_metrics_match_sklearn_and_thresholds() -> None:
    df, probs = rows()
    cfg = RunConfig.from_dict(
        {
            "model": {"name": "cxr-fast"},
            "classes": ["NORMAL", "PNEUMONIA"],
            "thresholds": {"NORMAL": 0.5, "PNEUMONIA": 0.5},
        }
    )
    sec = subgroup_section(df, DecisionStep(cfg).decide(probs), n_boot=200)
    kids = sec["population"]["groups"]["pediatric"]["PNEUMONIA"]
    m = df["source"].to_numpy() == "kaggle-pediatric"
    assert kids["auroc"] == pytest.approx(roc_auc_score(df["PNEUMONIA"][m], probs[m, 1]))
    y, p = df["PNEUMONIA"].to_numpy()[m], probs[m, 1]
    assert kids["sensitivity"]["rate"] == pytest.approx(np.mean(p[y == 1] >= 0.5))
    assert kids["specificity"]["rate"] == pytest.approx(np.mean(p[y == 0] < 0.5))
    adults = sec["population"]["groups"]["adult"]["PNEUMONIA"]
    assert adults["auroc"] > kids["auroc"]
    assert TRIAGE in sec["view"]["groups"]["AP"]
    assert sec["sex"]["unknown"] == 60
    assert any("pediatric PNEUMONIA: AUROC" in line for line in subgroup_lines(sec))


def test_site_probe_uses_site_labels_where_known() -> None:
    from cxrad.evaluate.shortcut import site_labels, site_probe

    df = pd.DataFrame(
        {
            "source": ["r", "r", "r", "r", "n", "n"] * 10,
            "site": ["bimcv", "rsna", None, "bimcv", None, None] * 10,
        }
    )
    labels = site_labels(df)
    assert labels[:3].tolist() == ["r/bimcv", "r/rsna", "r"]
    rng = np.random.default_rng(0)
    codes = pd.factorize(labels)[0]
    feats = np.eye(4)[codes] * 3 + rng.normal(0, 0.1, (60, 4))  # features reveal the site
    res = site_probe(feats, df, np.arange(60))
    assert res["status"] == "ok" and res["balanced_accuracy"] > 0.9 and res["chance"] == 0.25
    assert site_probe(feats, df.drop(columns="site"), np.arange(60))["status"].startswith("n/a")
