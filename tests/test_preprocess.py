"""Stage 4, preprocess: resize geometry, the config key, prepare, and the cache's guarantees."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrad.errors import CacheError
from cxrad.manifest import make_rows, read_manifest, write_manifest
from cxrad.preprocess import (
    PreprocessConfig,
    PreprocessConfigError,
    file_sha1,
    open_cache,
    prepare,
    preprocess_work,
    resize,
)
from helpers import TINY_CLASSES, make_dicom, make_tiny_work, synthetic_xray

# ----------------------------------------------------------------------------- resize


def test_letterbox_2_to_1_is_centred_with_zero_padding() -> None:
    wide = np.full((16, 32), 255, np.uint8)
    out = resize(wide, 32, "letterbox")
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert (out[8:24] == 255).all()
    assert (out[:8] == 0).all() and (out[24:] == 0).all()
    tall = resize(np.full((64, 32), 1.0, np.float32), 32, "letterbox")  # float path, 1:2
    assert (tall[:, 8:24] == 255).all() and (tall[:, :8] == 0).all() and (tall[:, 24:] == 0).all()
    odd = resize(np.full((10, 32), 200, np.uint8), 32)  # 11 rows above, 11 below
    rows = np.flatnonzero(odd[:, 0])
    assert rows[0] == 11 and rows[-1] == 20


def test_stretch_fills_the_square() -> None:
    out = resize(np.full((16, 32), 255, np.uint8), 32, "stretch")
    assert (out == 255).all()


def test_downscale_is_anti_aliased() -> None:
    checker = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    for img in (checker, checker.astype(np.float32) / 255):
        out = resize(img, 32, "stretch")
        assert abs(float(out.mean()) - 127.5) < 2 and out.std() < 2  # no moire, just grey


def test_config_key_and_validation() -> None:
    a, b = PreprocessConfig(), PreprocessConfig(size=128)
    assert a.key != b.key and a.key == PreprocessConfig(256, "letterbox").key
    assert a.key.startswith("s256-letterbox-")
    assert PreprocessConfig(mode="stretch").to_dict() == {"size": 256, "mode": "stretch"}
    with pytest.raises(PreprocessConfigError, match="Did you mean 'stretch'"):
        PreprocessConfig(mode="strech")  # type: ignore[arg-type]
    with pytest.raises(PreprocessConfigError, match="size"):
        PreprocessConfig(size=0)


def test_prepare_gives_the_same_pixels_from_path_pil_and_array(tmp_path: Path) -> None:
    img = synthetic_xray("PNEUMONIA", np.random.default_rng(1))
    Image.fromarray(img).convert("RGB").save(tmp_path / "x.png")
    cfg = PreprocessConfig(size=24)
    from_path = prepare(tmp_path / "x.png", cfg)
    assert from_path.shape == (24, 24) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(prepare(Image.open(tmp_path / "x.png"), cfg), from_path)
    np.testing.assert_array_equal(prepare(img, cfg), from_path)
    rgb = np.asarray(Image.open(tmp_path / "x.png"))
    np.testing.assert_array_equal(prepare(rgb, cfg), from_path)


# ----------------------------------------------------------------------------- the cache


def _cache_files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_tiny_work_cache_matches_prepare(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=4, size=16)
    df = read_manifest(work)
    cache = open_cache(work, PreprocessConfig(size=16))
    rows = cache.rows_for(df)
    assert cache.images.shape == (12, 16, 16) and not cache.images[0].flags.writeable
    assert (rows >= 0).all() and len(set(rows)) == 12
    for i in (0, 5, 11):
        expect = prepare(df["path"].iloc[i], PreprocessConfig(size=16))
        np.testing.assert_array_equal(cache.images[rows[i]], expect)
    assert set(df["split"]) == {"train", "val", "test"}
    for split, part in df.groupby("split"):
        for cls in TINY_CLASSES:
            assert (part[cls] == 1).any(), (split, cls)
    assert df[list(TINY_CLASSES)].isna().any().any()  # some unannotated labels
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["shape"] == [12, 16, 16] and meta["config"] == {"size": 16, "mode": "letterbox"}


def test_rerun_does_nothing_and_config_change_makes_a_new_cache(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, size=16)
    cfg = PreprocessConfig(size=16)
    before = _cache_files(open_cache(work, cfg).path)
    again = preprocess_work(work, cfg, workers=1)
    assert (again.n_new, again.n_already, again.repacked) == (0, 9, False)
    assert _cache_files(again.cache_dir) == before
    (again.cache_dir / "data/00000.u8").unlink()  # damaged by hand: rebuilt, not refused
    with pytest.raises(CacheError, match="missing"):
        open_cache(work, cfg)
    rebuilt = preprocess_work(work, cfg, workers=1)
    assert rebuilt.n_new == 9 and _cache_files(rebuilt.cache_dir) == before
    other = preprocess_work(work, PreprocessConfig(size=16, mode="stretch"), workers=1)
    assert other.n_new == 9 and other.cache_dir != again.cache_dir
    assert sorted(p.name for p in (work / "cache").iterdir()) == sorted(
        [cfg.key, PreprocessConfig(size=16, mode="stretch").key]
    )


def test_missing_cache_says_how_to_make_it(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    with pytest.raises(CacheError, match=r"run `cxrad preprocess .* --size 64 --mode stretch`"):
        open_cache(work, PreprocessConfig(size=64, mode="stretch"))


def _add_rows(work: Path, records: list[dict]) -> None:
    df = read_manifest(work)
    new = make_rows(records)
    new["dup_group"] = pd.array(np.arange(len(new)) + 1000, dtype="Int64")
    new["split"] = pd.array(["train"] * len(new), dtype="string")
    write_manifest(pd.concat([df, new], ignore_index=True), work)


def test_failures_are_recorded_with_reasons_and_the_run_goes_on(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, size=16, preprocess=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image\n" * 20)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(bad / "full.png")
    (bad / "cut.png").write_bytes((bad / "full.png").read_bytes()[:2000])
    Image.fromarray(noise).save(bad / "changed.png")
    changed_sha = file_sha1(bad / "changed.png")
    Image.fromarray(255 - noise).save(bad / "changed.png")  # edited after "ingest"
    dup = read_manifest(work).iloc[0]
    recs = [
        {"image_id": f"bad/{n}", "path": str(bad / n), "status": "ok", "sha1": s}
        for n, s in [
            ("empty.png", None),
            ("text.png", None),
            ("cut.png", None),
            ("gone.png", None),
            ("changed.png", changed_sha),
        ]
    ]
    recs.append({"image_id": "bad/lateral.png", "path": str(bad / "x"), "status": "excluded: x"})
    recs.append(
        {"image_id": "dup/copy.png", "path": dup["path"], "status": "ok", "sha1": dup["sha1"]}
    )
    _add_rows(work, recs)
    s = preprocess_work(work, PreprocessConfig(size=16), workers=1)
    assert (s.n_rows, s.n_images, s.n_new, s.n_failed) == (15, 9, 9, 5)
    assert s.failed_by_reason == {
        "changed since ingest": 1,
        "missing file": 1,
        "not an image": 1,
        "truncated image": 1,
        "zero-byte file": 1,
    }
    cache = open_cache(work, PreprocessConfig(size=16))
    f = cache.failures.set_index("image_id")["reason"]
    assert list(f.index) == sorted(r["image_id"] for r in recs[:5])
    assert f["bad/cut.png"].startswith("truncated image") and str(bad) not in f["bad/cut.png"]
    rows = cache.rows_for(read_manifest(work))
    df = read_manifest(work)
    assert rows[df["image_id"] == "dup/copy.png"][0] == rows[df["image_id"] == dup["image_id"]][0]
    assert (rows[df["image_id"].str.startswith("bad/")] == -1).all()
    again = preprocess_work(work, PreprocessConfig(size=16), workers=1)
    assert (again.n_new, again.n_failed, again.repacked) == (0, 5, False)


def test_grown_manifest_adds_only_new_images_and_matches_a_fresh_run(tmp_path: Path) -> None:
    cfg = PreprocessConfig(size=16)
    work = make_tiny_work(tmp_path / "a", n_per_class=3, size=16)
    rng = np.random.default_rng(5)
    recs = []
    for k in range(5):
        p = tmp_path / f"new{k}.png"
        Image.fromarray(synthetic_xray("EFFUSION", rng)).save(p)
        recs.append({"image_id": f"new/{k}", "path": str(p), "status": "ok", "sha1": file_sha1(p)})
    before = (open_cache(work, cfg).path / "data/00000.u8").read_bytes()
    _add_rows(work, recs)
    s = preprocess_work(work, cfg, workers=1, chunk_size=2)
    assert (s.n_new, s.n_already, s.n_images) == (5, 9, 14)
    assert s.bytes_written == 5 * 16 * 16  # only the new images are written
    grown = (s.cache_dir / "data/00000.u8").read_bytes()
    assert grown[: len(before)] == before and len(grown) == 14 * 16 * 16  # appended
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(work / "manifest.parquet", fresh / "manifest.parquet")
    f = preprocess_work(fresh, cfg, workers=1)
    df = read_manifest(work)
    a, b = open_cache(work, cfg), open_cache(fresh, cfg)
    np.testing.assert_array_equal(a.images[a.rows_for(df)], b.images[b.rows_for(df)])
    assert f.bytes_written == 14 * 16 * 16
    assert not list((s.cache_dir / "shards").glob("*"))  # shards are consumed by the pack


CRASH_SCRIPT = """
import os, signal, sys
from cxrad.preprocess import PreprocessConfig, preprocess_work, store
step, k, seen = sys.argv[2], int(sys.argv[3]), [0]
def hook(s):
    if s == step:
        seen[0] += 1
        if seen[0] >= k:
            os.kill(os.getpid(), signal.SIGKILL)
