"""cxrad.image on the pydicom-data fixtures: every transfer syntax the plugins cover decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from cxrad.errors import ImageReadError
from cxrad.image import read_image

# The README's table: these cannot decode with any installed plugin (or hold no pixels).
EXPECTED_FAILURES = {
    "emri_small_jpeg_2k_lossless_too_short.dcm": "not_an_image",
    "liver_deflate.dcm": "unsupported_transfer_syntax",
    "liver_nonbyte_aligned_deflate.dcm": "unsupported_transfer_syntax",
    "liver_rle.dcm": "unsupported_transfer_syntax",
    "liver_nonbyte_aligned_rle.dcm": "unsupported_transfer_syntax",
}
SAME_PIXELS = [
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),
    ("693_J2KR.dcm", "693_UNCR.dcm"),
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("emri_small_big_endian.dcm", "emri_small.dcm"),
]


@pytest.fixture
def pydicom_data(fixtures_root: Path) -> Path:
    return fixtures_root / "pydicom-data"


@pytest.mark.data
def test_every_fixture_decodes_or_fails_as_the_readme_says(pydicom_data: Path) -> None:
    files = sorted(pydicom_data.glob("*.dcm"))
    assert len(files) == 79
    decoded = 0
    for f in files:
        if f.name in EXPECTED_FAILURES:
            with pytest.raises(ImageReadError) as e:
                read_image(f)
            assert e.value.code == EXPECTED_FAILURES[f.name], (f.name, str(e.value))
            continue
        r = read_image(f)
        assert r.pixels.ndim == 2 and r.pixels.dtype == np.float32, f.name
        assert np.isfinite(r.pixels).all() and 0 <= r.pixels.min() <= r.pixels.max() <= 1
        assert r.info["format"] == "dicom"
        decoded += 1
    assert decoded == 74  # 49 numpy + 12 Pillow + 13 that need pylibjpeg (README: 18 failed)


@pytest.mark.data
def test_unsupported_syntax_names_itself_and_the_fix(pydicom_data: Path) -> None:
    with pytest.raises(ImageReadError) as e:
        read_image(pydicom_data / "liver_deflate.dcm")
    assert "1.2.840.10008.1.2.8.1" in str(e.value) and "convert" in str(e.value)


@pytest.mark.data
@pytest.mark.parametrize(("a", "b"), SAME_PIXELS)
def test_lossless_pairs_decode_identically(pydicom_data: Path, a: str, b: str) -> None:
    np.testing.assert_allclose(  # same stored values; the window is float arithmetic
        read_image(pydicom_data / a).pixels, read_image(pydicom_data / b).pixels, atol=1e-6
    )


@pytest.mark.data
def test_real_monochrome1_jpeg2000_chest(pydicom_data: Path) -> None:
    path = pydicom_data / "RG1_J2KI.dcm"
    r = read_image(path)
    assert r.info["Modality"] == "CR" and r.info["BodyPartExamined"] == "CHEST"
    assert r.info["PhotometricInterpretation"] == "MONOCHROME1"
    assert r.pixels.shape == (1955, 1841)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    # MONOCHROME1: higher stored values are darker, so the decoded image runs the other way
    assert np.corrcoef(raw[::8, ::8].ravel(), r.pixels[::8, ::8].ravel())[0, 1] < -0.9
    # lungs (dark on a chest film) sit darker than the mediastinum between them
    h, w = r.pixels.shape
    lung = r.pixels[h // 3 : h // 2, w // 5 : w // 3].mean()
    middle = r.pixels[h // 3 : h // 2, int(w * 0.45) : int(w * 0.55)].mean()
    assert lung < middle


@pytest.mark.data
def test_files_without_preamble_decode(pydicom_data: Path) -> None:
    for name in ("JLSL_RGB_ILV0.dcm", "OT-PAL-8-face.dcm"):
        assert (pydicom_data / name).read_bytes()[128:132] != b"DICM"
        r = read_image(pydicom_data / name)
        assert r.info["colour"] is True and r.pixels.std() > 0.05
