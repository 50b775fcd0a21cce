"""End to end: one tiny run through every stage, through the CLI, as a user would type it.

ingest (generic class folders) -> split -> preprocess -> train -> evaluate -> predict -> export.
Synthetic images keep it offline and fast; the real-data run is the README's first command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxrad.cli import app
from helpers import synthetic_xray

runner = CliRunner()


def cx(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"cxrad {' '.join(map(str, args))} failed:\n{result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/<CLASS>/*.png, 24 images per class, one patient each."""
    root = tmp_path_factory.mktemp("mydata")
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir()
        for i in range(24):
            Image.fromarray(synthetic_xray(cls, rng)).save(
                root / cls / f"{cls.lower()}_{i:03d}.png"
            )
    return root


def test_every_stage_through_the_cli(dataset: Path, tmp_path: Path) -> None:
    work, run = tmp_path / "work", tmp_path / "run"

    cx("ingest", dataset, "--out", work, "--workers", "1")
    manifest = pd.read_parquet(work / "manifest.parquet")
    assert len(manifest) == 48
    assert (manifest["status"] == "ok").all()
    assert manifest["PNEUMONIA"].sum() == 24 and manifest["NORMAL"].sum() == 24

    cx("split", work, "--ratios", "0.6,0.2,0.2", "--workers", "1")
    manifest = pd.read_parquet(work / "manifest.parquet")
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (work / "image_docs.csv").read_text().splitlines()[0] == "image,anomaly,split category"

    cx("preprocess", work, "--size", "32", "--workers", "1")
    cx(
        "train",
        work,
        "--model",
        "cxr-fast",
        "--out",
        run,
        "--epochs",
        "2",
        "--size",
        "32",
        "--batch-size",
        "8",
        "--no-progress",
    )
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["NORMAL", "PNEUMONIA"]
    assert set(config["operating_points"]) == {"NORMAL", "PNEUMONIA"}
    assert config["decision"]["policy"] == "triage_gate"

    cx("evaluate", run, "--data", work, "--n-boot", "100")
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n"] == (manifest["split"] == "test").sum()
    assert (run / "eval" / "report.html").stat().st_size > 10_000

    image = next((dataset / "PNEUMONIA").iterdir())
    records = json.loads(
        cx("predict", image, "--model", run, "--heatmaps", tmp_path / "maps", "--no-gate")
    )
    assert len(records) == 1
    rec = records[0]
    assert rec["status"] == "ok"
    assert set(rec["probabilities"]) == {"NORMAL", "PNEUMONIA"}
    assert rec["abnormal_score"] == rec["triage"]["score"]
    assert rec["normal"] == (rec["triage"]["score"] < rec["triage"]["threshold"])

    cx("export", run, "--format", "onnx")
    onnx_records = json.loads(
        cx("predict", image, "--model", run, "--backend", "onnx", "--no-gate")
    )
    assert onnx_records[0]["probabilities"]["PNEUMONIA"] == pytest.approx(
        rec["probabilities"]["PNEUMONIA"], abs=1e-4
    )


def test_ingest_missing_and_empty_folders_exit_with_one_line(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "w")])
    assert missing.exit_code != 0
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["ingest", str(tmp_path / "empty"), "--out", str(tmp_path / "w")])
    assert empty.exit_code != 0
    assert not (tmp_path / "w" / "manifest.parquet").exists()
