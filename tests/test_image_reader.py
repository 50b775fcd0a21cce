"""cxrad.image: one reader, typed failures, DICOM header edge cases (all synthetic, no data)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset

from cxrad.errors import DecodeError, ImageReadError
from cxrad.image import (
    IMAGE_SUFFIXES,
    ImageRead,
    file_sha1,
    is_dicom_file,
    looks_like_dicom,
    read_image,
    sha1_bytes,
)
from helpers import make_dicom

RAMP = np.linspace(0, 4095, 256).astype(np.uint16).reshape(16, 16)


def test_png_info_and_pixels(tmp_path: Path) -> None:
    a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(a).save(tmp_path / "a.png")
    r = read_image(tmp_path / "a.png")
    assert isinstance(r, ImageRead) and r.pixels.dtype == np.float32
    np.testing.assert_allclose(r.pixels, a / 255.0, atol=1e-7)
    assert r.info["format"] == "png" and r.info["mode"] == "L" and r.info["colour"] is False
    assert (r.info["width"], r.info["height"]) == (8, 8)
    assert r.info["Modality"] is None and r.info["SOPClassUID"] is None
    assert read_image(tmp_path / "a.png", native=True).pixels.dtype == np.uint8


def test_colour_is_reported_only_for_real_colour(tmp_path: Path) -> None:
    grey = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 3, axis=2)
    Image.fromarray(grey, "RGB").save(tmp_path / "g.png")
    col = grey.copy()
    col[..., 0] = 200
    Image.fromarray(col, "RGB").save(tmp_path / "c.png")
    assert read_image(tmp_path / "g.png").info["colour"] is False
    assert read_image(tmp_path / "c.png").info["colour"] is True


def test_dicom_info_has_the_tags(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "a.dcm", RAMP, 12, BodyPartExamined="CHEST", ViewPosition="PA")
    r = read_image(path)
    assert r.info["format"] == "dicom" and r.info["Modality"] == "DX"
    assert r.info["BodyPartExamined"] == "CHEST" and r.info["ViewPosition"] == "PA"
    assert r.info["PhotometricInterpretation"] == "MONOCHROME2" == r.info["mode"]
    assert r.info["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.7"
    np.testing.assert_allclose(r.pixels, RAMP / 4095.0, atol=1e-6)


def test_dicom_without_preamble_is_detected_and_read(tmp_path: Path) -> None:
    good = make_dicom(tmp_path / "a.dcm", RAMP, 12)
    bare = tmp_path / "1.2.826.0.1.3680043"  # no suffix, no 128-byte preamble, no DICM
    bare.write_bytes(good.read_bytes()[132:])
    assert is_dicom_file(bare) and looks_like_dicom(bare.read_bytes()[:132])
    np.testing.assert_array_equal(read_image(bare).pixels, read_image(good).pixels)
    # without file meta at all (dataset only): the syntax is guessed from the bytes
    ds = pydicom.dcmread(good)
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=True, little_endian=True)
    nometa = tmp_path / "nometa"
    nometa.write_bytes(buf.getvalue())
    assert nometa.read_bytes()[:2] == b"\x08\x00"
    np.testing.assert_array_equal(read_image(nometa).pixels, read_image(good).pixels)


def test_png_named_dcm_is_read_as_png(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "x.dcm").write_bytes((tmp_path / "x.png").read_bytes())
    assert read_image(tmp_path / "x.dcm").info["format"] == "png"


def test_suffix_list_and_sha1(tmp_path: Path) -> None:
    assert {".png", ".jpg", ".jpeg", ".dcm", ".bmp", ".tif"} <= IMAGE_SUFFIXES
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert file_sha1(p) == sha1_bytes(p.read_bytes())


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (None, "missing", "missing file"),
        (b"", "empty", "zero-byte file"),
        (b"hello, not an image\n" * 20, "not_an_image", "not an image"),
    ],
)
def test_failures_have_a_code_and_words(
    tmp_path: Path, content: bytes | None, code: str, words: str
) -> None:
    p = tmp_path / "f.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert e.value.code == code and str(e.value).startswith(words)
    assert isinstance(e.value, DecodeError)


def test_folder_and_bytes_sources(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path)
    assert e.value.code == "missing" and "not a regular file" in str(e.value)
    Image.fromarray(np.full((3, 3), 7, np.uint8)).save(tmp_path / "a.png")
    r = read_image((tmp_path / "a.png").read_bytes(), name="mem.png", native=True)
    assert int(r.pixels[0, 0]) == 7
    with pytest.raises(ImageReadError, match=r"^zero-byte file: mem"):
        read_image(b"", name="mem")


def test_too_large_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "a.png", max_pixels=100)
    assert e.value.code == "too_large" and "4096 pixels" in str(e.value)
    with pytest.raises(ImageReadError) as e:
        read_image(make_dicom(tmp_path / "a.dcm", RAMP, 12), max_pixels=100)
    assert e.value.code == "too_large"


def test_any_decoder_exception_becomes_unreadable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")

    def boom(*a: object, **k: object) -> None:
        raise KeyError("weird internal state")

    monkeypatch.setattr("cxrad.image.reader.pil_read", boom)
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "a.png")
    assert e.value.code == "unreadable" and "KeyError" in str(e.value)


# ------------------------------------------------------------------ DICOM header edge cases


def _decodes_sanely(path: Path) -> ImageRead:
    r = read_image(path)
    assert r.pixels.shape == (16, 16) and np.isfinite(r.pixels).all()
    assert r.pixels.min() >= 0.0 and r.pixels.max() <= 1.0
    return r


@pytest.mark.parametrize("width", [0, -100])
def test_window_width_zero_or_negative_is_ignored(tmp_path: Path, width: int) -> None:
    path = make_dicom(tmp_path / "w.dcm", RAMP, 12, WindowCenter=2048, WindowWidth=width)
    r = _decodes_sanely(path)
    np.testing.assert_allclose(r.pixels, RAMP / 4095.0, atol=1e-6)  # the stored range instead
    assert "Window Width" in r.info["notes"][0]


def test_rows_smaller_than_the_pixel_data(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "r.dcm", RAMP, 12)
    ds = pydicom.dcmread(path)
    ds.Rows = 8  # the pixel data holds 16 rows
    ds.save_as(path)
    r = read_image(path)
    assert r.pixels.shape == (8, 16) and np.isfinite(r.pixels).all()
    np.testing.assert_allclose(r.pixels, RAMP[:8] / 4095.0, atol=1e-6)


def test_rows_larger_than_the_pixel_data_is_truncated(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "r.dcm", RAMP, 12)
    ds = pydicom.dcmread(path)
    ds.Rows = 32
    ds.save_as(path)
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert e.value.code == "truncated"


def test_modality_lut_item_without_descriptor(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new(0x00283006, "US", list(range(16)))  # LUTData, no LUTDescriptor
    path = make_dicom(tmp_path / "m.dcm", RAMP, 12, ModalityLUTSequence=[item])
    r = _decodes_sanely(path)
    assert "Modality LUT ignored" in r.info["notes"][0]


def test_modality_lut_maps_the_stored_values(tmp_path: Path) -> None:
    """A valid Modality LUT (here one that runs backwards) is applied before the window."""
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]  # the standard allows 8 or 16 bits per entry
    item.add_new(0x00283006, "US", [65535 - 16 * v for v in range(4096)])  # LUTData, as values
    item.ModalityLUTType = "US"
    r = _decodes_sanely(make_dicom(tmp_path / "l.dcm", RAMP, 12, ModalityLUTSequence=[item]))
    plain = _decodes_sanely(make_dicom(tmp_path / "p.dcm", RAMP, 12))
    np.testing.assert_allclose(r.pixels, 1.0 - plain.pixels, atol=1e-3)


def test_modality_lut_of_12_bit_entries_is_ignored_not_fatal(tmp_path: Path) -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]  # not allowed for a Modality LUT; pydicom raises on it
    item.add_new(0x00283006, "US", list(range(4096)))
    r = _decodes_sanely(make_dicom(tmp_path / "l.dcm", RAMP, 12, ModalityLUTSequence=[item]))
    assert "Modality LUT ignored" in r.info["notes"][0] and "12" in r.info["notes"][0]


def test_short_voi_lut_is_ignored(tmp_path: Path) -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = np.arange(100, dtype=np.uint16).tobytes()  # 100 entries, not 4096
    path = make_dicom(tmp_path / "v.dcm", RAMP, 12, VOILUTSequence=[item])
    r = _decodes_sanely(path)
    assert "VOI LUT ignored" in r.info["notes"][0] and "100 entries" in r.info["notes"][0]


def test_non_numeric_window_and_rescale(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "n.dcm", RAMP, 12, WindowCenter="2047", WindowWidth="100")
    raw = path.read_bytes()
    assert raw.count(b"2047") == 1
    path.write_bytes(raw.replace(b"2047", b"abcd"))  # pydicom cannot write a bad DS itself
    r = _decodes_sanely(path)
    assert any("window ignored" in n for n in r.info["notes"])


def test_no_pixel_data_and_zero_rows(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "a.dcm", RAMP, 12)
    ds = pydicom.dcmread(path)
    ds.Rows = 0
    ds.save_as(tmp_path / "z.dcm")
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "z.dcm")
    assert e.value.code == "not_an_image" and "0x16" in str(e.value)
    del ds.PixelData
    ds.save_as(tmp_path / "n.dcm")
    with pytest.raises(ImageReadError, match="without pixel data") as e:
        read_image(tmp_path / "n.dcm")
    assert e.value.code == "not_an_image"


@pytest.mark.parametrize("value", [b"NaN ", b"inf ", b"-inf"])
def test_a_non_finite_rescale_is_ignored_with_a_note(tmp_path: Path, value: bytes) -> None:
    path = make_dicom(tmp_path / "s.dcm", RAMP, 12, RescaleSlope="9999", RescaleIntercept=0)
    raw = path.read_bytes()
    assert raw.count(b"9999") == 1
    path.write_bytes(raw.replace(b"9999", value))  # pydicom will not write a non-finite DS
    r = _decodes_sanely(path)
    assert any("RescaleSlope ignored" in n for n in r.info["notes"]), r.info["notes"]
    np.testing.assert_allclose(r.pixels, RAMP / 4095.0, atol=1e-6)  # as if slope 1
