"""cxrad.image on DICOMs built here: the pydicom-data fixture cases, runnable without the data.

test_image_dicom_fixtures.py runs the same cases on the real files in ../shared/data; these
build each one with pydicom (every syntax the venv can encode), so the logic they check (the
syntax is decoded, MONOCHROME1 is inverted, the first frame is used, the unsupported ones say
so) still runs where the data is absent. Images are at most 48 px (JPEG 2000 needs 32).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite

from cxrad.errors import ImageReadError
from cxrad.image import read_image
from helpers import make_dicom, synthetic_xray

LOSSLESS = [
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.RLELossless,
    uid.JPEG2000Lossless,
]


def stored(seed: int = 0, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    """Random 12-bit stored values: any decoding slip shows up in the pixels."""
    return np.random.default_rng(seed).integers(0, 4096, shape, dtype=np.uint16)


def reencode(plain: Path, ts: uid.UID, **kw: object) -> bytes:
    """The bytes of ``plain`` (explicit VR little endian) rewritten in transfer syntax ``ts``."""
    ds = pydicom.dcmread(plain)
    buf = io.BytesIO()
    if ts.is_compressed:
        ds.compress(ts, **kw)
        ds.save_as(buf)
    elif ts == uid.ExplicitVRBigEndian:  # pydicom swaps pixel bytes only when told to
        ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = ts
        dcmwrite(buf, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    else:
        ds.file_meta.TransferSyntaxUID = ts
        ds.save_as(buf)
    data = buf.getvalue()
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == ts
    return data


@pytest.mark.parametrize("ts", LOSSLESS, ids=lambda ts: ts.keyword)
def test_lossless_syntaxes_decode_to_the_stored_values(tmp_path: Path, ts: uid.UID) -> None:
    px = stored()
    path = tmp_path / "x.dcm"
    path.write_bytes(reencode(make_dicom(tmp_path / "plain.dcm", px, 12), ts))
    r = read_image(path)
    assert r.info["format"] == "dicom" and r.pixels.dtype == np.float32
    np.testing.assert_allclose(r.pixels, px / 4095.0, atol=1e-6)


def test_monochrome1_jpeg2000_lossy_chest_is_inverted(tmp_path: Path) -> None:
    film = synthetic_xray("NORMAL", np.random.default_rng(0), side=48).astype(np.uint16) * 16
    raw = 4095 - film  # MONOCHROME1 stores the lungs (dark on the film) as high values
    tags = {"Modality": "CR", "BodyPartExamined": "CHEST"}
    plain = make_dicom(tmp_path / "m1.dcm", raw, 12, photometric="MONOCHROME1", **tags)
    path = tmp_path / "m1_j2ki.dcm"
    path.write_bytes(reencode(plain, uid.JPEG2000, j2k_cr=[8]))
    r = read_image(path)
    assert r.info["Modality"] == "CR" and r.info["BodyPartExamined"] == "CHEST"
    assert r.info["PhotometricInterpretation"] == "MONOCHROME1" and r.pixels.shape == (48, 48)
    assert np.corrcoef(raw.ravel(), r.pixels.ravel())[0, 1] < -0.9
    assert np.abs(r.pixels - film / 4095.0).mean() < 0.05  # lossy: the noise goes, not the film
    lung, middle = r.pixels[16:32, 10:16].mean(), r.pixels[16:32, 22:26].mean()
    assert lung < middle


@pytest.mark.parametrize(
    "ts", [uid.ExplicitVRLittleEndian, uid.RLELossless], ids=lambda t: t.keyword
)
def test_multi_frame_reads_the_first_frame(tmp_path: Path, ts: uid.UID) -> None:
    first, second = stored(1), stored(2)
    frames = np.stack([first, second])
    plain = make_dicom(tmp_path / "2f.dcm", frames[0], 12)
    ds = pydicom.dcmread(plain)
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    ds.save_as(plain)
    if ts != uid.ExplicitVRLittleEndian:
        plain.write_bytes(reencode(plain, ts))
    assert pydicom.dcmread(plain).pixel_array.shape == (2, 40, 48)
    np.testing.assert_allclose(read_image(plain).pixels, first / 4095.0, atol=1e-6)


def encapsulated(tmp_path: Path, ts: str, bits: int = 16) -> Path:
    """A DICOM whose one frame of pixel data is in ``ts`` (the bytes are not a valid frame).

    pydicom refuses to write a syntax it does not know, so the file is written as JPEG 2000
    and its 22-byte TransferSyntaxUID value is then overwritten in place.
    """
    ds = pydicom.dcmread(make_dicom(tmp_path / "base.dcm", np.zeros((8, 8), np.uint16), 12))
    ds.file_meta.TransferSyntaxUID = uid.JPEG2000Lossless
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "enc.dcm"
    ds.save_as(path)
    old, new = str(uid.JPEG2000Lossless).encode(), ts.encode().ljust(22, b"\x00")
    assert len(new) == len(old) == 22
    path.write_bytes(path.read_bytes().replace(old, new, 1))
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ts
    return path


def test_unsupported_syntax_names_itself_and_the_fix(tmp_path: Path) -> None:
    deflated_frames = "1.2.840.10008.1.2.8.1"  # Deflated Image Frame Compression (2024)
    with pytest.raises(ImageReadError) as e:
        read_image(encapsulated(tmp_path, deflated_frames))
    assert e.value.code == "unsupported_transfer_syntax"
    assert deflated_frames in str(e.value) and "convert" in str(e.value)


def test_one_bit_compressed_data_is_unsupported_not_corrupt(tmp_path: Path) -> None:
    """Like liver_rle.dcm (a 1-bit SEG in RLE): no installed decoder handles it, it says so."""
    with pytest.raises(ImageReadError) as e:
        read_image(encapsulated(tmp_path, uid.RLELossless, bits=1))
    assert e.value.code == "unsupported_transfer_syntax"
    assert "RLE Lossless" in str(e.value) and "1-bit" in str(e.value)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in [0, 1] of 8-bit-scale RGB (what the reader makes of a colour file)."""
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


