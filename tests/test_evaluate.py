"""Stage 8, evaluate: end to end on a tiny work folder, the report files and the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxrad.errors import EvaluateError, ModelError
from cxrad.evaluate import evaluate_run
from cxrad.manifest import manifest_hash, read_manifest, write_manifest
from cxrad.models import create_model, save_run
from helpers import TINY_CLASSES, make_tiny_work


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny work folder with two sources, and an untrained run saved for it."""
    tmp = tmp_path_factory.mktemp("eval")
    work = make_tiny_work(tmp, n_per_class=12, size=32)
    df = read_manifest(work)
    df["source"] = pd.array(["tiny", "tiny-b"] * (len(df) // 2), dtype="string")
    write_manifest(df, work)
    model = create_model("cxr-fast", num_classes=len(TINY_CLASSES))
    run = save_run(tmp / "run", model, _old_config(work))
    return work, run


def _old_config(work: Path) -> dict:
    classes = list(TINY_CLASSES)
    return {
        "model": {"name": "cxr-fast", "kwargs": {}},
        "classes": classes,
        "preprocess": {"size": 32, "mode": "letterbox"},
        "activation": "sigmoid",
        "thresholds": dict.fromkeys(classes, 0.5),
        "manifest_hash": manifest_hash(read_manifest(work)),
    }


def test_evaluate_run_writes_metrics_and_report(tiny) -> None:
    work, run = tiny
    m = evaluate_run(run, work, split="all", n_boot=200, seed=0, min_count=2)
    out = run / "eval"
    for name in ("metrics.json", "report.html", "roc.png", "pr.png", "reliability.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {
        "header",
        "classification",
        "top1",
        "per_source",
        "shortcut",
        "calibration",
        "paths",
    }
    hdr = saved["header"]
    assert hdr["data"]["n_images"] == 36 and hdr["data"]["split"] == "all"
    assert hdr["data"]["same_manifest_as_training"] is True
    assert hdr["model"]["classes"] == list(TINY_CLASSES)
    per = {r["class"]: r for r in saved["classification"]["per_class"]}
    # Every 4th image has one other tiny class unannotated: those rows are skipped, not negatives.
    assert per["NORMAL"]["n"] + per["NORMAL"]["n_unlabelled"] == 36
    assert per["EFFUSION"]["n_unlabelled"] > 0
    assert per["EFFUSION"]["n"] == 36 - per["EFFUSION"]["n_unlabelled"]
    assert per["PNEUMONIA"]["n_pos"] == 12
    lo, hi = per["NORMAL"]["auroc_ci"]
    assert 0 <= lo <= per["NORMAL"]["auroc"] <= hi <= 1
    top1 = saved["top1"]
    assert top1["n"] == 36 and top1["majority"]["from"] == "train split"
    assert top1["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert np.sum(top1["confusion"]) == 36
    assert {s["source"] for s in saved["per_source"]} == {"tiny", "tiny-b"}
    assert sum(s["n"] for s in saved["per_source"]) == 36
    probe = saved["shortcut"]["probe"]
    assert probe["status"] == "ok" and probe["chance"] == pytest.approx(0.5)
    assert isinstance(saved["shortcut"]["verdict"]["text"], str)
    html = (out / "report.html").read_text()
    assert "Operating points" in html and "flagged abnormal by triage" in html
    assert html.count("data:image/png;base64,") >= 3
    assert "Shortcut audit" in html and "majority" in html
    assert m["paths"]["report"] == str(out / "report.html")


def test_cli_fits_temperature_and_prints_headline(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxrad.cli import main

    work, run = tiny
    out = tmp_path / "ev"
    argv = ["cxrad", "evaluate", str(run), "--data", str(work), "--out", str(out)]
    argv += ["--n-boot", "0", "--min-count", "2", "--fit-temperature"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None)
    err = capsys.readouterr().err
    assert "macro AUROC" in err and "majority baseline" in err and "shortcut audit" in err
    assert str(out / "report.html") in err.replace("\n", "")
    m = json.loads((out / "metrics.json").read_text())
    t = m["calibration"]["temperature"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["temperature"] == pytest.approx(t["fitted"]) and min(t["fitted"]) > 0
    assert len(t["fitted"]) == len(TINY_CLASSES) and t["operating_points_refitted"] == "spec=0.95"
    assert saved["decision"]["policy"] == "triage_gate"  # refitted with the temperatures
    assert t["mean_ece_after"] is not None and m["header"]["data"]["split"] == "test"
    assert m["header"]["command"].startswith("cxrad evaluate ")
    assert m["header"]["model"]["trained_on"] is None  # a run saved before it was recorded
    assert m["header"]["environment"]["torch"] == torch.__version__  # where the report ran


@pytest.mark.parametrize(
    ("split", "same", "is_test", "words"),
    [
        ("test", True, True, "held-out test split"),
        ("val", True, False, "chose its checkpoint, temperatures and cut-offs on"),
        ("train", True, False, "the films this run trained on"),
        ("all", True, False, "its training films included"),
        ("all", False, True, "not trained on"),
    ],
)
def test_a_split_the_run_was_fitted_on_is_never_reported_as_a_test(
    tiny, tmp_path: Path, split: str, same: bool, is_test: bool, words: str
) -> None:
    from cxrad.evaluate.report import headline

    work, run = tiny
    if not same:
        run = shutil.copytree(run, tmp_path / "other")
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, "manifest_hash": "elsewhere"}))
    m = evaluate_run(run, work, split=split, n_boot=0, out=tmp_path / "e", min_count=2)
    data = m["header"]["data"]
    assert data["is_test"] is is_test and words in data["role"]
    first = headline(m)[0]
    assert first.startswith("WARNING: these are ") != is_test
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())["header"]["data"]
    assert saved["role"] == data["role"]
    if not is_test:  # the report opens with the same warning
        assert f"WARNING: these are {data['role']}" in (tmp_path / "e" / "report.html").read_text()


def test_evaluate_run_errors(tiny, tmp_path: Path) -> None:
    work, run = tiny
    with pytest.raises(EvaluateError, match="splits present"):
        evaluate_run(run, work, split="nope", out=tmp_path / "x", n_boot=0)
    with pytest.raises(ModelError, match="not a cxrad run"):
        evaluate_run(tmp_path / "missing", work, out=tmp_path / "x", n_boot=0)
    cfg = json.loads((run / "config.json").read_text())
    other = save_run(
        tmp_path / "run64",
        create_model("cxr-fast", num_classes=3),
        {**cfg, "preprocess": {"size": 64, "mode": "letterbox"}},
    )
    with pytest.raises(EvaluateError, match=r"cxrad preprocess .* --size 64"):
        evaluate_run(other, work, out=tmp_path / "x", n_boot=0)


def test_cli_exit_code_on_missing_run(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxrad.cli import main

    work, _ = tiny
    argv = ["cxrad", "evaluate", str(tmp_path / "nope"), "--data", str(work)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not a cxrad run" in err


@pytest.mark.data
@pytest.mark.slow
def test_shortcut_audit_on_real_sources(shared_data: Path, tmp_path: Path) -> None:
    """NIH + TBX11K: even untrained features identify the source, and TB has no negatives."""
    import torch

    from cxrad.ingest import ingest
    from cxrad.labels import CLASSES
    from cxrad.preprocess import PreprocessConfig, preprocess_work

    work = tmp_path / "work"
    roots = [shared_data / "nih-chestxray14", shared_data / "tbx11k"]
    df, _ = ingest(roots, hash_images=False, workers=1)
    write_manifest(df, work)
    preprocess_work(work, PreprocessConfig(size=64), workers=1)
    torch.manual_seed(0)
    classes = [c for c in CLASSES if c != "COVID_19"]
    cfg = {
        "model": {"name": "cxr-fast", "kwargs": {}},
        "classes": classes,
        "preprocess": {"size": 64, "mode": "letterbox"},
    }
    run = save_run(tmp_path / "run", create_model("cxr-fast", num_classes=len(classes)), cfg)
    m = evaluate_run(run, work, split="all", n_boot=200)
    probe = m["shortcut"]["probe"]
    assert probe["status"] == "ok" and probe["balanced_accuracy"] > 0.7 and probe["flag"]
    assert m["shortcut"]["verdict"]["shortcut_suspected"]
    per = {r["class"]: r for r in m["classification"]["per_class"]}
    # TBX11K labels only TB positives; NIH does not annotate TB: no negatives, so no AUROC.
    assert per["TUBERCULOSIS"]["status"].startswith("n/a: 0 negatives")
    assert per["TUBERCULOSIS"]["n_pos"] == 650
    assert m["top1"]["majority"]["from"].startswith("evaluated set")


def test_decision_section_counts_what_the_decisions_do(tiny, tmp_path: Path) -> None:
    work, run = tiny
    run = save_run(tmp_path / "run", create_model("cxr-fast", num_classes=3), _old_config(work))
    m = evaluate_run(run, work, split="all", n_boot=100, seed=0, min_count=2)
    sec = m["decisions"]
    df = read_manifest(work)
    per = {r["class"]: r for r in sec["per_class"]}
    # an old-format run keeps its 0.5 cut-offs; sensitivity is the share of positives at or over
    assert per["PNEUMONIA"]["threshold"] == 0.5
    sens = per["PNEUMONIA"]["sensitivity"]
    assert sens["n"] == 12 and 0 <= sens["value"] <= 1
    if sens["ci"]:
        assert sens["ci"][0] <= sens["value"] <= sens["ci"][1]
    rows = {s["source"]: s for s in sec["per_source"]}
    assert set(rows) == {"all", "tiny", "tiny-b"}
    n_normal = int((df["NORMAL"] == 1).sum())
    assert rows["all"]["n_normal"] == n_normal
    assert rows["tiny"]["n_normal"] + rows["tiny-b"]["n_normal"] == n_normal
    clean = rows["all"]["normal_no_finding"]
    assert clean["n"] == n_normal and 0 <= clean["value"] <= 1
    assert rows["all"]["findings_per_normal"]["value"] >= 1 - clean["value"] - 1e-9
    json.dumps(m["decisions"], allow_nan=False)


def test_per_film_table_matches_the_report(tiny, tmp_path: Path) -> None:
    work, run = tiny
    m = evaluate_run(run, work, split="all", n_boot=50, seed=0, min_count=2, out=tmp_path / "e")
    films = pd.read_parquet(m["paths"]["predictions"])
    df = read_manifest(work).set_index("image_id")
    assert len(films) == 36 and films["image_id"].is_unique
    assert set(films["image_id"]) == set(df.index)
    assert set(films["source"]) == {"tiny", "tiny-b"}
    y = films.set_index("image_id")[[f"y_{c}" for c in TINY_CLASSES]]
    want = df.loc[y.index, list(TINY_CLASSES)].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(y.to_numpy()), np.isnan(want))
    np.testing.assert_array_equal(np.nan_to_num(y.to_numpy(), nan=-1), np.nan_to_num(want, nan=-1))
    per = {r["class"]: r["threshold"] for r in m["decisions"]["per_class"]}
    for _, f in films.iterrows():
        names = [n for n in f["findings"].split("|") if n]
        assert len(names) == f["n_findings"]
        probs = [f[f"p_{n}"] for n in names]
        assert probs == sorted(probs, reverse=True)
        assert all(p >= per[n] - 1e-6 for n, p in zip(names, probs, strict=True))
        assert f["abnormal"] or not names  # the triage gate: a film called normal lists none
    normals = films[films["y_NORMAL"] == 1]
    clean = m["decisions"]["per_source"][0]["normal_no_finding"]["value"]
    assert (normals["n_findings"] == 0).mean() == pytest.approx(clean)