store._checkpoint = hook
preprocess_work(sys.argv[1], PreprocessConfig(size=16), workers=1, chunk_size=3)
"""


def test_kill_9_at_every_stage_then_resume_is_byte_identical(tmp_path: Path) -> None:
    cfg = PreprocessConfig(size=16)
    ref = make_tiny_work(tmp_path, n_per_class=4, size=16)  # uninterrupted: 12 images
    expected = _cache_files(open_cache(ref, cfg).path)
    assert len(expected["data/00000.u8"]) == 12 * 16 * 16
    for step, k in [("shard", 2), ("pack-written", 1), ("journal", 1), ("replaced", 2)]:
        work = tmp_path / f"w-{step}"
        work.mkdir()
        shutil.copy(ref / "manifest.parquet", work / "manifest.parquet")
        r = subprocess.run(
            [sys.executable, "-c", CRASH_SCRIPT, str(work), step, str(k)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == -9, (step, r.stderr[-2000:])
        if step != "shard":  # a crash mid-commit leaves no usable-looking half cache
            with pytest.raises(CacheError):
                open_cache(work, cfg)
        s = preprocess_work(work, cfg, workers=1, chunk_size=5)
        assert s.n_images == 12
        assert _cache_files(s.cache_dir) == expected, step


def test_parallel_workers_give_the_same_cache(tmp_path: Path) -> None:
    cfg = PreprocessConfig(size=16)
    ref = make_tiny_work(tmp_path, n_per_class=4, size=16)
    work = tmp_path / "par"
    work.mkdir()
    shutil.copy(ref / "manifest.parquet", work / "manifest.parquet")
    seen: list[tuple[int, int]] = []
    s = preprocess_work(
        work, cfg, workers=2, chunk_size=3, progress=lambda d, t: seen.append((d, t))
    )
    assert s.n_new == 12 and seen[-1] == (12, 12)
    assert _cache_files(s.cache_dir) == _cache_files(open_cache(ref, cfg).path)


def test_cli_preprocess(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrad.cli import app

    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    runner = CliRunner()
    r = runner.invoke(app, ["preprocess", str(work), "--size", "16", "-j", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "cached 9 images (9 new, 0 already cached)" in r.output
    assert open_cache(work, PreprocessConfig(size=16)).images.shape == (9, 16, 16)
    r = runner.invoke(app, ["preprocess", str(work), "--mode", "strech"])
    assert isinstance(r.exception, PreprocessConfigError)  # cxrad.cli.main: "error: ..." + 2


def cached_by_name(work: Path, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    """Each manifest row's cached image (as int), by file name; every row must be cached."""
    cache, df = open_cache(work, cfg), read_manifest(work)
    rows = cache.rows_for(df)
    assert (rows >= 0).all()
    return {
        Path(p).name: cache.images[r].astype(int) for p, r in zip(df["path"], rows, strict=True)
    }


