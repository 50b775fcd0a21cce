"""Image reading (below every stage): PNG, JPEG, BMP, TIFF ... through Pillow, to one grey channel.

Decisions, so that the cache and the predictor agree on them:

- Colour of grey content (R == G == B everywhere) keeps one channel, so it converts without any
  shift; real colour becomes ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B). Colour JPEGs are
  decoded to their luma (Y) plane directly, which is the same ITU-R 601 luma.
- Alpha is composited onto black (``grey * alpha``): transparent areas of figure crops become
  background, the same black that letterbox padding uses. Fully opaque alpha changes nothing.
- 16-bit greyscale scales by its significant bits: the PNG ``sBIT`` chunk when present, else the
  smallest of 10, 12, 14 or 16 bits that holds the image's maximum (12-bit detectors often store
  0..4095 in 16-bit PNGs, which a fixed ``/ 65535`` would turn almost black).
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
from PIL import Image

from cxrad.errors import ImageReadError
from cxrad.image.formats import MAX_PIXELS


def check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    """Raise ``too_large`` before any pixel is decoded."""
    if width * height > max_pixels:
        raise ImageReadError(
            "too_large",
            f"too large: {name} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; raise max_pixels if this is a real radiograph",
        )


def pil_to_array(
    im: Image.Image, max_pixels: int = MAX_PIXELS, name: str = "<image>", draft: int | None = None
) -> np.ndarray:
    """A PIL image to ``uint8`` (8-bit grey of grey content) or float32 in [0, 1].

    Args:
        im: an opened (not necessarily loaded) image.
        max_pixels: the pixel cap.
        name: for messages.
        draft: JPEG only: decode at a reduced scale of at least this side (hashing needs no more).

    Raises:
        ImageReadError: ``too_large`` before any pixel is decoded, ``truncated`` when the pixel
            data ends early or is corrupt.
    """
    return pil_read(im, max_pixels, name, draft)[0]


def pil_read(
    im: Image.Image, max_pixels: int = MAX_PIXELS, name: str = "<image>", draft: int | None = None
) -> tuple[np.ndarray, bool]:
    """:func:`pil_to_array` plus whether the file held real colour (not grey stored as RGB)."""
    w, h = im.size
    check_size(w, h, max_pixels, name)
    colour_mode = im.mode not in ("L", "1", "I", "F", "LA") and not im.mode.startswith("I;")
    if im.format == "JPEG" and im.mode == "RGB" and im.tile:
        # Decode only the JPEG's luma plane: it *is* ITU-R 601 luma, with no colour
        # conversion (faster, and grey content comes out unshifted). Chroma is then unknown,
        # so colour is judged from the mode only.
        im.draft("L", (draft, draft) if draft else im.size)
    elif draft and im.format == "JPEG":
        im.draft(im.mode, (draft, draft))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Image.DecompressionBombError as e:
        raise ImageReadError("too_large", f"too large: {name}: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        raise ImageReadError("truncated", f"truncated image: {name}: {e}") from e
    arr, real_colour = _convert(im)
    return arr, colour_mode and real_colour


def _convert(im: Image.Image) -> tuple[np.ndarray, bool]:
    mode = im.mode
    if mode == "L":
        return np.asarray(im), False
    if mode == "1":
        return np.asarray(im.convert("L")), False
    if mode.startswith("I;16"):
        a = np.asarray(im).astype(np.uint16)
        return _scale_unsigned(a, _sbit(im)), False
    if mode == "I":
        a = np.asarray(im)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            return _scale_unsigned(a.astype(np.uint16), _sbit(im)), False
        return minmax(a), False
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if a.size and (a.min() < 0 or a.max() > 1):
            return minmax(a), False
        return a, False
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return _convert(im.convert("RGBA" if has_alpha else "RGB"))
    if mode == "LA":
        a = np.asarray(im)
        return _composite(a[..., 0], a[..., 1]), False
    if mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    a = np.asarray(im)
    grey = grey_from_rgb(a[..., :3])
    colour = grey.dtype != np.uint8
    if a.shape[-1] == 4:
        return _composite(grey, a[..., 3]), colour
    return grey, colour


def grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """One channel when R == G == B (no shift at all), else ITU-R 601 luma as float32 in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r)
    luma = 0.299 * r.astype(np.float32) + 0.587 * g + 0.114 * b
    return (luma / np.float32(255.0)).astype(np.float32)


def to_float(arr: np.ndarray) -> np.ndarray:
    """``uint8`` (value / 255) or float arrays to float32 in [0, 1]."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    return np.asarray(arr, dtype=np.float32)


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
    if bits is None or not 1 <= bits <= 16:
        bits = bits_for(int(a.max()) if a.size else 0)
    top = np.float32(2**bits - 1)
    return np.clip(a.astype(np.float32) / top, 0.0, 1.0)


def minmax(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the array's own finite minimum and maximum (zeros when flat)."""
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros_like(a)
    return (a - lo) / np.float32(hi - lo)
