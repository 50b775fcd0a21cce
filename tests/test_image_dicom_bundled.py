"""cxrad.image and the gate on the real DICOMs that the pydicom wheel ships: no ../shared/data.

pydicom (pinned in pyproject) installs 78 ``.dcm`` test files from many vendors and transfer
syntaxes: CT, MR, US, NM, RT, SEG and SR objects, JPEG baseline, extended, LS and 2000, RLE,
deflate, big endian, implicit VR, colour and palette. They are real files, not ones we wrote, so
they check the reader where our synthetic DICOMs can only check what we thought of. Every one
must decode or fail with a typed reason, and the gate must let none of them through.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data.data_manager import DATA_ROOT

from cxrad.errors import ImageReadError
from cxrad.gate import InputGate, read_info
from cxrad.image import read_image

BUNDLED = Path(DATA_ROOT) / "test_files"

# What pydicom itself says of these (checked with ``dcmread(f).pixel_array``): no pixel data,
# a zero-size image, too few bytes, a bad VR, or a stream no installed plugin decodes.
EXPECTED_FAILURES = {
    "ExplVR_BigEndNoMeta.dcm": "not_an_image",
    "ExplVR_LitEndNoMeta.dcm": "not_an_image",
    "JPEG-lossy.dcm": "undecodable",  # libjpeg: "a misplaced marker segment"
    "JPEG2000-embedded-sequence-delimiter.dcm": "undecodable",
    "MR_truncated.dcm": "truncated",
    "UN_sequence.dcm": "not_an_image",
    "badVR.dcm": "truncated",
    "empty_charset_LEI.dcm": "not_an_image",
    "meta_missing_tsyntax.dcm": "not_an_image",
    "nested_priv_SQ.dcm": "not_an_image",
    "no_meta.dcm": "not_an_image",
    "no_meta_group_length.dcm": "not_an_image",
    "priv_SQ.dcm": "not_an_image",
    "reportsi.dcm": "not_an_image",
    "reportsi_with_empty_number_tags.dcm": "not_an_image",
    "rtplan.dcm": "not_an_image",
    "rtplan_truncated.dcm": "not_an_image",
    "rtstruct.dcm": "not_an_image",
    "test-SR.dcm": "not_an_image",
    "waveform_ecg.dcm": "not_an_image",
}
# One stored image, several encodings: each must decode to the same pixels as the first.
SAME_PIXELS = [
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_bigendian.dcm"),
    ("MR_small.dcm", "MR_small_expb.dcm"),
    ("MR_small.dcm", "MR_small_implicit.dcm"),
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
    ("MR_small.dcm", "MR_small_padded.dcm"),
    ("rtdose.dcm", "rtdose_rle.dcm"),
    ("rtdose.dcm", "rtdose_expb.dcm"),
    ("liver_1frame.dcm", "liver_expb_1frame.dcm"),
]
TAGGED_NON_XRAY = {"CT", "MR", "US", "NM", "RTDOSE", "RTPLAN", "RTSTRUCT", "SEG", "SR", "ECG"}


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():  # pydicom warns about the odd files it ships on purpose
        warnings.simplefilter("ignore")
        yield


def test_the_wheel_ships_the_files() -> None:
    assert len(sorted(BUNDLED.glob("*.dcm"))) == 78, BUNDLED


def test_every_bundled_dicom_decodes_or_fails_with_its_reason() -> None:
    decoded = 0
    for f in sorted(BUNDLED.glob("*.dcm")):
        if f.name in EXPECTED_FAILURES:
            with pytest.raises(ImageReadError) as e:
                read_image(f)
            assert e.value.code == EXPECTED_FAILURES[f.name], (f.name, str(e.value))
            assert f.name in str(e.value)  # the reason names the file
            continue
        r = read_image(f)
        assert r.pixels.ndim == 2 and r.pixels.dtype == np.float32, f.name
        assert np.isfinite(r.pixels).all() and 0 <= r.pixels.min() <= r.pixels.max() <= 1, f.name
        assert r.info["format"] == "dicom", f.name
        decoded += 1
    assert decoded == 58


def test_undecodable_stream_names_its_transfer_syntax() -> None:
    with pytest.raises(ImageReadError) as e:
        read_image(BUNDLED / "JPEG-lossy.dcm")
    assert "JPEG Extended" in str(e.value) and "1.2.840.10008.1.2.4.51" in str(e.value)


@pytest.mark.parametrize(("a", "b"), SAME_PIXELS)
def test_lossless_encodings_decode_identically(a: str, b: str) -> None:
    np.testing.assert_allclose(  # same stored values; the window is float arithmetic
        read_image(BUNDLED / a).pixels, read_image(BUNDLED / b).pixels, atol=1e-6
    )


def test_decoded_pixels_follow_pydicom() -> None:
    """Our [0, 1] image is a monotone map of pydicom's stored values (no flip, no crop)."""
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "image_dfl.dcm"):
        raw = pydicom.dcmread(BUNDLED / name).pixel_array.astype(np.float64)
        ours = read_image(BUNDLED / name).pixels.astype(np.float64)
        assert ours.shape == raw.shape[-2:], name
        assert np.corrcoef(raw.ravel(), ours.ravel())[0, 1] > 0.9, name


def test_colour_dicoms_are_flagged_colour() -> None:
    for name in ("SC_rgb_jpeg.dcm", "examples_palette.dcm", "examples_ybr_color.dcm"):
        assert read_image(BUNDLED / name).info["colour"] is True, name
    assert read_image(BUNDLED / "CT_small.dcm").info["colour"] is False


def test_the_gate_lets_no_bundled_file_through() -> None:
    gate = InputGate.default()
    tagged = 0
    for f in sorted(BUNDLED.glob("*.dcm")):
        modality = read_info(f).get("Modality")
        try:
            decision, _ = gate.check_file(f)
        except ImageReadError:
            assert f.name in EXPECTED_FAILURES, f.name  # a typed failure, never a pass
            continue
        assert not decision.passed, (f.name, decision)
        if modality in TAGGED_NON_XRAY:
            assert (decision.code, decision.by) == ("not_xray_modality", "dicom_tags"), f.name
            tagged += 1
    assert tagged == 40
