"""Stage 4, preprocess: ``decode_image``, a thin wrapper over :func:`cxrad.image.read_image`.

Kept so existing callers work; new code reads with :func:`cxrad.image.read_image`, which also
returns the file's format, size, colour and DICOM tags. All decoding rules live in
:mod:`cxrad.image`.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from cxrad.image import (
    DICOM_SUFFIXES,
    MAX_PIXELS,
    bits_for,
    grey_from_rgb,
    pil_to_array,
    read_image,
    to_float,
)

__all__ = [
    "DICOM_SUFFIXES",
    "MAX_PIXELS",
    "bits_for",
    "decode_bytes",
    "decode_image",
    "decode_native",
    "grey_from_rgb",
    "pil_to_array",
    "to_float",
]

Source = str | Path | BinaryIO


def decode_image(path: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image or DICOM file into a 2-D float32 array in [0, 1], higher = brighter.

    Raises:
        ImageReadError: (a ``DecodeError``) with a ``code`` and a reason: "zero-byte file",
            "truncated image: ...", "not an image: ...", "too large: ...", "missing file: ...".

    Example:
        >>> img = decode_image("chest.dcm")  # doctest: +SKIP
        >>> img.dtype, img.ndim
        (dtype('float32'), 2)
    """
    return read_image(path, max_pixels).pixels


def decode_native(source: Source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Like :func:`decode_image`, but 8-bit sources stay ``uint8`` (value / 255)."""
    return read_image(source, max_pixels, native=True).pixels


def decode_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`decode_native` on bytes already in memory (the cache hashes and decodes one read)."""
    return read_image(data, max_pixels, native=True, name=name).pixels