def colour_file(path: Path, px: np.ndarray, tags: dict[str, object]) -> Path:
    """An 8-bit colour DICOM (RGB when ``px`` has 3 channels, else palette indices)."""
    ds = pydicom.dcmread(make_dicom(path, np.zeros(px.shape[:2], np.uint8), 8))
    ds.SamplesPerPixel = 3 if px.ndim == 3 else 1
    for k, v in tags.items():
        setattr(ds, k, v)
        if k.endswith("Descriptor"):
            ds[k].VR = "US"  # 'US or SS' in the dictionary: explicit VR must pick one
    ds.PixelData = px.tobytes()
    ds.save_as(path)
    return path


def test_files_without_preamble_decode_in_colour(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:24, 0:32]
    rgb = np.stack([xx * 8, yy * 10, 255 - xx * 8], -1).astype(np.uint8)
    index = (xx * 8).astype(np.uint8)  # palette index i -> (i, 0, 255 - i), 16-bit entries
    lut = np.arange(256, dtype=np.uint16) * 257
    palette = {
        "PhotometricInterpretation": "PALETTE COLOR",
        **{f"{c}PaletteColorLookupTableDescriptor": [256, 0, 16] for c in ("Red", "Green", "Blue")},
        "RedPaletteColorLookupTableData": lut.tobytes(),
        "GreenPaletteColorLookupTableData": np.zeros(256, np.uint16).tobytes(),
        "BluePaletteColorLookupTableData": lut[::-1].tobytes(),
    }
    cases = {
        "rgb": (rgb, {"PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}, rgb),
        "pal": (index, palette, np.stack([index, 0 * index, 255 - index], -1)),
    }
    for name, (px, tags, want_rgb) in cases.items():
        path = colour_file(tmp_path / f"{name}.dcm", px, tags)
        bare = tmp_path / f"{name}_bare"
        bare.write_bytes(path.read_bytes()[132:])  # no preamble, no DICM
        assert bare.read_bytes()[128:132] != b"DICM"
        r = read_image(bare)
        assert r.info["colour"] is True and r.pixels.std() > 0.05, name
        np.testing.assert_allclose(r.pixels, luma(want_rgb.astype(np.float64)), atol=2e-3)
