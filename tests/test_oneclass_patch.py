"""Stage 6/7: the one-class run's PaDiM patch density, its proxy selection and old configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from cxrad.errors import ModelError, TrainError
from cxrad.labels import NORMAL
from cxrad.models import load_run, save_run
from cxrad.models.oneclass import PATCH, POOLED, anomaly_map, build_one_class, patch_grid
from cxrad.train.cutpaste import local_opacity
from cxrad.train.oneclass import fit_density, train_one_class
from cxrad.train.oneclass_density import candidate_name, candidates, fit_patch, patch_scores
from helpers import make_tiny_work, synthetic_xray

SIZE = 64
KW = {"widths": [8, 16, 16, 16], "depths": [1, 1, 1, 1]}


def films(n: int, seed: int) -> torch.Tensor:
    """``n`` synthetic normal films ``(n, 1, 64, 64)`` as uint8."""
    rng = np.random.default_rng(seed)
    x = np.stack([synthetic_xray("NORMAL", rng, side=SIZE) for _ in range(n)])
    return torch.from_numpy(x)[:, None]


def with_square(x: torch.Tensor, y0: int = 36, x0: int = 12, side: int = 12) -> torch.Tensor:
    """A bright square (a local opacity) at rows ``y0:y0+side``, columns ``x0:x0+side``."""
    out = x.clone()
    out[:, :, y0 : y0 + side, x0 : x0 + side] = 250
    return out


@pytest.fixture(scope="module")
def patch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [1]
    model = build_one_class(
        **KW, density=PATCH, patch_layers=layers, patch_grid=patch_grid(SIZE, layers)
    )
    fit_density(model, films(60, 0), films(20, 1), quantile=0.95)
    return model.eval()


def test_patch_grid_follows_the_coarsest_layer() -> None:
    assert patch_grid(128, [1]) == 16 and patch_grid(128, [1, 2]) == 8 and patch_grid(64, [3]) == 2


def test_per_location_fit_matches_a_hand_computed_gaussian() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 3, 2)) * np.array([1.0, 3.0])
    mean, prec = fit_patch(f)
    assert mean.shape == (3, 2) and prec.shape == (3, 2, 2)
    np.testing.assert_allclose(mean, f.mean(0))
    d = patch_scores(f[:1], mean, prec)
    by_hand = [np.sqrt((f[0, i] - mean[i]) @ prec[i] @ (f[0, i] - mean[i])) for i in range(3)]
    np.testing.assert_allclose(d[0], by_hand)


def test_patch_density_buffers_and_torch_scores_agree(patch_model: torch.nn.Module) -> None:
    net = patch_model.net
    g = patch_grid(SIZE, [1])
    assert net.patch_mean.shape == (g * g, 16) and net.patch_precision.shape == (g * g, 16, 16)
    assert not hasattr(net, "density_mean")
    assert float(net.patch_mean.abs().sum()) > 0  # fitted, not the zeros it was built with
    x = films(4, 7).float() / 255
    with torch.no_grad():
        heat = net.patch_distances(patch_model._norm(x))
        logit = patch_model(x)[:, 0]
    assert heat.shape == (4, g, g) and torch.isfinite(heat).all()
    expect = (net.loc - heat.flatten(1).amax(1)) / net.scale
    torch.testing.assert_close(logit, expect)


def test_local_anomaly_scores_higher_and_heatmap_peaks_there(patch_model: torch.nn.Module) -> None:
    clean = films(30, 2)
    bad = with_square(clean)
    with torch.no_grad():
        s_clean = -patch_model(clean.float() / 255)[:, 0].numpy()
        s_bad = -patch_model(bad.float() / 255)[:, 0].numpy()
        heat = anomaly_map(patch_model, bad.float() / 255)
    y = np.r_[np.zeros(len(clean)), np.ones(len(bad))]
    assert roc_auc_score(y, np.r_[s_clean, s_bad]) > 0.95
    assert heat.shape == (30, SIZE, SIZE)
    rows, cols = np.unravel_index(heat.flatten(1).argmax(1).numpy(), (SIZE, SIZE))
    # the peak lies on the square or within one grid cell (8 px) of it
    assert ((rows >= 36 - 8) & (rows < 48 + 8) & (cols >= 12 - 8) & (cols < 24 + 8)).mean() >= 0.9


def test_patch_buffers_round_trip_through_save_and_load(
    patch_model: torch.nn.Module, tmp_path: Path
) -> None:
    net = patch_model.net
    kwargs = {**KW, "density": PATCH, "patch_layers": [1], "patch_grid": net.patch_grid}
    cfg = {"task": "one-class", "model": {"name": "one-class", "kwargs": kwargs}}
    save_run(tmp_path / "run", patch_model, {**cfg, "classes": [NORMAL]})
    state = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert torch.equal(state["net.patch_precision"], net.patch_precision)
    again, rc = load_run(tmp_path / "run")
    assert rc.model.kwargs["density"] == PATCH and again.net.density == PATCH
    x = films(3, 9).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(again(x), patch_model(x))


def test_set_density_rejects_the_wrong_shape(patch_model: torch.nn.Module) -> None:
    with pytest.raises(ModelError, match="patch_mean must have shape"):
        patch_model.net.set_density(np.zeros(16), np.eye(16), 0.0, 1.0)


def test_anomaly_map_of_a_pooled_model_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="patch density"):
        anomaly_map(build_one_class(**KW), torch.zeros(1, 1, SIZE, SIZE))


OLD_CONFIG = {  # as the pooled-only code wrote it (a real run's, trimmed): no density kind
    "activation": "sigmoid",
    "classes": [NORMAL],
    "density": {"method": "mahalanobis_ledoit_wolf", "n_fit": 1149, "n_threshold": 192,
                "quantile": 0.95, "scale": 2.85, "threshold_distance": 14.69},
    "input": {"cam_layer": "backbone.stages.3", "in_channels": 1, "input_size": 256,
              "mean": 0.5, "name": "one-class", "std": 0.25},
    "model": {"kwargs": KW, "name": "one-class"},
    "operating_points": {NORMAL: {"method": "quantile_of_normal_val_distances", "threshold": 0.5}},
    "preprocess": {"mode": "letterbox", "size": 64},
    "selection": {"best_epoch": 6, "method": "cutpaste_auroc_on_normal_val", "proxy_auroc": 0.6},
    "task": "one-class",
    "version": 2,
}  # fmt: skip


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_configs_written_before_the_patch_density_still_load(tmp_path: Path, layout: str) -> None:
    from safetensors.torch import save_file

    cfg = dict(OLD_CONFIG)
    if layout == "v1":  # the dict train_one_class hands save_run: thresholds, no version
        for k in ("operating_points", "version", "input"):
            cfg.pop(k)
        cfg.update(thresholds={NORMAL: 0.5}, threshold_method="quantile_of_normal_val_distances")
    model = build_one_class(**KW).eval()
    model.net.set_density(np.ones(16), 2 * np.eye(16), 3.0, 1.5)
    run = tmp_path / "old"
    run.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors")
    )
    (run / "config.json").write_text(json.dumps(cfg))
    if layout == "v1":  # the registry contract is unknown to a bare v1 layout; save_run adds it
        save_run(run, model, cfg)
    again, rc = load_run(run)
    assert rc.task == "one-class" and again.net.density == POOLED
    assert "density" not in rc.model.kwargs and rc.to_dict()["density"]["scale"] == 2.85
    torch.testing.assert_close(again.net.density_precision, 2 * torch.eye(16))
    x = films(2, 3).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_candidates_and_their_names() -> None:
    names = [candidate_name(c) for c in candidates("auto", 4)]
    assert names[0] == "pooled" and "patch:1+2:max" in names and "patch:2+3:mean" in names
    assert [candidate_name(c) for c in candidates("pooled", 4)] == ["pooled"]
    assert all(c["density"] == PATCH for c in candidates("patch", 4))
    assert "patch:2+3:max" not in [candidate_name(c) for c in candidates("auto", 3)]


def test_local_opacity_brightens_the_centre_only_and_is_seeded() -> None:
    x = torch.full((1, 64, 64), 0.2)
    a = local_opacity(x, torch.Generator().manual_seed(0))
    b = local_opacity(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and (a >= x).all() and a.max() <= 1
    peak = np.unravel_index(int((a - x).argmax()), (64, 64))[1:]
    assert all(16 <= p < 48 for p in peak) and float((a - x).max()) > 0.05


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("auto")
    work = make_tiny_work(tmp, n_per_class=12, size=32)
    run = train_one_class(
        work, tmp / "run", max_epochs=2, batch_size=8, size=32, threads=1, seed=1,
        density="auto", proxy="blob", widths=(8, 16, 16, 16), depths=(1, 1, 1, 1),
    )  # fmt: skip
    return work, run


def test_auto_run_records_every_candidates_proxies_and_the_choice(
    auto_run: tuple[Path, Path],
) -> None:
    _, run = auto_run
    cfg = json.loads((run / "config.json").read_text())
    sel = cfg["selection"]
    assert sel["method"] == "blob_auroc_on_normal_val"
    assert set(sel["candidates"]) == {candidate_name(c) for c in candidates("auto", 4)}
    best = max(sel["candidates"].items(), key=lambda kv: kv[1]["blob"])
    assert sel["proxy_auroc"] == pytest.approx(best[1]["blob"])
    assert all({"blob", "cutpaste", "best_epoch"} <= set(v) for v in sel["candidates"].values())
    assert cfg["density"]["kind"] == cfg["model"]["kwargs"].get("density", POOLED)
    table = (run / "logs" / "proxy.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * len(sel["candidates"])  # header + every epoch x candidate
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch=00.safetensors",
        "epoch=01.safetensors",
    ]


def test_patch_run_exports_to_onnx_and_predicts_a_heatmap(tmp_path: Path) -> None:
    from PIL import Image

    from cxrad.predict import Predictor, export_onnx
    from cxrad.predict.anomaly import anomaly_heatmaps

    work = make_tiny_work(tmp_path, n_per_class=8, size=32)
    run = train_one_class(
        work, tmp_path / "run", max_epochs=1, batch_size=8, size=32, threads=1, seed=1,
        density="patch", proxy="blob", widths=(8, 16, 16, 16), depths=(1, 1, 1, 1),
    )  # fmt: skip
    model, rc = load_run(run)
    assert model.net.density == PATCH and rc.to_dict()["density"]["kind"] == PATCH
    img = synthetic_xray("NORMAL", np.random.default_rng(5))
    img[12:40, 10:30] = 250
    path = tmp_path / "film.png"
    Image.fromarray(img).save(path)
    p = Predictor.from_run(run)
    (rec,) = list(p.predict_many([path], heatmaps_dir=tmp_path / "maps"))
    # the map a film called abnormal gets (forced here: the tiny run may call this one normal)
    x = torch.from_numpy(img[::2, ::2].astype(np.float32) / 255)[None, None]
    recs = [{"positive": []}]
    anomaly_heatmaps(model, recs, x.numpy(), [img[::2, ::2]], [tmp_path / "m" / "f"], "cpu")
    heat = np.load(Path(recs[0]["heatmaps"]["ANOMALY"]).with_suffix(".npy"))
    with torch.no_grad():
        raw = anomaly_map(model, x)[0].numpy()
    assert heat.shape == (32, 32) and heat.min() == 0 and heat.max() > 0
    np.testing.assert_allclose(heat, raw - raw.min(), rtol=1e-5, atol=1e-5)
    export_onnx(run, tmp_path / "model.onnx")
    q = Predictor.from_run(run, backend="onnx")
    assert q.predict(path)["probabilities"][NORMAL] == pytest.approx(
        rec["probabilities"][NORMAL], abs=1e-4
    )


def test_bad_density_or_proxy_says_did_you_mean(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=4, size=32)
    with pytest.raises(TrainError, match="Did you mean 'patch'"):
        train_one_class(work, tmp_path / "r", max_epochs=1, size=32, density="patc")
    with pytest.raises(TrainError, match="Did you mean 'blob'"):
        train_one_class(work, tmp_path / "r", max_epochs=1, size=32, proxy="blobb")


def test_cli_density_and_proxy_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrad.cli import app

    work = make_tiny_work(tmp_path, n_per_class=8, size=32)
    args = ["train", str(work), "--out", str(tmp_path / "r"), "--size", "32", "--threads", "1"]
    oc = [*args, "--task", "one-class", "--epochs", "1", "--batch-size", "8"]
    res = CliRunner().invoke(app, [*oc, "--density", "auto", "--proxy", "blob"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["selection"]["method"] == "blob_auroc_on_normal_val"
    bad = CliRunner().invoke(app, [*args, "--density", "patch"])
    assert bad.exit_code != 0 and "one-class only" in str(bad.exception or bad.output)
