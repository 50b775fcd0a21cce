"""Stage 7, train: what a run reads, and the one-line refusals before any epoch.

The streamed (WebDataset) path is checked in one process here; the two-rank DDP run that
splits it across ranks is ``test_streaming.py``'s slow test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from cxrad.data.streaming import IDS_DIR_ENV, StreamingDataset
from cxrad.errors import TrainError
from cxrad.manifest import read_manifest, write_manifest
from cxrad.models import read_config
from cxrad.preprocess import PreprocessConfig, open_cache
from cxrad.preprocess.webdataset import streaming_dir, write_webdataset
from cxrad.train import train
from cxrad.train.inputs import check_loaded, check_options, training_rows
from cxrad.train.ood import fit_run_ood
from helpers import TINY_CLASSES, make_tiny_work

CFG = PreprocessConfig(size=32)
TINY = {"model": "cxr-fast", "batch_size": 4, "size": 32, "progress": False, "threads": 1}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny work folder with its cache written as WebDataset shards of 3 samples."""
    work = make_tiny_work(tmp_path_factory.mktemp("wds"), n_per_class=8, size=32)
    return work, write_webdataset(work, CFG, shard_size=3)


def _train_stream(work: Path, index: dict, **kw: object) -> StreamingDataset:
    tr = index["splits"]["train"]
    urls = [str(streaming_dir(work, CFG) / n) for n in tr["shards"]]
    return StreamingDataset(urls, tr["counts"], list(TINY_CLASSES), **kw)  # type: ignore[arg-type]


def _stream_ids(ds: StreamingDataset, ids_dir: Path, monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """One epoch's image ids, in the order streamed (the dataset's own debug log)."""
    ids_dir.mkdir(exist_ok=True)
    monkeypatch.setenv(IDS_DIR_ENV, str(ids_dir))
    n = sum(1 for _ in ds)
    log = ids_dir / "rank-0.txt"
    ids = log.read_text().split()
    log.unlink()
    assert len(ids) == n
    return ids


def test_one_rank_streams_every_train_film_once_with_its_pixels_and_labels(
    shards: tuple[Path, dict], tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    work, index = shards
    ds = _train_stream(work, index)
    df = read_manifest(work).set_index("image_id")
    monkeypatch.setenv(IDS_DIR_ENV, str(tmp_path))
    samples = list(ds)
    ids = (tmp_path / "rank-0.txt").read_text().split()
    train_ids = set(df.index[df["split"] == "train"])
    assert len(samples) == len(ids) == len(ds) == len(train_ids)
    assert set(ids) == train_ids
    cache = open_cache(work, CFG)
    rows = cache.rows_for(df.loc[ids].reset_index())
    for (img, y), row, image_id in zip(samples, rows, ids, strict=True):
        assert img.shape == (1, 32, 32) and str(img.dtype) == "torch.uint8"
        np.testing.assert_array_equal(img[0].numpy(), cache.images[row])
        want = df.loc[image_id, list(TINY_CLASSES)].to_numpy(dtype=np.float32)
        np.testing.assert_array_equal(y.numpy(), want)  # NaN stays NaN


def test_each_epoch_reshuffles_the_same_films_and_a_seed_repeats_them(
    shards: tuple[Path, dict], tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    work, index = shards
    ds = _train_stream(work, index, seed=5)
    first, second = (_stream_ids(ds, tmp_path / "ids", monkeypatch) for _ in range(2))
    assert ds.epoch == 2 and sorted(first) == sorted(second) and first != second
    again = _stream_ids(_train_stream(work, index, seed=5), tmp_path / "ids", monkeypatch)
    assert again == first
    ordered = _train_stream(work, index, shuffle_buffer=0)
    shard_order = _stream_ids(ordered, tmp_path / "ids", monkeypatch)
    assert shard_order == _stream_ids(ordered, tmp_path / "ids", monkeypatch)
    assert sorted(shard_order) == sorted(first)


def test_a_run_trains_from_shards_and_records_them(
    shards: tuple[Path, dict], tmp_path: Path
) -> None:
    work, index = shards
    run = train(work, out=tmp_path / "run", max_epochs=1, data_format="webdataset", **TINY)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["data_format"] == "webdataset"
    assert cfg["data"]["n_train"] == index["splits"]["train"]["n"]
    assert cfg["data"]["n_val"] == index["splits"]["val"]["n"]
    weights = load_file(run / "model.safetensors")
    assert weights and all(t.isfinite().all() for t in weights.values())


def test_a_node_with_only_the_shards_trains_and_leaves_ood_for_later(
    shards: tuple[Path, dict], tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    work, _ = shards
    node = tmp_path / "node"  # the manifest and the shards, no memmap cache
    node.mkdir()
    shutil.copy2(work / "manifest.parquet", node / "manifest.parquet")
    shutil.copytree(work / "streaming", node / "streaming")
    run = train(node, out=tmp_path / "run", max_epochs=1, data_format="webdataset", **TINY)
    cfg = read_config(run)
    assert cfg.ood is None and cfg.operating_points and (run / "model.safetensors").is_file()
    assert f"cxrad fit-ood {run} --data WORK" in caplog.text
    assert fit_run_ood(run, work)["n_fit"] == int((read_manifest(work)["split"] == "train").sum())


def test_stale_shards_are_refused_before_training(
    shards: tuple[Path, dict], tmp_path: Path
) -> None:
    work, _ = shards
    stale = tmp_path / "stale"
    shutil.copytree(work, stale)
    df = read_manifest(stale)
    val_id = df.loc[df["split"] == "val", "image_id"].iloc[0]
    df.loc[df["image_id"] == val_id, "status"] = "missing file"
    write_manifest(df, stale)
    with pytest.raises(TrainError, match="the shards are stale") as e:
        train(stale, out=tmp_path / "run", max_epochs=1, data_format="webdataset", **TINY)
    assert "1 val films" in str(e.value) and repr(val_id) in str(e.value)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    "text", ["{", "[]", '{"splits": {"train": {"shards": ["a"], "counts": []}}}']
)
def test_a_damaged_shard_index_is_one_line(
    shards: tuple[Path, dict], tmp_path: Path, text: str
) -> None:
    from cxrad.errors import CacheError

    work, _ = shards
    copy = Path(shutil.copytree(work, tmp_path / "w"))
    (streaming_dir(copy, CFG) / "index.json").write_text(text)
    with pytest.raises(CacheError, match=r"index\.json is damaged") as e:
        train(copy, out=tmp_path / "run", max_epochs=1, data_format="webdataset", **TINY)
    assert "--format webdataset" in str(e.value) and "\n" not in str(e.value)


def test_no_shards_names_the_command_that_writes_them(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, size=32)
    with pytest.raises(TrainError, match="--format webdataset") as e:
        train(work, out=tmp_path / "run", max_epochs=1, data_format="webdataset", **TINY)
    assert f"cxrad preprocess {work} --size 32" in str(e.value)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("webdatset", "bce", "shuffle", "none", "none", "none"), "Did you mean 'webdataset'"),
        (("cache", "bse", "shuffle", "none", "none", "none"), "Did you mean 'bce'"),
        (("webdataset", "bce", "balanced", "none", "none", "none"), "--data-format cache"),
        (("webdataset", "bce", "shuffle", "none", "lungs", "none"), "read the memmap cache"),
        (("webdataset", "bce", "shuffle", "none", "none", "none", ["nih"]), "stream every train"),
        (("webdataset", "bce", "shuffle", "none", "none", "none", (), 100), "--limit-train"),
    ],
)
def test_options_that_do_not_exist_or_combine_are_refused(options: tuple, message: str) -> None:
    with pytest.raises(TrainError, match=message):
        check_options(*options)


