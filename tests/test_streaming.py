"""Stage 5, data: WebDataset shards written from the cache, and DDP training that streams them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxrad.data.streaming import StreamedSplit, StreamingDataset
from cxrad.manifest import read_manifest
from cxrad.preprocess import PreprocessConfig, open_cache
from cxrad.preprocess.webdataset import streaming_dir, write_webdataset
from helpers import TINY_CLASSES, make_tiny_work

CFG = PreprocessConfig(size=32)


def _shards(tmp_path: Path, shard_size: int = 4) -> tuple[Path, dict]:
    work = make_tiny_work(tmp_path, n_per_class=8, size=32)
    return work, write_webdataset(work, CFG, shard_size=shard_size)


def test_shards_hold_the_cached_pixels_labels_and_ids(tmp_path: Path) -> None:
    work, index = _shards(tmp_path)
    df = read_manifest(work)
    folder = streaming_dir(work, CFG)
    val = index["splits"]["val"]
    assert val["n"] == int((df["split"] == "val").sum()) and sum(val["counts"]) == val["n"]
    ds = StreamedSplit([str(folder / n) for n in val["shards"]], list(TINY_CLASSES))
    cache = open_cache(work, CFG)
    by_id = df.set_index("image_id")
    rows = cache.rows_for(df.set_index("image_id").loc[ds.ids].reset_index())
    for i in range(len(ds)):
        x, y = ds[i]
        np.testing.assert_array_equal(x[0].numpy(), cache.images[rows[i]])
        want = by_id.loc[ds.ids[i], list(TINY_CLASSES)].to_numpy(dtype=np.float32)
        np.testing.assert_array_equal(y.numpy(), want)  # NaN stays NaN (not annotated)


def test_each_rank_gets_a_disjoint_equal_share(tmp_path: Path) -> None:
    work, index = _shards(tmp_path, shard_size=3)
    folder = streaming_dir(work, CFG)
    tr = index["splits"]["train"]
    ds = StreamingDataset([str(folder / n) for n in tr["shards"]], tr["counts"], TINY_CLASSES)
    per = ds.per_rank(2)
    assert per == min(sum(tr["counts"][0::2]), sum(tr["counts"][1::2])) and per > 0
    assert len(ds) == sum(tr["counts"])  # one process: everything


@pytest.mark.slow
def test_ddp_two_cpu_ranks_stream_disjoint_halves(tmp_path: Path) -> None:
    work, index = _shards(tmp_path, shard_size=3)
    ids = tmp_path / "ids"
    ids.mkdir()
    env = {**os.environ, "CXRAD_STREAM_IDS_DIR": str(ids), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    cmd = [sys.executable, "-m", "cxrad", "train", str(work), "--data-format", "webdataset"]
    cmd += ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--threads", "1"]
    cmd += ["--epochs", "1", "--batch-size", "2", "--size", "32", "--out", str(tmp_path / "run")]
    cmd += ["--model", "cxr-fast", "--no-progress", "--workers", "0"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [(ids / f"rank-{k}.txt").read_text().split() for k in (0, 1)]
    tr = index["splits"]["train"]
    per = min(sum(tr["counts"][0::2]), sum(tr["counts"][1::2]))
    assert len(seen[0]) == len(seen[1]) == per  # one epoch each, the same number of samples
    assert not set(seen[0]) & set(seen[1])  # disjoint
    train_ids = set(read_manifest(work).query("split == 'train'")["image_id"])
    assert set(seen[0]) | set(seen[1]) <= train_ids
    assert 2 * per >= len(train_ids) - 3  # at most one short shard left out
    assert (tmp_path / "run" / "model.safetensors").is_file()