def test_mixed_formats_cache_every_file(tmp_path: Path) -> None:
    """The real-fixtures test below on files built here: each format, sha1 left to preprocess."""
    src = tmp_path / "src"
    src.mkdir()
    film = synthetic_xray("NORMAL", np.random.default_rng(0), 64)
    Image.fromarray(film).save(src / "a.png")
    Image.fromarray(np.stack([film] * 3, -1)).save(src / "rgb.png")
    Image.fromarray(film.astype(np.uint16) * 257).save(src / "16bit.png")
    Image.fromarray(film[8:56]).save(src / "wide.jpg", quality=95)  # 64 x 48: letterboxed
    make_dicom(src / "m2.dcm", film.astype(np.uint16) * 16, 12)
    make_dicom(src / "m1.dcm", film.astype(np.uint16) * 16, 12, photometric="MONOCHROME1")
    files = sorted(src.iterdir())
    recs = [{"image_id": f"t/{p.name}", "path": str(p), "status": "ok"} for p in files]
    write_manifest(make_rows(recs), tmp_path / "work")  # sha1 left null: preprocess hashes them
    s = preprocess_work(tmp_path / "work", PreprocessConfig(size=32), workers=1)
    assert s.n_failed == 0 and s.n_rows == s.n_images == len(files)
    by_name = cached_by_name(tmp_path / "work", PreprocessConfig(size=32))
    np.testing.assert_array_equal(by_name["rgb.png"], by_name["a.png"])  # grey in RGB: no shift
    for name in ("16bit.png", "m2.dcm"):  # the same film in 16 or 12 bits: within rounding
        assert np.abs(by_name[name] - by_name["a.png"]).max() <= 1, name
    assert np.abs(by_name["m1.dcm"] - (255 - by_name["m2.dcm"])).max() <= 1
    wide = by_name["wide.jpg"]  # 4 black rows top and bottom, the film between
    assert (wide[:4] == 0).all() and (wide[-4:] == 0).all() and wide[16].max() > 0


