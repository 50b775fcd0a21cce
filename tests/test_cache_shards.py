"""Stage 4, preprocess: fixed-size pack files, bounded open files, incremental writes, the lock."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxrad.errors import CacheError
from cxrad.folderlock import LOCK, locked
from cxrad.manifest import read_manifest
from cxrad.preprocess import PreprocessConfig, open_cache, prepare, preprocess_work
from helpers import make_tiny_work

CFG = PreprocessConfig(size=16)

LOW_ULIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))  # stdio + python + a few spare
from cxrad.preprocess import PreprocessConfig, open_cache, preprocess_work
s = preprocess_work(sys.argv[1], PreprocessConfig(size=16), workers=1, chunk_size=1,
                    file_bytes=3 * 16 * 16)
c = open_cache(sys.argv[1], PreprocessConfig(size=16))
total = sum(int(c.images[i].sum()) for i in range(len(c)) for _ in range(2))
print(s.n_new, len(c.images.files()), total)
"""


def test_many_shards_and_pack_files_under_a_low_open_file_limit(tmp_path: Path) -> None:
    ref = make_tiny_work(tmp_path / "ref", n_per_class=20, size=16)  # 60 images
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(ref / "manifest.parquet", work / "manifest.parquet")
    r = subprocess.run(
        [sys.executable, "-c", LOW_ULIMIT, str(work)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    n_new, n_files, total = map(int, r.stdout.split())
    assert (n_new, n_files) == (60, 20)  # 60 one-image shards packed into 20 files of 3
    cache = open_cache(work, CFG)
    sizes = {p.stat().st_size for p in cache.images.files()}
    assert sizes == {3 * 16 * 16}  # fixed size
    df = read_manifest(work)
    rows = cache.rows_for(df)
    for i in (0, 31, 59):
        np.testing.assert_array_equal(cache.images[rows[i]], prepare(df["path"].iloc[i], CFG))
    assert total == 2 * int(cache.images[np.arange(60)].astype(np.int64).sum())
    again = pickle.loads(pickle.dumps(cache.images))  # DataLoader workers reopen by name
    np.testing.assert_array_equal(again[7], cache.images[7])
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["rows_per_file"] == 3 and meta["files"] == [3] * 20


def test_growing_by_a_few_images_appends_and_keeps_old_files(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=10, size=16, preprocess=False)  # 30 images
    df = read_manifest(work)
    full = df.copy()
    df.iloc[27:].to_parquet(tmp_path / "rest.parquet")
    df.iloc[:27].to_parquet(work / "manifest.parquet")
    first = preprocess_work(work, CFG, workers=1, file_bytes=4 * 16 * 16)
    files = {p.name: p.read_bytes() for p in (first.cache_dir / "data").iterdir()}
    full.to_parquet(work / "manifest.parquet")
    grown = preprocess_work(work, CFG, workers=1)
    assert grown.n_new == 3 and grown.bytes_written == 3 * 16 * 16
    after = {p.name: p.read_bytes() for p in (grown.cache_dir / "data").iterdir()}
    changed = sorted(n for n in after if files.get(n) != after[n])
    assert changed == ["00006.u8", "00007.u8"]  # the partial last file grew, one new file
    assert after["00006.u8"].startswith(files["00006.u8"])


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    with locked(d):
        assert (d / LOCK).is_file()
        with pytest.raises(CacheError, match="another `cxrad preprocess`"), locked(d):
            pass
    assert not (d / LOCK).exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owner = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}
    (d / LOCK).write_text(json.dumps(owner))  # left by a killed run on this host
    with locked(d):
        assert json.loads((d / LOCK).read_text())["pid"] == os.getpid()
    (d / LOCK).write_text(json.dumps({"host": "other-node", "pid": 1, "started": 0}))
    with pytest.raises(CacheError, match="other-node"), locked(d):  # another host, fresh
        pass
    old = 1_000_000_000
    os.utime(d / LOCK, (old, old))  # not refreshed for years: stale
    with locked(d):
        pass


def test_an_ownerless_lock_from_the_old_flock_layout_is_taken_over(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    d.mkdir()
    (d / LOCK).write_text("")  # cxrad's flock-era lock file: empty, left behind for good
    with pytest.raises(CacheError), locked(d):  # just created: maybe a writer mid-create
        pass
    old = 1_000_000_000
    os.utime(d / LOCK, (old, old))
    with locked(d):
        assert json.loads((d / LOCK).read_text())["pid"] == os.getpid()
