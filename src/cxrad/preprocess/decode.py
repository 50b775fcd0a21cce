"""Stage 4, preprocess: decode any real chest X-ray file into one grey channel in [0, 1].

Every format ends in the same convention: 2-D, single channel, higher = brighter (DICOM's
MONOCHROME2). Decisions, so that the cache and the predictor agree on them:

- Colour of grey content (R == G == B everywhere) keeps one channel, so it converts without any
  shift; real colour becomes ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B). Colour JPEGs are
  decoded to their luma (Y) plane directly, which is the same ITU-R 601 luma.
- Alpha is composited onto black (``grey * alpha``): transparent areas of figure crops become
  background, the same black that letterbox padding uses. Fully opaque alpha changes nothing.
- 16-bit greyscale scales by its significant bits: the PNG ``sBIT`` chunk when present, else the
  smallest of 10, 12, 14 or 16 bits that holds the image's maximum (12-bit detectors often store
  0..4095 in 16-bit PNGs, which a fixed ``/ 65535`` would turn almost black).
- DICOM: modality LUT (RescaleSlope/Intercept), then the VOI LUT or window when present, then
  scaling by the output range that BitsStored implies; MONOCHROME1 is inverted last.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrad.errors import DecodeError

logger = logging.getLogger(__name__)

MAX_PIXELS = 16384 * 16384
"""Default decompression-bomb guard: images with more pixels are rejected as "too large"."""

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

Source = str | Path | BinaryIO


def decode_image(path: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image or DICOM file into a 2-D float32 array in [0, 1], higher = brighter.

    Args:
        path: a file path, or an open binary file (e.g. ``io.BytesIO``).
        max_pixels: reject images with more pixels than this (decompression-bomb guard).

    Raises:
        DecodeError: with a reason: "zero-byte file", "truncated image: ...",
            "not an image: ...", "too large: ...", "missing file: ...".

    Example:
        >>> img = decode_image("chest.dcm")  # doctest: +SKIP
        >>> img.dtype, img.ndim
        (dtype('float32'), 2)
    """
    return to_float(decode_native(path, max_pixels=max_pixels))


