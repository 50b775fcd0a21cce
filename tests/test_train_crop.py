"""Stage 7, train: ``train(..., crop="lungs")`` reads the lung-cropped cache, records the crop,
and predict, evaluate, serve and the ONNX export then crop the same way (stub segmenter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import cxrad.segment.crop as crop_mod
from cxrad.errors import TrainError
from cxrad.manifest import read_manifest
from cxrad.models import DecisionStep, RunConfig
from cxrad.preprocess import PreprocessConfig, open_cache, prepare, preprocess_work
from cxrad.segment import Segmenter
from cxrad.train import train
from helpers import make_tiny_work
from test_segment import stub_segmenter

SIZE = 32
LUNGS = PreprocessConfig(size=SIZE, crop="lungs")
CALLS: list[int] = []


def counting_segmenter() -> Segmenter:
    """The stub segmenter, counting how often a crop asked for it."""
    CALLS.append(1)
    return stub_segmenter()


@pytest.fixture(scope="module", autouse=True)
def stub() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crop_mod, "default_segmenter", counting_segmenter)
        yield


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = make_tiny_work(tmp_path_factory.mktemp("crop"), n_per_class=8, size=SIZE)
    preprocess_work(work, LUNGS, workers=1)
    return work


@pytest.fixture(scope="module")
def run(work: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lungs"
    return train(
        work, "cxr-fast", out, max_epochs=1, batch_size=8, size=SIZE, progress=False,
        threads=1, seed=0, crop="lungs",
    )  # fmt: skip


def a_test_film(work: Path) -> Path:
    df = read_manifest(work)
    return Path(df.loc[df["split"] == "test", "path"].iloc[0])


def test_command_names_every_non_default_option() -> None:
    assert PreprocessConfig(64).command("w") == "cxrad preprocess w --size 64 --mode letterbox"
    both = PreprocessConfig(64, "stretch", "lungs", "clahe").command("work/full")
    assert (
        both == "cxrad preprocess work/full --size 64 --mode stretch --crop lungs --normalise clahe"
    )


def test_missing_lung_cache_says_which_preprocess_builds_it(tmp_path: Path) -> None:
    plain = make_tiny_work(tmp_path, n_per_class=3, size=SIZE)  # only the uncropped cache
    with pytest.raises(TrainError, match=f"cxrad preprocess {plain} --size {SIZE} .*--crop lungs"):
        train(plain, out=tmp_path / "r", size=SIZE, crop="lungs", progress=False, threads=1)
    with pytest.raises(TrainError, match="--crop"):
        train(plain, out=tmp_path / "r", size=SIZE, crop="lungs", data_format="webdataset")
    assert not (tmp_path / "r" / "config.json").exists()


def test_run_records_the_crop_and_trained_on_the_cropped_cache(run: Path, work: Path) -> None:
    cfg = RunConfig.load(run)
    assert cfg.preprocess.crop == "lungs" and cfg.preprocess.size == SIZE
    assert cfg.to_dict()["preprocess"]["crop"] == "lungs"
    assert cfg.train is not None and cfg.train["crop"] == "lungs"
    assert cfg.preprocess.cache_config().key == LUNGS.key
    from cxrad.evaluate.run import open_dataset

    ds = open_dataset(work, read_manifest(work), cfg)  # evaluate reads the lung cache
    film = prepare(Path(ds.df["path"].iloc[0]), LUNGS)
    np.testing.assert_array_equal(ds[0][0][0].numpy(), film.astype(np.float32) / 255)


def test_predict_crops_like_the_cache_and_decides_on_it(run: Path, work: Path) -> None:
    from cxrad.predict import Predictor

    path = a_test_film(work)
    pred = Predictor.from_run(run)
    assert pred.preprocess == LUNGS
    cropped = prepare(path, LUNGS)
    assert not np.array_equal(cropped, prepare(path, PreprocessConfig(size=SIZE)))
    np.testing.assert_array_equal(pred.prepare(path), cropped)
    cache = open_cache(work, LUNGS)
    df = read_manifest(work)
    row = cache.rows_for(df[df["path"] == str(path)])[0]
    np.testing.assert_array_equal(cache.images[row], cropped)  # train saw these pixels
    before = len(CALLS)
    rec = pred.predict(path)
    assert rec["status"] == "ok" and len(CALLS) > before  # the segmenter cut the film
    x = torch.from_numpy(cropped.astype(np.float32) / 255)[None, None]
    with torch.no_grad():
        want = DecisionStep(pred.config)(pred.model(x).numpy()).probabilities[0]
    got = [rec["probabilities"][c] for c in pred.classes]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_onnx_and_serve_carry_the_crop(run: Path, work: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    from cxrad.predict import Predictor, export_onnx
    from cxrad.serve.model_info import model_info
    from cxrad.serve.settings import ServeSettings

    alone = Predictor.from_onnx(export_onnx(run, tmp_path / "x.onnx"))
    assert alone.preprocess == LUNGS
    path = a_test_film(work)
    np.testing.assert_array_equal(alone.prepare(path), prepare(path, LUNGS))
    info = model_info(Predictor.from_run(run), ServeSettings(model=str(run)))
    assert info["input"]["crop"] == "lungs" and info["input"]["normalise"] == "none"


def test_cli_passes_crop_to_train_and_refuses_it_for_one_class(
    run: Path, work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import cxrad.train
    from test_train_run import cli

    seen: dict[str, object] = {}

    def fake_train(*args: object, **kwargs: object) -> Path:
        seen.update(kwargs)
        return run

    monkeypatch.setattr(cxrad.train, "train", fake_train)
    code, err = cli(monkeypatch, capsys, work, "--out", run, "--crop", "lungs", "--size", SIZE)
    assert code == 0, err
    assert seen["crop"] == "lungs" and seen["normalise"] == "none" and seen["size"] == SIZE
    code, err = cli(
        monkeypatch, capsys, work, "--out", run, "--crop", "lungs", "--task", "one-class"
    )
    assert code == 2 and "--task multilabel only" in err
