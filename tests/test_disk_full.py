"""Disk full (issue #15, group 6): checked before packing, no temp files left, resumable after.

A full disk is simulated by making a write raise ``OSError(ENOSPC)`` after part of its bytes
went out, as a real full disk does.
"""

from __future__ import annotations

import errno
import io
import sys
from pathlib import Path

import numpy as np
import pytest

from cxrad import atomic
from cxrad.cli import main
from cxrad.errors import DiskSpaceError
from cxrad.preprocess import PreprocessConfig, open_cache, packfiles, preprocess_work
from helpers import make_tiny_work

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, " ".join(out.err.split())


class FullFile(io.FileIO):
    """A file whose first write puts out half its bytes, then fails as a full disk does."""

    def write(self, b) -> int:  # type: ignore[override]
        super().write(bytes(b)[: len(b) // 2])
        raise ENOSPC


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def test_write_bytes_removes_its_temp_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    monkeypatch.setattr(atomic, "open", lambda p, mode: FullFile(p, "w"), raising=False)
    with pytest.raises(OSError) as e:
        atomic.write_bytes(target, b"new contents")
    assert e.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_free_space_is_checked_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 10_000)
    with pytest.raises(DiskSpaceError, match=r"9 new 32 px images needs about 1\.1 MB free"):
        preprocess_work(work, PreprocessConfig(size=32), workers=1)
    code, _, err = run_cli(["preprocess", str(work), "--size", "32", "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert "needs about" in err and "only 0.0 MB is free" in err and "bigger disk" in err
    cache = work / "cache" / PreprocessConfig(size=32).key
    assert not (cache / "shards").exists() and not (cache / "data").exists()


def test_enough_space_passes_and_a_rerun_needs_none(tmp_path: Path, monkeypatch) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    asked: list[int] = []
    real = atomic.require_free
    monkeypatch.setattr(atomic, "require_free", lambda p, n, w: asked.append(n) or real(p, n, w))
    preprocess_work(work, PreprocessConfig(size=32), workers=1)
    preprocess_work(work, PreprocessConfig(size=32), workers=1)
    assert asked == [(9 + 64) * 32 * 32 + (1 << 20)]  # the second run has nothing new to write


def test_enospc_writing_a_shard_leaves_no_temp_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:  # fmt: skip
    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    config = PreprocessConfig(size=32)
    monkeypatch.setattr(atomic, "open", lambda p, mode: FullFile(p, "w"), raising=False)
    code, _, err = run_cli(["preprocess", str(work), "--size", "32", "-j", "1", "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert "No space left on device" in err and "free some disk space" in err
    assert leftovers(work) == []
    monkeypatch.undo()
    s = preprocess_work(work, config, workers=1)
    assert s.n_images == 9 and s.n_failed == 0


def test_enospc_while_packing_cleans_up_and_resumes_identically(tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    work = make_tiny_work(tmp_path / "a", n_per_class=3, preprocess=False)
    config = PreprocessConfig(size=32)
    real_append = packfiles.PackWriter.append
    calls = {"n": 0}

    def append(self, image: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # three rows in, the fourth half-written
            self._fh.write(np.ascontiguousarray(image).tobytes()[:100])
            raise ENOSPC
        real_append(self, image)

    monkeypatch.setattr(packfiles.PackWriter, "append", append)
    with pytest.raises(OSError, match="No space left"):
        preprocess_work(work, config, workers=1)
    cache = work / "cache" / config.key
    assert leftovers(work) == [] and not (cache / "meta.json").exists()
    assert sum(p.stat().st_size for p in (cache / "data").glob("*.u8")) == 0  # rows cut now
    monkeypatch.undo()
    preprocess_work(work, config, workers=1)
    clean = make_tiny_work(tmp_path / "b", n_per_class=3, preprocess=True)
    got, want = open_cache(work, config), open_cache(clean, config)
    assert np.array_equal(np.asarray(got.images), np.asarray(want.images))
    assert got.index.equals(want.index)
