"""Predict: non-finite weights, outputs and arrays are failures, and JSON never holds NaN."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrad.errors import ImageReadError
from cxrad.models import create_model, save_run
from cxrad.predict import Predictor, write_records
from cxrad.predict.output import dumps

CLASSES = ["EFFUSION", "NORMAL", "PNEUMONIA"]


def _run(path: Path, damage: bool) -> Path:
    torch.manual_seed(0)
    model = create_model("seed-fcn", num_classes=len(CLASSES))
    if damage:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    config = {
        "model": {"name": "seed-fcn", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": 128, "mode": "letterbox"},
        "thresholds": dict.fromkeys(CLASSES, 0.5),
    }
    return save_run(path, model, config)


def _refuse(name: str) -> None:
    raise AssertionError(f"bare {name} in the JSON output")


def test_nan_weights_give_error_records_and_strict_json(tmp_path: Path) -> None:
    pred = Predictor.from_run(_run(tmp_path / "run", damage=True), batch_size=2)
    img = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(img)
    recs = list(pred.predict_many([img]))
    assert recs[0]["status"] == "error" and recs[0]["reason"].startswith("non-finite output")
    assert recs[0]["code"] == "non_finite_output" and recs[0]["positive"] == []
    buf = io.StringIO()
    tally = write_records(iter(recs), buf, "json", CLASSES)
    assert tally.failed == 1 and tally.ok == 0
    json.loads(buf.getvalue(), parse_constant=_refuse)  # strict: no bare NaN / Infinity


def test_all_nan_array_is_a_typed_failure(tmp_path: Path) -> None:
    pred = Predictor.from_run(_run(tmp_path / "run", damage=False), batch_size=2)
    with pytest.raises(ImageReadError) as e:
        pred.predict(np.full((64, 64), np.nan, np.float32))
    assert e.value.code == "not_an_image" and "no finite value" in str(e.value)
    rec = pred.predict(np.where(np.eye(64) > 0, np.nan, 0.5).astype(np.float32))
    assert rec["status"] == "ok"  # some NaN pixels: read as 0, still an image


def test_dumps_never_writes_bare_nan() -> None:
    text = dumps({"a": float("nan"), "b": [float("inf"), 1.0], "c": {"d": float("-inf")}})
    assert json.loads(text, parse_constant=_refuse) == {
        "a": None,
        "b": [None, 1.0],
        "c": {"d": None},
    }


def test_a_failure_mid_stream_still_closes_the_json_array() -> None:
    def records():
        yield {"image": "a", "status": "ok", "positive": [], "findings": [], "probabilities": {}}
        raise OSError(28, "No space left on device")

    buf = io.StringIO()
    with pytest.raises(OSError):
        write_records(records(), buf, "json")
    assert [r["image"] for r in json.loads(buf.getvalue())] == ["a"]