@pytest.mark.data
def test_real_fixtures_cache_every_file(tmp_path: Path, fixtures_root: Path) -> None:
    files = sorted(
        p
        for p in fixtures_root.rglob("*")
        if p.suffix.lower() in (".png", ".jpg", ".dcm") and "pydicom-data" not in p.parts
    )  # pydicom-data holds files that must fail: tests/test_image_dicom.py covers it
    assert len(files) >= 19
    recs = [
        {"image_id": f"fixtures/{p.relative_to(fixtures_root)}", "path": str(p), "status": "ok"}
        for p in files
    ]
    work = tmp_path / "work"
    write_manifest(make_rows(recs), work)  # sha1 left null: preprocess hashes them
    s = preprocess_work(work, PreprocessConfig(size=64), workers=1)
    assert s.n_failed == 0 and s.n_rows == len(files)
    by_name = cached_by_name(work, PreprocessConfig(size=64))
    m1 = by_name["Fake_MONOHR1.dcm"]
    m2 = by_name["1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]
    assert np.abs(m1 - (255 - m2)).max() <= 1  # inverse images survive resize and rounding
    wide = by_name["16747_3_1.jpg"]  # 1036 x 885: letterboxed, black rows top and bottom
    assert (wide[:4] == 0).all() and (wide[-4:] == 0).all() and wide[32].max() > 0


@pytest.mark.slow
def test_sigkill_at_a_random_time_with_workers_then_resume(tmp_path: Path) -> None:
    import random
    import signal
    import time

    cfg = PreprocessConfig(size=32)
    ref = make_tiny_work(tmp_path, n_per_class=40, size=32)
    expected = _cache_files(open_cache(ref, cfg).path)
    script = (
        "import sys; from cxrad.preprocess import PreprocessConfig, preprocess_work; "
        "preprocess_work(sys.argv[1], PreprocessConfig(size=32), workers=2, chunk_size=4)"
    )
    for trial in range(3):
        work = tmp_path / f"w{trial}"
        work.mkdir()
        shutil.copy(ref / "manifest.parquet", work / "manifest.parquet")
        proc = subprocess.Popen([sys.executable, "-c", script, str(work)], start_new_session=True)
        time.sleep(random.uniform(1.0, 4.0))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
        proc.wait()
        s = preprocess_work(work, cfg, workers=2, chunk_size=7)
        assert s.n_images == 120
        assert _cache_files(s.cache_dir) == expected, trial
