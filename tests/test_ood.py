"""Stage 6/7/9: the out-of-distribution score: separation, storage, fitting from a work, records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrad.errors import ModelError
from cxrad.models import create_model, save_run
from cxrad.models.ood import OOD_FILE, GaussianOOD, attach_ood, load_ood
from cxrad.predict import Predictor
from cxrad.train.ood import fit_run_ood
from helpers import make_tiny_work, synthetic_xray

MIXING = np.random.default_rng(42).normal(size=(32, 32)) / np.sqrt(32)


def gaussian(rng: np.random.Generator, n: int, shift: float, dim: int = 32) -> np.ndarray:
    """Correlated features (one fixed mixing matrix); ``shift`` moves the last coordinate."""
    x = rng.normal(size=(n, dim)) @ MIXING[:dim, :dim]
    x[:, -1] += shift
    return x


def test_mahalanobis_separates_a_shifted_distribution() -> None:
    rng = np.random.default_rng(0)
    ood = GaussianOOD().fit(gaussian(rng, 500, 0.0))
    ood.set_threshold(gaussian(rng, 200, 0.0), quantile=0.95)
    inside, outside = ood.score(gaussian(rng, 200, 0.0)), ood.score(gaussian(rng, 200, 3.0))
    auroc = roc_auc_score(np.r_[np.zeros(200), np.ones(200)], np.r_[inside, outside])
    assert auroc > 0.9
    # The threshold is the val 95th percentile: about 5% of fresh in-distribution films flagged.
    flagged = np.mean([r["unlike_training"] for r in ood.records(inside)])
    assert 0.0 <= flagged <= 0.15
    assert np.mean([r["unlike_training"] for r in ood.records(outside)]) > 0.5


def test_torch_score_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    ood = GaussianOOD().fit(gaussian(rng, 100, 0.0, dim=8))
    x = gaussian(rng, 5, 1.0, dim=8)
    got = ood.torch_score(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ood.score(x), rtol=1e-9)


def test_stats_round_trip_through_the_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    save_run(
        tmp_path,
        create_model("cxr-fast", num_classes=2),
        {"model": {"name": "cxr-fast"}, "classes": ["NORMAL", "PNEUMONIA"]},
    )
    ood = GaussianOOD().fit(gaussian(rng, 100, 0.0)).set_threshold(gaussian(rng, 50, 0.0))
    entry = attach_ood(tmp_path, ood)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["ood"] == entry and cfg["classes"] == ["NORMAL", "PNEUMONIA"]
    assert entry["feature_dim"] == 32 and entry["n_fit"] == 100 and entry["n_threshold"] == 50
    back = load_ood(tmp_path, cfg)
    x = gaussian(rng, 10, 2.0)
    np.testing.assert_allclose(back.score(x), ood.score(x))
    assert back.threshold_ == ood.threshold_
    assert load_ood(tmp_path, {}) is None
    (tmp_path / OOD_FILE).unlink()
    with pytest.raises(ModelError, match="fit-ood"):
        load_ood(tmp_path, cfg)


def test_unfitted_and_bad_quantile_raise() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        GaussianOOD().score(np.zeros((2, 3)))
    with pytest.raises(ModelError, match="quantile"):
        GaussianOOD().fit(np.random.default_rng(0).normal(size=(10, 3))).set_threshold(
            np.zeros((2, 3)), quantile=1.5
        )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxrad.train import train

    work = make_tiny_work(tmp_path_factory.mktemp("ood"), n_per_class=8, size=32)
    run = tmp_path_factory.mktemp("runs") / "run"
    return train(work, out=run, max_epochs=1, batch_size=8, size=32, progress=False, threads=1)


def test_train_fits_ood_and_records_carry_it(tiny_run: Path, tmp_path: Path) -> None:
    cfg = json.loads((tiny_run / "config.json").read_text())
    entry = cfg["ood"]
    assert (tiny_run / OOD_FILE).is_file()
    assert entry["feature_dim"] == 256 and entry["quantile"] == 0.99
    assert entry["n_fit"] >= 12 and entry["n_threshold"] >= 3 and entry["threshold"] > 0
    p = Predictor.from_run(tiny_run)
    rng = np.random.default_rng(5)
    chest = p.predict(synthetic_xray("NORMAL", rng))
    noise = p.predict(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    for rec in (chest, noise):
        assert set(rec["ood"]) == {"score", "threshold", "unlike_training"}
        assert rec["ood"]["threshold"] == entry["threshold"]
        json.dumps(rec, allow_nan=False)
    assert noise["ood"]["score"] > chest["ood"]["score"]
    assert noise["ood"]["unlike_training"] is True
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    (err,) = list(p.predict_many([bad]))
    assert err["ood"] is None


def test_fit_ood_for_an_existing_run_and_cli(tiny_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrad.cli import app

    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["ood"]
    (run / "config.json").write_text(json.dumps(cfg))
    (run / OOD_FILE).unlink()
    assert Predictor.from_run(run).predict(np.zeros((32, 32), np.uint8))["ood"] is None
    work = Path(cfg["train"]["work"])
    entry = fit_run_ood(run, work, quantile=0.9)
    assert entry["quantile"] == 0.9
    res = CliRunner().invoke(app, ["fit-ood", str(run), "--data", str(work)])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "config.json").read_text())["ood"]["quantile"] == 0.99