def test_options_that_combine_pass() -> None:
    check_options("webdataset", "bce", "shuffle", "none", "none", "none")
    check_options("cache", "softmax", "balanced", "none", "lungs", "none", ["nih"], 100)


def test_a_manifest_without_a_split_says_to_split(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    df = read_manifest(work).drop(columns=["split"])
    write_manifest(df, work)
    with pytest.raises(TrainError, match=f"run `cxrad split {work}` first"):
        training_rows(work)


def test_an_empty_val_split_is_refused(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    df = read_manifest(work)
    df["split"] = df["split"].where(df["split"] != "val", "test")
    write_manifest(df, work)
    with pytest.raises(TrainError, match="no usable rows in the 'val' split"):
        training_rows(work)


class _Split:
    def __init__(self, labels: list[list[float]]) -> None:
        self.labels = np.array(labels, dtype=np.float32).reshape(len(labels), 2)

    def __len__(self) -> int:
        return len(self.labels)


@pytest.mark.parametrize(
    ("train_labels", "val_labels", "message"),
    [
        ([], [[1, 0], [0, 1]], "none of the train rows are in the cache"),
        ([[1, 0]], [], "none of the val rows are in the cache"),
        ([[1, 0]], [[1, np.nan], [1, 1]], "no class has both positives and negatives"),
    ],
)
def test_a_cache_without_usable_rows_is_refused_with_the_fix(
    tmp_path: Path, train_labels: list, val_labels: list, message: str
) -> None:
    with pytest.raises(TrainError, match=message) as e:
        check_loaded(_Split(train_labels), _Split(val_labels), ["A", "B"], tmp_path, CFG)
    if "cache" in message:
        assert f"cxrad preprocess {tmp_path} --size 32" in str(e.value)


def test_a_val_split_with_one_class_both_ways_is_enough(tmp_path: Path) -> None:
    check_loaded(_Split([[1, 0]]), _Split([[1, np.nan], [0, 1]]), ["A", "B"], tmp_path, CFG)
