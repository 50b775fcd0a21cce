"""Stage 9, predict: train -> save -> load -> export -> predict: the .onnx file alone decides as torch does."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from cxrad.models import RunConfig
from cxrad.predict import Predictor, export_onnx
from cxrad.predict.export import CONFIG_KEY, onnx_run_config
from cxrad.train import train
from helpers import TINY_CLASSES, make_tiny_work, synthetic_xray


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("rt")
    work = make_tiny_work(tmp, n_per_class=8, size=32)
    return train(
        work, "cxr-fast", tmp / "run", max_epochs=1, batch_size=8, size=32, progress=False,
        threads=1, seed=1,
    )  # fmt: skip


def test_onnx_file_alone_gives_the_same_decisions(trained: Path, tmp_path: Path) -> None:
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(export_onnx(trained, tmp_path / "x.onnx"), alone)  # no config.json beside it
    embedded = onnx_run_config(alone)
    assert embedded.to_dict() == RunConfig.load(trained).to_dict()
    assert embedded.decision.policy == "triage_gate" and embedded.temperature is not None

    rng = np.random.default_rng(3)
    folder = tmp_path / "films"
    folder.mkdir()
    for i in range(9):
        Image.fromarray(synthetic_xray(TINY_CLASSES[i % 3], rng, side=48)).save(folder / f"{i}.png")
    by_torch = list(Predictor.from_run(trained).predict_many([folder]))
    by_onnx = list(Predictor.from_onnx(alone).predict_many([folder]))
    assert len(by_torch) == len(by_onnx) == 9
    for a, b in zip(by_torch, by_onnx, strict=True):
        assert a["status"] == b["status"] == "ok"
        assert a["normal"] == b["normal"] and a["positive"] == b["positive"]
        assert [f["threshold"] for f in a["findings"]] == [f["threshold"] for f in b["findings"]]
        assert a["triage"]["threshold"] == b["triage"]["threshold"]
        assert a["run"] == b["run"] and a["run"]["manifest_hash"]  # the file alone names its data
        for c in a["probabilities"]:
            assert a["probabilities"][c] == pytest.approx(b["probabilities"][c], abs=1e-4)


def test_onnx_without_embedded_config_is_refused(trained: Path, tmp_path: Path) -> None:
    path = export_onnx(trained, tmp_path / "y.onnx")
    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if p.key != CONFIG_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(path))
    from cxrad.errors import PredictError

    with pytest.raises(PredictError, match="export it again"):
        Predictor.from_onnx(path)
