"""Stage 4, preprocess: a cache whose index, failure list or meta file is damaged.

Training refuses it in one line naming the file and the command; ``cxrad preprocess`` rebuilds
it (the cache is derived from the raw files, which are never touched), to the same pixels.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cxrad.errors import CacheError, TrainError
from cxrad.preprocess import PreprocessConfig, open_cache, preprocess_work
from cxrad.preprocess.store import cache_dir
from cxrad.train.setup import open_work_cache
from helpers import make_tiny_work

CFG = PreprocessConfig(size=32)
DAMAGE = {
    "index.parquet cut short": ("index.parquet", lambda b: b[:200]),
    "failures.parquet emptied": ("failures.parquet", lambda b: b""),
    "meta.json cut short": ("meta.json", lambda b: b[:1]),
    "meta.json not an object": ("meta.json", lambda b: b"[1, 2]"),
    "meta.json without n": ("meta.json", lambda b: b'{"size": 32}'),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_work(tmp_path_factory.mktemp("c"), n_per_class=3, size=32)


def _by_sha1(cache) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {sha: cache.images[int(row)].copy() for sha, row in cache.index[["sha1", "row"]].itertuples(index=False)}  # fmt: skip


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_damaged_cache_is_refused_then_rebuilt(built: Path, tmp_path: Path, what: str) -> None:
    work = Path(shutil.copytree(built, tmp_path / "work"))
    want = open_cache(work, CFG)
    pixels = _by_sha1(want)
    name, damage = DAMAGE[what]
    path = cache_dir(work, CFG) / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CacheError) as e:
        open_cache(work, CFG)
    assert f"{path} is damaged" in str(e.value) and "\n" not in str(e.value)
    assert f"cxrad preprocess {work} --size 32" in str(e.value)
    with pytest.raises(TrainError, match="cxrad preprocess"):
        open_work_cache(work, 32, "letterbox")
    preprocess_work(work, CFG, workers=1)
    again = _by_sha1(open_cache(work, CFG))
    assert sorted(again) == sorted(pixels)
    for sha, image in again.items():
        np.testing.assert_array_equal(image, pixels[sha])
