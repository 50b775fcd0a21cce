"""Stage 4, preprocess: decode every real format into one grey channel in [0, 1]."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from cxrad.errors import DecodeError
from cxrad.preprocess import decode_image, prepare
from cxrad.preprocess.decode import bits_for, decode_native, pil_to_array
from helpers import make_dicom


def ramp(h: int = 24, w: int = 32) -> np.ndarray:
    """A uint8 horizontal ramp 0..255 with a vertical component, so rows differ too."""
    x = np.linspace(0, 255, w)[None, :] * 0.8 + np.linspace(0, 51, h)[:, None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- 8-bit formats


def test_png_l_is_value_over_255(tmp_path: Path) -> None:
    a = ramp()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == a.shape
    np.testing.assert_allclose(out, a / 255.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "P", "LA", "RGBA", "1"])
def test_grey_content_in_any_mode_has_no_shift(tmp_path: Path, mode: str) -> None:
    a = ramp()
    if mode == "1":
        a = np.where(a > 128, 255, 0).astype(np.uint8)
    im = Image.fromarray(a).convert(mode)  # grey content, opaque alpha where there is one
    im.save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode == mode
    np.testing.assert_array_equal(decode_native(tmp_path / "x.png"), a)


def test_colour_content_becomes_bt601_luma(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = decode_image(tmp_path / "c.png")
    np.testing.assert_allclose(out, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, atol=1e-5)


def test_alpha_is_composited_onto_black(tmp_path: Path) -> None:
    la = np.stack([np.full((4, 4), 200, np.uint8), np.full((4, 4), 255, np.uint8)], -1)
    la[:2, :, 1] = 0  # top half transparent
    la[2, :, 1] = 128
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = decode_image(tmp_path / "la.png")
    np.testing.assert_allclose(out[:2], 0.0)
    np.testing.assert_allclose(out[2], 200 / 255 * 128 / 255, atol=1e-6)
    np.testing.assert_allclose(out[3], 200 / 255, atol=1e-6)


def test_jpeg_baseline_progressive_and_cmyk(tmp_path: Path) -> None:
    a = np.kron(ramp(12, 16), np.ones((4, 4), np.uint8))  # smooth: JPEG error stays small
    Image.fromarray(a).save(tmp_path / "base.jpg", quality=95)
    Image.fromarray(a).save(tmp_path / "prog.jpg", quality=95, progressive=True)
    Image.fromarray(a).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "prog.jpg").info.get("progressive") == 1
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    for name in ("base.jpg", "prog.jpg", "cmyk.jpg"):
        out = decode_image(tmp_path / name)
        assert out.shape == a.shape
        assert np.abs(out * 255 - a).mean() < 2.0, name


def test_colour_jpeg_decodes_to_its_luma_plane(tmp_path: Path) -> None:
    a = np.kron(ramp(12, 16), np.ones((4, 4), np.uint8))
    Image.fromarray(a).convert("RGB").save(tmp_path / "grey-rgb.jpg", quality=95)
    out = decode_native(tmp_path / "grey-rgb.jpg")
    assert out.dtype == np.uint8  # the Y plane, no colour conversion
    assert np.abs(out.astype(int) - a).mean() < 2.0
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "colour.jpg", quality=95)
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert abs(float(decode_native(tmp_path / "colour.jpg").mean()) - luma) < 2.0


def test_16bit_png_scales_by_significant_bits(tmp_path: Path) -> None:
    full = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    Image.fromarray(full).save(tmp_path / "full.png")
    assert Image.open(tmp_path / "full.png").mode.startswith("I;16")
    out = decode_image(tmp_path / "full.png")
    np.testing.assert_allclose(out, full / 65535.0, atol=1e-6)
    assert out.max() == pytest.approx(1.0)

    twelve = (np.linspace(0, 4095, 64).reshape(8, 8)).astype(np.uint16)  # 12-bit detector in 16
    Image.fromarray(twelve).save(tmp_path / "twelve.png")
    out12 = decode_image(tmp_path / "twelve.png")
    np.testing.assert_allclose(out12, twelve / 4095.0, atol=1e-6)  # not / 65535, not / 255
    assert bits_for(4095) == 12 and bits_for(4096) == 14 and bits_for(255) == 8


def test_int32_and_float_modes(tmp_path: Path) -> None:
    vals = (np.arange(16).reshape(4, 4) * 200).astype(np.int32)  # 0..3000: a 12-bit range
    np.testing.assert_allclose(pil_to_array(Image.fromarray(vals, "I")), vals / 4095.0, atol=1e-6)
    neg = Image.fromarray(vals - 1000, "I")  # outside any unsigned range: min-max
    np.testing.assert_allclose(pil_to_array(neg), vals / 3000.0, atol=1e-6)
    out = decode_native(_save_tiff(tmp_path / "f.tif", np.linspace(0, 1, 16, dtype=np.float32)))
    np.testing.assert_allclose(out.ravel(), np.linspace(0, 1, 16), atol=1e-6)


def _save_tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.reshape(4, 4), "F").save(path)
    return path


# ----------------------------------------------------------------------------- DICOM


def test_dicom_bits_stored_12_in_16(tmp_path: Path) -> None:
    px = np.linspace(0, 4095, 64).astype(np.uint16).reshape(8, 8)
    out = decode_image(make_dicom(tmp_path / "a.dcm", px, bits_stored=12))
    np.testing.assert_allclose(out, px / 4095.0, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    px = np.linspace(0, 4095, 64).astype(np.uint16).reshape(8, 8)
    m2 = decode_image(make_dicom(tmp_path / "m2.dcm", px, 12))
    m1 = decode_image(make_dicom(tmp_path / "m1.dcm", px, 12, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_dicom_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    # stored 0..1000, slope 2, intercept -1000 -> modality values -1000..1000.
    # The window [0, 1000] (centre 500, width 1000) is in modality units: stored values below
    # 500 are black, 1000 is white. Without the rescale the window would cover stored 0..1000.
    px = np.linspace(0, 1000, 64).astype(np.uint16).reshape(8, 8)
    ds = dict(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=500, WindowWidth=1000)
    out = decode_image(make_dicom(tmp_path / "w.dcm", px, 12, **ds))
    modality = px * 2.0 - 1000
    expected = np.clip((modality - (500 - 0.5)) / 999 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=2e-3)
    assert out[px < 490].max() == 0.0 and out.max() == pytest.approx(1.0)


def test_dicom_signed_with_rescale_only(tmp_path: Path) -> None:
    px = np.linspace(-2048, 2047, 64).astype(np.int16).reshape(8, 8)
    out = decode_image(
        make_dicom(tmp_path / "s.dcm", px, 12, signed=True, RescaleSlope=1, RescaleIntercept=0)
    )
    np.testing.assert_allclose(out, (px + 2048) / 4095.0, atol=1e-6)


def test_dicom_voi_lut_sequence(tmp_path: Path) -> None:
    px = np.arange(64, dtype=np.uint16).reshape(8, 8)
    item = Dataset()
    item.LUTDescriptor = [64, 0, 8]
    lut = np.array([255 - v * 4 for v in range(64)], np.uint16)  # inverting: proves it is used
    item.LUTData = lut.tobytes()
    seq_ds = dict(VOILUTSequence=[item])
    path = make_dicom(tmp_path / "lut.dcm", px, 8, **seq_ds)
    path_plain = make_dicom(tmp_path / "plain.dcm", px.astype(np.uint8), 8)
    out = decode_image(path)
    np.testing.assert_allclose(out * 255, 255 - px * 4.0, atol=1e-3)
    assert np.corrcoef(out.ravel(), decode_image(path_plain).ravel())[0, 1] < -0.99


@pytest.mark.data
def test_real_monochrome1_pair_decodes_to_inverse_images(fixtures_root: Path) -> None:
    d = fixtures_root / "xrv-tests"
    m2_path = d / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    m1_path = d / "Fake_MONOHR1.dcm"
    assert pydicom.dcmread(m1_path).PhotometricInterpretation == "MONOCHROME1"
    assert pydicom.dcmread(m2_path).PhotometricInterpretation == "MONOCHROME2"
    m2, m1 = decode_image(m2_path), decode_image(m1_path)
    assert m2.shape == m1.shape == (1024, 1024)
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)  # same stored pixels, inverted
    assert np.corrcoef(m1.ravel(), m2.ravel())[0, 1] < -0.999


@pytest.mark.data
def test_real_fixtures_decode(fixtures_root: Path, shared_data: Path) -> None:
    nih = decode_image(fixtures_root / "nih-original-1024" / "00000075_000.png")
    assert nih.shape == (1024, 1024) and 0.0 <= nih.min() < 0.2 and nih.max() > 0.8
    tb = fixtures_root / "tbx11k-original-512" / "tb0005.png"
    assert Image.open(tb).mode == "RGB"
    np.testing.assert_array_equal(decode_native(tb), np.asarray(Image.open(tb))[..., 0])
    jpg = decode_image(fixtures_root / "xrv-tests" / "16747_3_1.jpg")
    assert jpg.shape == (885, 1036)
    ieee = shared_data / "ieee8023-covid-chestxray" / "images"
    rgba16 = ieee / "23E99E2E-447C-46E5-8EB2-D35D12473C39.png"  # 16-bit RGBA PNG original
    assert rgba16.read_bytes()[24:26] == bytes([16, 6])  # PNG IHDR: bit depth 16, RGBA
    out = decode_image(rgba16)
    assert out.shape == (1552, 1726) and out.max() == pytest.approx(1.0)
    disguised = ieee / "000001-12.jpg"  # an RGBA PNG named .jpg: content decides, not suffix
    assert decode_image(disguised).shape == (361, 373)


# ----------------------------------------------------------------------------- rejections


def test_rejection_reasons(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)  # incompressible
    Image.fromarray(a).save(tmp_path / "ok.png")
    Image.fromarray(a).save(tmp_path / "ok.jpg")
    cases = {
        "zero-byte file": tmp_path / "empty.png",
        "not an image": tmp_path / "notes.png",
        "truncated image": tmp_path / "cut.png",
        "missing file": tmp_path / "nope.png",
    }
    cases["zero-byte file"].write_bytes(b"")
    cases["not an image"].write_text("this is a text file, not a radiograph\n" * 10)
    png, jpg = (tmp_path / "ok.png").read_bytes(), (tmp_path / "ok.jpg").read_bytes()
    assert len(png) > 3000 and len(jpg) > 2000
    cases["truncated image"].write_bytes(png[: len(png) // 2])
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    for reason, path in cases.items():
        with pytest.raises(DecodeError, match=f"^{reason}"):
            decode_image(path)
    with pytest.raises(DecodeError, match=r"^truncated image"):
        decode_image(tmp_path / "cut.jpg")
    with pytest.raises(DecodeError, match=r"^too large: .*64x64 = 4096 pixels"):
        decode_image(tmp_path / "ok.png", max_pixels=4000)
    with pytest.raises(DecodeError, match=r"^zero-byte file"):
        decode_image(io.BytesIO(b""))


def test_dicom_rejections(tmp_path: Path) -> None:
    px = np.zeros((16, 16), np.uint16)
    good = make_dicom(tmp_path / "g.dcm", px, 12)
    (tmp_path / "cut.dcm").write_bytes(good.read_bytes()[:-100])
    with pytest.raises(DecodeError, match=r"^truncated image"):
        decode_image(tmp_path / "cut.dcm")
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(DecodeError, match=r"^not an image: .*without pixel data"):
        decode_image(tmp_path / "nopix.dcm")
    with pytest.raises(DecodeError, match=r"^too large"):
        decode_image(good, max_pixels=255)


def test_raw_file_is_never_modified(tmp_path: Path) -> None:
    a = ramp()
    Image.fromarray(a).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    prepare(tmp_path / "a.png")
    decode_image(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == before
