"""Stages 5 and 8: holding sources out of training, and the site-gap section of the evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrad.data.holdout import drop_held_out, fit_rows, linked_to, parse_sources
from cxrad.errors import TrainError
from cxrad.evaluate.rates import auroc_ci, rate_ci
from cxrad.evaluate.sites import TRIAGE, held_out_sources, site_gap, site_rows
from cxrad.manifest import read_manifest, write_manifest
from cxrad.models import DecisionStep, RunConfig
from helpers import make_tiny_work


def frame(sources: list[str], splits: list[str], dup: list[int], patients: list[str | None]):
    return pd.DataFrame(
        {
            "image_id": [f"{s}/{i}" for i, s in enumerate(sources)],
            "source": sources,
            "split": splits,
            "dup_group": pd.array(dup, dtype="Int64"),
            "patient_id": pd.array(patients, dtype="string"),
            "status": "ok",
        }
    )


def test_parse_sources_sorts_and_dedups() -> None:
    assert parse_sources("b, a,b,") == ["a", "b"]
    assert parse_sources(None) == [] and parse_sources("") == []
    assert parse_sources(["x", "x"]) == ["x"]


def test_drop_held_out_removes_linked_train_val_rows_and_keeps_test() -> None:
    df = frame(
        ["a", "a", "b", "b", "c", "c", "b"],
        ["train", "val", "train", "test", "train", "val", "test"],
        [0, 1, 0, 2, 3, 4, 5],  # row 2 (b) duplicates row 0 (a)
        ["a:1", "a:2", "b:1", "b:2", "c:1", "b:1", None],  # row 5 shares b's patient
    )
    kept = drop_held_out(df, ["a"])
    assert kept["image_id"].tolist() == ["b/3", "c/4", "c/5", "b/6"]
    # Row 2 was linked to a; row 5 is linked to b, not a, so it stays.
    mask = linked_to(df, ["b"])
    assert mask.tolist() == [True, False, True, True, False, True, True]


def test_unknown_source_says_did_you_mean() -> None:
    df = frame(["nih", "ieee8023"], ["train", "val"], [0, 1], [None, None])
    with pytest.raises(TrainError, match="Did you mean 'ieee8023'"):
        drop_held_out(df, ["ieee8032"])


def test_auroc_ci_matches_sklearn_and_rate_ci_brackets_the_rate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(float)
    s = y + rng.normal(0, 1, 200)
    y[::17] = np.nan
    r = auroc_ci(y, s, np.arange(200) // 2, n_boot=200, seed=0)
    m = ~np.isnan(y)
    assert r["auroc"] == pytest.approx(roc_auc_score(y[m], s[m]))
    assert r["ci"][0] < r["auroc"] < r["ci"][1]
    flags = rng.random(300) < 0.8
    q = rate_ci(flags, np.arange(300), n_boot=300, seed=1)
    assert q["rate"] == pytest.approx(flags.mean())
    assert q["ci"][0] < q["rate"] < q["ci"][1] and q["ci"][1] - q["ci"][0] < 0.2
    assert (
        auroc_ci(np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.arange(2), 10, 0)["auroc"] is None
    )


def test_site_gap_on_hand_built_predictions() -> None:
    """In-distribution separates perfectly; the held-out site is shuffled: the gap is about 0.5."""
    rng = np.random.default_rng(1)
    n = 400
    y = (np.arange(n) % 2).astype(float)  # COVID_19
    normal = 1 - y
    ind = pd.DataFrame({"COVID_19": y, "NORMAL": normal, "source": "a", "patient_id": None})
    out = pd.DataFrame({"COVID_19": y, "NORMAL": normal, "source": "b", "patient_id": None})
    p_in = np.stack([0.1 + 0.8 * y, 0.9 - 0.8 * y], axis=1)
    shuffled = rng.permutation(y)
    p_out = np.stack([0.1 + 0.8 * shuffled, 0.9 - 0.8 * shuffled], axis=1)
    config = RunConfig.from_dict(
        {
            "model": {"name": "cxr-fast"},
            "classes": ["COVID_19", "NORMAL"],
            "thresholds": {"COVID_19": 0.5, "NORMAL": 0.5},  # a version-1 config
            "held_out_sources": ["b"],
        }
    )
    step = DecisionStep(config)
    res = site_gap(ind, step.decide(p_in), out, step.decide(p_out), config, n_boot=200)
    t = res["tasks"]["COVID_19"]
    assert t["in"]["auroc"] == 1.0
    assert abs(t["held_out"]["auroc"] - 0.5) < 0.08
    assert t["gap"]["value"] == pytest.approx(1.0 - t["held_out"]["auroc"])
    assert t["gap"]["ci"][0] > 0.3
    assert TRIAGE in res["tasks"]
    spec = res["specificity_on_normals"]
    flagged = shuffled[normal == 1]  # normals that the model calls COVID
    assert spec["n"] == n // 2
    assert spec["no_finding"]["rate"] == pytest.approx(1 - flagged.mean())
    assert spec[TRIAGE]["rate"] == pytest.approx(1 - flagged.mean())
    assert spec[TRIAGE]["threshold"] == pytest.approx(step.decision.triage.threshold)
    assert res["held_out_sources"] == held_out_sources(config) == ["b"]
    # The operating points come from the decision step, not a raw "thresholds" key: moving
    # COVID_19's cut-off above every score leaves every held-out normal clean.
    strict = DecisionStep(config, thresholds=[0.95, 0.5])
    res2 = site_gap(ind, strict.decide(p_in), out, strict.decide(p_out), config, n_boot=50)
    assert res2["specificity_on_normals"]["no_finding"]["rate"] == 1.0


def test_site_rows_keep_held_out_films_from_every_split() -> None:
    df = frame(
        ["a", "a", "b", "b", "a"],
        ["test", "train", "train", "test", "test"],
        [0, 1, 2, 3, 2],
        [None] * 5,
    )
    ind, out = site_rows(df, ["b"])
    assert ind["image_id"].tolist() == ["a/0"]  # a/4 duplicates a held-out film
    assert out["image_id"].tolist() == ["b/2", "b/3"]
    _, test_only = site_rows(df, ["b"], held_out_split="test")
    assert test_only["image_id"].tolist() == ["b/3"]


@pytest.fixture(scope="module")
def held_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    """A tiny two-site work folder and a 1-epoch run trained with ``siteb`` held out."""
    from cxrad.train import train

    tmp = tmp_path_factory.mktemp("held")
    work = make_tiny_work(tmp, n_per_class=15, size=32)
    df = read_manifest(work)
    df["source"] = np.where(np.arange(len(df)) % 3 == 0, "siteb", "sitea")
    write_manifest(df, work)
    run = train(
        work, out=tmp / "run", max_epochs=1, batch_size=8, size=32, progress=False,
        threads=1, hold_out=["siteb"],
    )  # fmt: skip
    return work, run, df


def _fit_count(df: pd.DataFrame, split: str) -> int:
    return int(((df["source"] == "sitea") & (df["split"] == split)).sum())


def test_train_with_hold_out_then_evaluate_reports_the_gap(held_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cxrad.evaluate import evaluate_run
    from cxrad.models import read_config
    from cxrad.train import train

    work, run, df = held_run
    cfg = read_config(run)
    assert cfg.held_out_sources == ("siteb",)
    assert cfg.to_dict()["held_out_sources"] == ["siteb"]
    assert cfg.extra["data"]["n_train"] == _fit_count(df, "train")
    assert cfg.extra["data"]["n_val"] == _fit_count(df, "val")
    m = evaluate_run(run, work, n_boot=50, out=tmp_path / "eval", min_count=3)
    s = m["sites"]
    assert s["status"] == "ok" and s["held_out_sources"] == ["siteb"]
    assert s["n_held_out"] == int((df["source"] == "siteb").sum())
    assert set(s["tasks"]) >= {"NORMAL", TRIAGE}
    assert "Site gap" in (tmp_path / "eval" / "report.html").read_text()
    with pytest.raises(TrainError, match="no source"):
        train(work, out=tmp_path / "r2", max_epochs=1, size=32, progress=False, hold_out=["x"])


def test_the_ood_statistics_never_see_the_held_out_source(held_run) -> None:  # type: ignore[no-untyped-def]
    from cxrad.models import read_config
    from cxrad.train.ood import fit_run_ood

    work, run, df = held_run
    ood = read_config(run).ood
    assert ood["n_fit"] == _fit_count(df, "train") < int((df["split"] == "train").sum())
    assert ood["n_threshold"] == _fit_count(df, "val") < int((df["split"] == "val").sum())
    assert fit_run_ood(run, work)["n_fit"] == ood["n_fit"]  # `cxrad fit-ood` alike


def test_refitted_cut_offs_never_see_the_held_out_source(held_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from cxrad.evaluate import evaluate_run
    from cxrad.models import load_run
    from cxrad.train.finalise import val_logits

    work, run, df = held_run
    model, cfg = load_run(run)
    logits, labels, sources = val_logits(model, cfg, work)
    assert len(logits) == len(labels) == _fit_count(df, "val") and set(sources) == {"sitea"}
    copy = shutil.copytree(run, tmp_path / "copy")  # --fit-temperature rewrites the run
    m = evaluate_run(
        copy, work, n_boot=20, out=tmp_path / "eval", fit_temperature=True, min_count=3
    )
    assert m["calibration"]["temperature"]["n_val"] == _fit_count(df, "val")


def test_fit_rows_drop_a_held_out_source_and_its_links_and_tolerate_its_absence() -> None:
    df = frame(
        ["a", "a", "b", "b", "c"],
        ["train", "val", "train", "val", "val"],
        [0, 1, 0, 2, 3],  # b's train film duplicates a's
        ["a:1", "a:2", "b:1", "b:2", "a:2"],  # c's film shares a's patient
    )
    cfg = RunConfig.from_dict({"model": {"name": "cxr-fast"}, "classes": ["NORMAL"]})
    held = cfg.evolve(held_out_sources=("a",))
    assert fit_rows(df, held, "train")["image_id"].tolist() == []
    assert fit_rows(df, held, "val")["image_id"].tolist() == ["b/3"]
    assert fit_rows(df, cfg, "val")["image_id"].tolist() == ["a/1", "b/3", "c/4"]
    elsewhere = cfg.evolve(held_out_sources=("z",))  # evaluated on a folder without z
    assert fit_rows(df, elsewhere, "train")["image_id"].tolist() == ["a/0", "b/2"]
