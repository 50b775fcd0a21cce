"""Stage 9, predict: ONNX export, and ONNX Runtime predictions that match PyTorch within 1e-4."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from cxrad.cli import main
from cxrad.errors import PredictError
from cxrad.models import create_model, load_run, read_config, save_run
from cxrad.predict import Predictor, ensure_onnx, export_onnx
from cxrad.predict.backends import OnnxBackend
from cxrad.predict.export import onnx_run_config, onnx_run_sha, run_sha256

CLASSES = ["CARDIOMEGALY", "NORMAL", "TUBERCULOSIS"]
SIZE = 128


def make_run(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model("seed-fcn", num_classes=len(CLASSES))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    config = {
        "model": {"name": "seed-fcn", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": SIZE, "mode": "letterbox"},
        "thresholds": dict.fromkeys(CLASSES, 0.5),
        "temperature": 1.7,
    }
    return save_run(path, model, config)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(run: Path) -> Path:
    return export_onnx(run)


def test_export_writes_a_valid_graph_with_dynamic_batch(run: Path, exported: Path) -> None:
    assert exported == run / "model.onnx"
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, SIZE, SIZE]
    assert onnx_run_sha(exported) == run_sha256(run)


def test_onnx_logits_match_pytorch_within_1e_4(run: Path, exported: Path) -> None:
    model, _ = load_run(run)
    engine = OnnxBackend(exported, threads=2)
    rng = np.random.default_rng(0)
    for batch in (1, 5):  # the batch axis is dynamic
        x = rng.random((batch, 1, SIZE, SIZE), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = engine(x)
        assert out.shape == (batch, len(CLASSES))
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
        assert np.abs(ref).max() > 0.1  # not a degenerate all-zero comparison


def test_onnx_predictor_matches_torch_predictor(run: Path, exported: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (140, 100 + 10 * i), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    torch_recs = list(Predictor.from_run(run).predict_many([tmp_path]))
    onnx_pred = Predictor.from_run(run, backend="onnx")
    assert onnx_pred.engine.path == exported  # reuses the fresh export
    onnx_recs = list(onnx_pred.predict_many([tmp_path]))
    for a, b in zip(torch_recs, onnx_recs, strict=True):
        assert a["image"] == b["image"] and a["status"] == b["status"] == "ok"
        pa, pb = (np.array(list(r["probabilities"].values())) for r in (a, b))
        np.testing.assert_allclose(pb, pa, atol=1e-4, rtol=0)
        assert a["abnormal_score"] == pytest.approx(b["abnormal_score"], abs=1e-4)


def test_stale_onnx_is_re_exported(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", seed=0)
    first = export_onnx(run)
    old = onnx_run_sha(first)
    make_run(run, seed=1)  # retrained in place: new weights, old model.onnx
    again = ensure_onnx(run)
    assert again == first and onnx_run_sha(again) == run_sha256(run) != old


def test_onnx_with_old_decisions_is_re_exported(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", seed=0)
    first = export_onnx(run)
    cfg = read_config(run)
    moved = {c: 0.9 for c in cfg.operating_points}
    ops = {c: replace(p, threshold=0.9) for c, p in cfg.operating_points.items()}
    cfg.evolve(operating_points=ops).save(run)
    again = ensure_onnx(run)  # same weights, refitted decisions (evaluate --fit-temperature)
    assert again == first and onnx_run_sha(again) == run_sha256(run)
    embedded = onnx_run_config(again)
    assert {c: p.threshold for c, p in embedded.operating_points.items()} == moved


def test_read_only_run_exports_to_the_cache(run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cxrad.predict.export._writable", lambda folder: False)
    monkeypatch.setenv("CXRAD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(PredictError, match="read-only; pass --out"):
        export_onnx(run)
    # a read-only run whose model.onnx is stale or absent: export into the cache instead
    ro = make_run(tmp_path / "ro", seed=2)
    path = ensure_onnx(ro)
    assert path == tmp_path / "cache" / "onnx" / f"{run_sha256(ro)}.onnx"
    assert not (ro / "model.onnx").exists()
    assert ensure_onnx(ro) == path  # reused


def test_cli_export_writes_the_onnx_file(run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "m.onnx"
    monkeypatch.setattr(sys, "argv", ["cxrad", "export", str(run), "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        main()
    _, err = capsys.readouterr()
    assert e.value.code == 0 and out.is_file() and f"wrote {out}" in err.replace("\n", "")
    assert onnx_run_sha(out) == run_sha256(run)
