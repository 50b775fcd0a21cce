"""Stages 6-9: ensembles average members' probabilities, are ordinary runs, and explain themselves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from scipy.special import logit

from cxrad.cli import main
from cxrad.errors import ModelError, TrainError
from cxrad.evaluate import evaluate_run
from cxrad.manifest import manifest_hash, read_manifest
from cxrad.models import calibrated, create_model, get_spec, load_run, probabilities, save_run
from cxrad.models.calibrate import fit_points
from cxrad.models.ensemble import EnsembleNet
from cxrad.predict import Predictor, export_onnx, grad_cam
from cxrad.train import ensemble_runs, per_class_auroc
from helpers import TINY_CLASSES, make_tiny_work

SIZE = 32


def member(seed: int, name: str = "cxr-fast", classes=TINY_CLASSES):
    torch.manual_seed(seed)
    return create_model(name, num_classes=len(classes)).eval()


@pytest.fixture(scope="module")
def tiny_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_work(tmp_path_factory.mktemp("tiny"), n_per_class=6, size=SIZE)


def make_member_run(path: Path, work: Path, seed: int, **overrides) -> Path:
    """A run as `cxrad train` writes it (random weights: the ensemble logic is under test)."""
    config = {
        "model": {"name": "cxr-fast", "kwargs": {}},
        "classes": list(TINY_CLASSES),
        "preprocess": {"size": SIZE, "mode": "letterbox"},
        "activation": "sigmoid",
        "thresholds": dict.fromkeys(TINY_CLASSES, 0.5),
        "manifest_hash": manifest_hash(read_manifest(work)),
        "train": {"seed": seed},
        "val_metrics": {"macro_auroc": 0.5},
        **overrides,
    }
    return save_run(path, member(seed, classes=config["classes"]), config)


@pytest.fixture(scope="module")
def members(tiny_work: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    return [make_member_run(root / f"s{s}", tiny_work, s) for s in range(3)]


@pytest.fixture(scope="module")
def ens(members: list[Path], tiny_work: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensemble_runs(members, tiny_work, tmp_path_factory.mktemp("ens") / "ens")


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_ensemble_probability_is_the_members_mean(activation: str) -> None:
    ms = [member(s) for s in range(3)]
    net = EnsembleNet(ms, activation)
    x = torch.rand(4, 1, SIZE, SIZE)
    with torch.no_grad():
        want = torch.stack([probabilities(m(x), {"activation": activation}) for m in ms]).mean(0)
        got = probabilities(net(x), {"activation": activation})
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_ensemble_of_saturated_members_stays_finite() -> None:
    class Const(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 2), self.value)

    logits = EnsembleNet([Const(200.0), Const(200.0)])(torch.zeros(1, 1, 4, 4))  # type: ignore[list-item]
    assert torch.isfinite(logits).all() and (logits > 100).all()  # logit(1 - tiny), unclamped
    mixed = EnsembleNet([Const(200.0), Const(-200.0)])(torch.zeros(1, 1, 4, 4))  # type: ignore[list-item]
    torch.testing.assert_close(mixed, torch.zeros(1, 2), atol=1e-5, rtol=0)  # mean p = 0.5


def test_ensemble_run_picks_thresholds_on_val_and_reloads(
    ens: Path, members: list[Path], tiny_work: Path
) -> None:
    _, cfg = load_run(ens)
    assert cfg["model"]["name"] == "ensemble" and len(cfg["members"]) == 3
    assert [m["seed"] for m in cfg["members"]] == [0, 1, 2]
    assert cfg["manifest_hash"] == manifest_hash(read_manifest(tiny_work))
    assert cfg["input"]["input_size"] == 256 and cfg["preprocess"]["size"] == SIZE
    # Recompute val probabilities from the members: thresholds and AUROC must follow from them.
    df = read_manifest(tiny_work)
    val = df[(df["split"] == "val") & (df["status"] == "ok")].reset_index(drop=True)
    from cxrad.data import CachedDataset
    from cxrad.preprocess import PreprocessConfig, open_cache

    ds = CachedDataset(val, open_cache(tiny_work, PreprocessConfig(size=SIZE)), TINY_CLASSES)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        probs = torch.stack(
            [torch.sigmoid(load_run(m)[0](x)) for m in members]
        ).mean(0).numpy()  # fmt: skip
    # the ensemble's decisions are fitted on val like a trained run's: spec=0.95 by default
    calib = calibrated(logit(probs), "sigmoid", cfg.temperatures())
    want = fit_points(calib, ds.labels, TINY_CLASSES, "spec=0.95")
    assert cfg.thresholds() == pytest.approx({c: w.threshold for c, w in want.items()}, abs=1e-5)
    assert cfg["val_metrics"]["auroc"] == pytest.approx(
        per_class_auroc(probs, ds.labels, TINY_CLASSES), abs=1e-6
    )


def test_ensemble_run_evaluates_predicts_explains_and_exports(
    ens: Path, tiny_work: Path, tmp_path: Path
) -> None:
    metrics = evaluate_run(ens, tiny_work, split="test", n_boot=20, out=tmp_path / "eval")
    assert metrics["n"] > 0 and (tmp_path / "eval" / "report.html").is_file()

    image = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    pred = Predictor.from_run(ens)
    record = pred.predict(tmp_path / "x.png", heatmaps_dir=tmp_path / "maps")
    assert record["status"] == "ok" and set(record["probabilities"]) == set(TINY_CLASSES)
    assert record["run"]["name"] == "ensemble"
    for png in record["heatmaps"].values():  # one per positive finding, from all three members
        assert Path(png).is_file()

    onnx_path = export_onnx(ens, tmp_path / "ens.onnx")
    x = torch.rand(2, 1, SIZE, SIZE)
    model, _ = load_run(ens)
    with torch.no_grad():
        want = model(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ensemble_grad_cam_is_the_mean_of_each_members_map(ens: Path) -> None:
    model, _ = load_run(ens)
    x = torch.rand(2, 1, SIZE, SIZE)
    targets = [[0, 2], [1]]
    layers = model.spec.cam_layer.split(",")
    assert len(layers) == 3
    both = grad_cam(model, x, targets)
    each = [grad_cam(model, x, targets, layer=f"net.{name}") for name in layers]
    for i, t in enumerate(targets):
        for c in t:
            mean = np.mean([e[i][c] for e in each], axis=0)
            np.testing.assert_allclose(both[i][c], mean, rtol=1e-4, atol=1e-7)
            assert both[i][c].shape == (SIZE, SIZE)


def test_ensemble_errors_say_what_to_do(
    members: list[Path], tiny_work: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainError, match="at least two"):
        ensemble_runs(members[:1], tiny_work, tmp_path / "e1")
    with pytest.raises(TrainError, match="listed twice"):
        ensemble_runs([members[0], members[0]], tiny_work, tmp_path / "e2")
    other = make_member_run(tmp_path / "other", tiny_work, 9, classes=["NORMAL", "PNEUMONIA"])
    with pytest.raises(TrainError, match="'classes'"):
        ensemble_runs([members[0], other], tiny_work, tmp_path / "e3")
    stale = make_member_run(tmp_path / "stale", tiny_work, 8, manifest_hash="0000")
    with pytest.raises(TrainError, match="'manifest_hash'"):
        ensemble_runs([members[0], stale], tiny_work, tmp_path / "e4")
    held = make_member_run(tmp_path / "held", tiny_work, 6, held_out_sources=["tiny"])
    with pytest.raises(TrainError, match="'held_out_sources'"):
        ensemble_runs([members[0], held], tiny_work, tmp_path / "e6")
    both_stale = [stale, make_member_run(tmp_path / "stale2", tiny_work, 7, manifest_hash="0000")]
    with pytest.raises(TrainError, match="trained on manifest 0000"):
        ensemble_runs(both_stale, tiny_work, tmp_path / "e5")
    with pytest.raises(ModelError, match="cxrad ensemble"):
        get_spec("ensemble")
    with pytest.raises(ModelError, match="cxrad ensemble"):
        create_model("ensemble")
    assert not (tmp_path / "e1").exists()


def test_cli_ensemble_writes_a_run(
    members: list[Path], tiny_work: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "ens"
    args = [
        "cxrad",
        "ensemble",
        *map(str, members[:2]),
        "--data",
        str(tiny_work),
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    assert "ensembled 2 runs" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["model"]["name"] == "ensemble"
