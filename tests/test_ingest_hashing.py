"""Hashing: sha1 finds byte copies, phash survives resizing, bad files become reasons.

Tests that only need some film use synthetic ones (``films``); the phash and DICOM checks on
real pairs and fixtures are marked ``data``, each with a twin on films built here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from cxrad.image import read_image
from cxrad.manifest import hashing, make_rows
from cxrad.manifest.hashing import add_hashes, hash_file
from helpers import make_dicom, synthetic_xray


def films(folder: Path, n: int, suffix: str = ".png", side: int = 64) -> list[Path]:
    """``n`` distinct synthetic chest-like films."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = folder / f"f{i:03d}{suffix}"
        Image.fromarray(synthetic_xray("NORMAL", rng, side)).save(path)
        out.append(path)
    return out


def rows(paths: list[Path], status: str = "ok"):
    return make_rows(
        {"image_id": f"t/{i}", "path": str(p), "source": "t", "status": status}
        for i, p in enumerate(paths)
    )


def distance(a: str, b: str) -> int:
    return imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b)


def test_identical_files_identical_sha1(tmp_path: Path) -> None:
    src, other = films(tmp_path / "src", 2)
    a, b = shutil.copy(src, tmp_path / "a.png"), shutil.copy(src, tmp_path / "b.png")
    df = add_hashes(rows([Path(a), Path(b), other]), workers=1)
    assert (df["status"] == "ok").all()
    assert df["sha1"][0] == df["sha1"][1] != df["sha1"][2]
    assert len(df["sha1"][0]) == 40 and len(df["phash"][0]) == 16


@pytest.mark.data
def test_phash_survives_resize_and_reencode(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "fixtures/xrv-tests/00000001_000.png"  # untouched 512 px NIH
    small = tmp_path / "small.jpg"
    Image.open(src).convert("L").resize((181, 181), Image.Resampling.BILINEAR).save(
        small, quality=70
    )
    # and a real pair: the untouched 1024 px original vs the 256 px copy in nih-chestxray14
    orig = shared_data / "fixtures/nih-original-1024/00000075_000.png"
    down = shared_data / "nih-chestxray14/images/00000075_000.png"
    unrelated = shared_data / "fixtures/nih-original-1024/00000129_000.png"
    (s1, p1, _, _), (s2, p2, _, _) = hash_file(str(src)), hash_file(str(small))
    (_, p3, _, _), (_, p4, _, _), (_, p5, _, _) = (
        hash_file(str(p)) for p in (orig, down, unrelated)
    )
    assert s1 != s2
    assert distance(p1, p2) <= 6
    assert distance(p3, p4) <= 6
    assert distance(p3, p5) > 10  # a different patient's film is far away


def test_phash_survives_resize_and_reencode_of_a_synthetic_film(tmp_path: Path) -> None:
    """The check above on films built here, so it runs without ../shared/data."""
    (normal,) = films(tmp_path, 1)
    other = tmp_path / "pneumonia.png"  # the same body with a bright blob in one lung
    Image.fromarray(synthetic_xray("PNEUMONIA", np.random.default_rng(1), 64)).save(other)
    small = tmp_path / "small.jpg"
    Image.open(normal).resize((45, 45), Image.Resampling.BILINEAR).save(small, quality=70)
    (s1, p1, st1, _), (s2, p2, st2, _) = hash_file(str(normal)), hash_file(str(small))
    assert st1 == st2 == "ok" and s1 != s2
    assert distance(p1, p2) <= 6
    assert distance(p1, hash_file(str(other))[1]) > 10  # a different film is far away


def test_bad_files_become_unreadable_rows(tmp_path: Path) -> None:
    (good,) = films(tmp_path / "src", 1, side=256)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:3000])
    jpg = tmp_path / "cut.jpg"
    Image.open(good).save(jpg, quality=90)
    cut_jpg = tmp_path / "cut2.jpg"
    cut_jpg.write_bytes(jpg.read_bytes()[:1500])
    excluded = tmp_path / "excluded.png"
    excluded.write_text("never read")
    df = add_hashes(rows([good, empty, text, truncated, cut_jpg]), workers=1)
    assert list(df["status"]) == [
        "ok",
        "unreadable: empty file",
        "unreadable: not an image",
        "unreadable: truncated",
        "unreadable: truncated",
    ]
    assert df["phash"][1:].isna().all()
    skipped = add_hashes(rows([excluded], status="excluded: lateral view"), workers=1)
    assert skipped["status"][0] == "excluded: lateral view" and skipped["sha1"].isna().all()


def test_too_large_is_a_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hashing, "MAX_IMAGE_PIXELS", 1000)  # 256x256 > 2 x 1000
    (film,) = films(tmp_path, 1, side=256)
    sha1, phash, status, _ = hash_file(str(film))
    assert status == "unreadable: too large" and phash is None and sha1 is not None


@pytest.mark.data
def test_dicom_monochrome1_is_inverted(shared_data: Path) -> None:
    import pydicom

    path = shared_data / "fixtures/xrv-tests/Fake_MONOHR1.dcm"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = np.asarray(hashing.load_grey(str(path), path.read_bytes())).astype(np.float64)
    raw = ds.pixel_array.astype(np.float64)
    assert np.corrcoef(img.ravel(), raw.ravel())[0, 1] < -0.99  # inverted, like the cache
    np.testing.assert_allclose(img, np.rint(read_image(path).pixels * 255), atol=1)
    assert hash_file(str(path))[2] == "ok"
    real = shared_data / "fixtures/xrv-tests" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"  # fmt: skip
    assert hash_file(str(real))[2] == "ok"


def test_synthetic_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    """The check above on a MONOCHROME1/MONOCHROME2 pair built here (same stored pixels)."""
    import pydicom

    raw = synthetic_xray("PNEUMONIA", np.random.default_rng(0), 64).astype(np.uint16) * 16
    m1 = make_dicom(tmp_path / "m1.dcm", raw, 12, photometric="MONOCHROME1")
    m2 = make_dicom(tmp_path / "m2.dcm", raw, 12)
    assert pydicom.dcmread(m1).PhotometricInterpretation == "MONOCHROME1"
    g1, g2 = (
        np.asarray(hashing.load_grey(str(p), p.read_bytes())).astype(np.float64) for p in (m1, m2)
    )
    assert np.corrcoef(g1.ravel(), raw.ravel())[0, 1] < -0.99  # inverted, like the cache
    np.testing.assert_allclose(g1, 255 - g2, atol=1)
    np.testing.assert_allclose(g1, np.rint(read_image(m1).pixels * 255), atol=1)
    (_, p1, st1, _), (_, p2, st2, _) = hash_file(str(m1)), hash_file(str(m2))
    assert st1 == st2 == "ok" and distance(p1, p2) > 32  # an inverted film hashes far away


def test_pool_matches_inline_and_reports_progress(tmp_path: Path) -> None:
    paths = films(tmp_path, 80, suffix=".jpeg")
    df = rows(paths)
    calls: list[tuple[int, int]] = []
    pooled = add_hashes(df, workers=2, progress=lambda d, t: calls.append((d, t)))
    inline = add_hashes(df, workers=1)
    assert pooled.equals(inline)
    assert calls[0] == (0, 80) and calls[-1] == (80, 80)
    assert (pooled["status"] == "ok").all() and pooled["phash"].notna().all()
