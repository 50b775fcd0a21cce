"""Preprocess: any one bad file (whatever it raises) is a failure row; the stage never stops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from cxrad.manifest import make_rows, write_manifest
from cxrad.preprocess import PreprocessConfig, open_cache, preprocess_work
from helpers import make_dicom

RAMP = np.linspace(0, 4095, 256).astype(np.uint16).reshape(16, 16)


def _dicoms(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    lut = pydicom.Dataset()
    lut.add_new(0x00283006, "US", list(range(16)))  # LUTData without its descriptor
    short = pydicom.Dataset()
    short.LUTDescriptor = [4096, 0, 12]
    short.LUTData = np.arange(10, dtype=np.uint16).tobytes()
    files = {
        "ww0": make_dicom(folder / "ww0.dcm", RAMP, 12, WindowCenter=100, WindowWidth=0),
        "wwneg": make_dicom(folder / "wwneg.dcm", RAMP + 1, 12, WindowCenter=100, WindowWidth=-5),
        "mlut": make_dicom(folder / "mlut.dcm", RAMP + 2, 12, ModalityLUTSequence=[lut]),
        "voi": make_dicom(folder / "voi.dcm", RAMP + 3, 12, VOILUTSequence=[short]),
        "rows": make_dicom(folder / "rows.dcm", RAMP + 4, 12),
        "cut": make_dicom(folder / "cut.dcm", RAMP + 5, 12),
    }
    ds = pydicom.dcmread(files["rows"])
    ds.Rows = 8
    ds.save_as(files["rows"])
    files["cut"].write_bytes(files["cut"].read_bytes()[:-200])
    (folder / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    files["junk"] = folder / "junk.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "ok.png")
    files["ok"] = folder / "ok.png"
    return files


def _work(tmp_path: Path, files: dict[str, Path]) -> Path:
    recs = [{"image_id": f"t/{k}", "path": str(p), "status": "ok"} for k, p in files.items()]
    work = tmp_path / "work"
    write_manifest(make_rows(recs), work)  # no sha1: preprocess hashes, as after --no-hash
    return work


def test_dicom_header_edge_cases_cache_or_fail_cleanly(tmp_path: Path) -> None:
    files = _dicoms(tmp_path / "in")
    work = _work(tmp_path, files)
    s = preprocess_work(work, PreprocessConfig(size=16), workers=1)
    cache = open_cache(work, PreprocessConfig(size=16))
    failed = dict(zip(cache.failures["image_id"], cache.failures["reason"], strict=True))
    assert set(failed) == {"t/cut", "t/junk"}
    assert failed["t/cut"].startswith("truncated image") and s.n_images == 6
    assert s.n_failed == 2 and s.n_rows == 8


def test_an_unexpected_exception_is_a_failure_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _dicoms(tmp_path / "in")
    work = _work(tmp_path, files)

    def resize_or_boom(img: np.ndarray, size: int, mode: str) -> np.ndarray:
        if img.shape == (8, 16):
            raise RuntimeError("a bug in a third-party library")
        return real(img, size, mode)

    from cxrad.preprocess import cache as cache_mod

    real = cache_mod.resize
    monkeypatch.setattr(cache_mod, "resize", resize_or_boom)
    s = preprocess_work(work, PreprocessConfig(size=16), workers=1)
    cache = open_cache(work, PreprocessConfig(size=16))
    failed = dict(zip(cache.failures["image_id"], cache.failures["reason"], strict=True))
    assert failed["t/rows"] == "unreadable: RuntimeError: a bug in a third-party library"
    assert s.n_images == 5 and s.n_failed == 3