def to_float(arr: np.ndarray) -> np.ndarray:
    """``uint8`` (value / 255) or float arrays to float32 in [0, 1]."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    return np.asarray(arr, dtype=np.float32)


def decode_native(source: Source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode like :func:`decode_image`, but keep 8-bit sources as ``uint8`` (value / 255).

    The resize step is faster and exact on ``uint8``; every other source comes back as float32
    in [0, 1]. :func:`cxrad.preprocess.prepare` uses this so that 8-bit files never round-trip
    through float.
    """
    name = str(source) if isinstance(source, str | Path) else getattr(source, "name", "<bytes>")
    data = _read_head(source, name)
    if _looks_like_dicom(data, name):
        return decode_dicom(source, max_pixels=max_pixels, name=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError as e:
        raise DecodeError(f"too large: {name}: {e}") from e
    except (UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DecodeError(f"not an image: {name}: {e}") from e
    with im:
        return pil_to_array(im, max_pixels=max_pixels, name=name)


def _read_head(source: Source, name: str) -> bytes:
    if isinstance(source, str | Path):
        p = Path(source)
        if not p.is_file():
            raise DecodeError(f"missing file: {name} does not exist or is not a file")
        if p.stat().st_size == 0:
            raise DecodeError(f"zero-byte file: {name}")
        with open(p, "rb") as f:
            return f.read(132)
    pos = source.tell()
    head = source.read(132)
    source.seek(pos)
    if not head:
        raise DecodeError(f"zero-byte file: {name}")
    return head


def _looks_like_dicom(head: bytes, name: str) -> bool:
    return head[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)


def pil_to_array(
    im: Image.Image, max_pixels: int = MAX_PIXELS, name: str = "<image>"
) -> np.ndarray:
    """A PIL image to ``uint8`` (8-bit grey of grey content) or float32 in [0, 1].

    Raises:
        DecodeError: "too large" before any pixel is decoded, "truncated image" when the
            pixel data ends early or is corrupt.
    """
    w, h = im.size
    if w * h > max_pixels:
        raise DecodeError(
            f"too large: {name} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}; "
            "raise max_pixels if this is a real radiograph"
        )
    if im.format == "JPEG" and im.mode == "RGB" and im.tile:
        # Decode only the JPEG's luma plane: it *is* ITU-R 601 luma, with no colour
        # conversion (faster, and grey content comes out unshifted).
        im.draft("L", im.size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Image.DecompressionBombError as e:
        raise DecodeError(f"too large: {name}: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(f"truncated image: {name}: {e}") from e
    return _convert(im)


def _convert(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode.startswith("I;16"):
        a = np.asarray(im).astype(np.uint16)
        return _scale_unsigned(a, _sbit(im))
    if mode == "I":
        a = np.asarray(im)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            return _scale_unsigned(a.astype(np.uint16), _sbit(im))
        return _minmax(a)
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if a.size and (a.min() < 0 or a.max() > 1):
            return _minmax(a)
        return a
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return _convert(im.convert("RGBA" if has_alpha else "RGB"))
    if mode == "LA":
        a = np.asarray(im)
        return _composite(a[..., 0], a[..., 1])
    if mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    a = np.asarray(im)
    grey = grey_from_rgb(a[..., :3])
    if a.shape[-1] == 4:
        return _composite(grey, a[..., 3])
    return grey


def grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """One channel when R == G == B (no shift at all), else ITU-R 601 luma as float32 in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r)
    luma = 0.299 * r.astype(np.float32) + 0.587 * g + 0.114 * b
    return (luma / np.float32(255.0)).astype(np.float32)


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    if bool((alpha == 255).all()):
        return grey
    return (to_float(grey) * (alpha.astype(np.float32) / np.float32(255.0))).astype(np.float32)


def _sbit(im: Image.Image) -> int | None:
    raw = im.info.get("sbit") or getattr(im, "_sbit", None)
    if isinstance(raw, bytes) and raw:
        return int(raw[0])
    if isinstance(raw, int):
        return raw
    return None


def bits_for(max_value: int) -> int:
    """The smallest of 10, 12, 14 or 16 bits that can hold ``max_value`` (8 if it fits a byte)."""
    for bits in (8, 10, 12, 14, 16):
        if max_value <= 2**bits - 1:
            return bits
    return 16


def _scale_unsigned(a: np.ndarray, bits: int | None) -> np.ndarray:
    if bits is None:
        bits = bits_for(int(a.max()) if a.size else 0)
    top = np.float32(2**bits - 1)
    return np.clip(a.astype(np.float32) / top, 0.0, 1.0)


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros_like(a)
    return (a - lo) / np.float32(hi - lo)


def decode_dicom(source: Source, max_pixels: int = MAX_PIXELS, name: str = "<dicom>") -> np.ndarray:
    """Decode a DICOM: modality LUT, VOI LUT or window, BitsStored range, MONOCHROME1 inverted."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(source, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as e:
        raise DecodeError(f"not an image: {name}: unreadable DICOM ({e})") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise DecodeError(f"not an image: {name}: DICOM without pixel data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols > max_pixels:
        raise DecodeError(
            f"too large: {name} is {cols}x{rows} = {rows * cols} pixels, over the limit of "
            f"{max_pixels}; raise max_pixels if this is a real radiograph"
        )
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for short or undecodable pixel data
        raise DecodeError(f"truncated image: {name}: DICOM pixel data ({e})") from e
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour DICOM (pydicom converts YBR to RGB)
        return _convert(Image.fromarray(np.asarray(arr, dtype=np.uint8), "RGB"))
    out = apply_modality_lut(arr, ds)
    lo, hi = _dicom_range(ds)
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    has_lut = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0
    if has_lut or has_window:
        out = apply_voi_lut(out, ds, prefer_lut=True)
        if has_lut:
            desc = ds.VOILUTSequence[0].get("LUTDescriptor")
            bits = int(desc[2]) if desc else bits_for(int(np.max(out)))
            lo, hi = 0.0, float(max(2**bits - 1, np.max(out)))
    out = out.astype(np.float32)
    if hi == lo:
        return np.zeros(out.shape, np.float32)
    out = np.clip((out - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def _dicom_range(ds: object) -> tuple[float, float]:
    """The output range of the modality LUT implied by BitsStored (as pydicom's windowing uses)."""
    get = ds.get  # type: ignore[attr-defined]
    bits = int(get("BitsStored", get("BitsAllocated", 8)) or 8)
    if get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)  # type: ignore[attr-defined]
        return lo, hi
    if int(get("PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = get("RescaleSlope"), get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def decode_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`decode_native` on bytes already in memory (the cache hashes and decodes one read)."""
    if not data:
        raise DecodeError(f"zero-byte file: {name}")
    buf = io.BytesIO(data)
    buf.name = name  # type: ignore[attr-defined]
    return decode_native(buf, max_pixels=max_pixels)
