"""Image reading (below every stage): ``read_image``, the one way any stage turns a file into pixels.

Ingest's hashes, split's fine hash, preprocess's cache, predict, segment and the gate all call
:func:`read_image`, so they agree on what a file holds. Every failure, whatever raised it
(Pillow, pydicom, a plugin, the OS), leaves as one :class:`~cxrad.errors.ImageReadError` with a
stable ``code`` and a message a person can act on: a stage records it and goes on.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrad.errors import ImageReadError
from cxrad.image.dicom import TAGS, read_dicom
from cxrad.image.formats import HEAD_BYTES, MAX_PIXELS, looks_like_dicom
from cxrad.image.pil import pil_read, to_float

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str] | bytes | BinaryIO


@dataclass(frozen=True)
class ImageRead:
    """One decoded image.

    Attributes:
        pixels: 2-D, higher = brighter; float32 in [0, 1] (or ``uint8`` = value / 255 when read
            with ``native=True``).
        info: ``format`` ("png", "jpeg", "dicom", ...), ``width``, ``height`` (of the file),
            ``mode`` (PIL mode or DICOM photometric), ``colour`` (the file held real colour),
            and for every file the DICOM tags ``Modality``, ``BodyPartExamined``,
            ``ViewPosition``, ``PhotometricInterpretation``, ``SOPClassUID`` (None when absent).
            DICOM headers that were ignored as broken are listed in ``notes``.
    """

    pixels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def read_image(
    source: Source,
    max_pixels: int = MAX_PIXELS,
    *,
    native: bool = False,
    draft: int | None = None,
    name: str | None = None,
) -> ImageRead:
    """Read any supported image or DICOM file into one grey channel.

    Args:
        source: a path, the file's bytes, or an open binary file.
        max_pixels: reject images (one frame) with more pixels (decompression-bomb guard).
        native: keep 8-bit sources as ``uint8`` (resizing is faster and exact on them).
        draft: JPEG only: decode at a reduced scale with sides of at least ``draft`` (hashes).
        name: the name used in messages (default: the path, or the file object's ``name``).

    Raises:
        ImageReadError: for any failure, with ``code`` one of ``missing``, ``empty``,
            ``not_an_image``, ``truncated``, ``too_large``, ``unsupported_transfer_syntax``,
            ``undecodable``, ``unreadable``; the message starts with the reason in words
            ("missing file", "zero-byte file", "not an image", "truncated image", ...).

    Example:
        >>> r = read_image("chest.dcm")  # doctest: +SKIP
        >>> r.pixels.dtype, r.info["format"], r.info["Modality"]
        (dtype('float32'), 'dicom', 'CR')
    """
    label = name or _name(source)
    try:
        return _read(source, label, max_pixels, native, draft)
    except ImageReadError:
        raise
    except MemoryError as e:
        raise ImageReadError("too_large", f"too large: {label}: out of memory decoding it") from e
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # the boundary: nothing a decoder raises escapes raw (the Rust
        # plugins raise pyo3's PanicException, a BaseException, on some corrupt data)
        logger.debug("unexpected failure reading %s", label, exc_info=True)
        detail = " ".join(str(e).split())[:200]
        raise ImageReadError(
            "unreadable", f"unreadable: {label}: {type(e).__name__}: {detail}"
        ) from e


def _name(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, bytes | bytearray):
        return "<bytes>"
    return str(getattr(source, "name", "<bytes>"))


def _read(source: Source, name: str, max_pixels: int, native: bool, draft: int | None) -> ImageRead:
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(bytes(source))
    head = _head(source, name)
    if looks_like_dicom(head, name):
        arr, info = read_dicom(source, max_pixels, name)
    else:
        arr, info = _read_pil(source, name, max_pixels, draft)
    if arr.ndim != 2 or arr.size == 0:
        raise ImageReadError("undecodable", f"corrupt pixel data: {name}: shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return ImageRead(arr if native else to_float(arr), info)


def _head(source: Any, name: str) -> bytes:
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        if not p.exists():
            raise ImageReadError("missing", f"missing file: {name} does not exist")
        if not p.is_file():
            raise ImageReadError("missing", f"missing file: {name} is not a regular file")
        try:
            if p.stat().st_size == 0:
                raise ImageReadError("empty", f"zero-byte file: {name}")
            with open(p, "rb") as f:
                return f.read(HEAD_BYTES)
        except PermissionError as e:
            raise ImageReadError(
                "unreadable", f"unreadable: {name}: permission denied; check the file's mode"
            ) from e
    pos = source.tell()
    head = source.read(HEAD_BYTES)
    source.seek(pos)
    if not head:
        raise ImageReadError("empty", f"zero-byte file: {name}")
    return head


def _read_pil(
    source: Any, name: str, max_pixels: int, draft: int | None
) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError as e:
        raise ImageReadError("too_large", f"too large: {name}: {e}") from e
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError, EOFError) as e:
        raise ImageReadError("not_an_image", f"not an image: {name}: {e}") from e
    with im:
        info: dict[str, Any] = {
            "format": (im.format or "unknown").lower(),
            "width": int(im.size[0]),
            "height": int(im.size[1]),
            "mode": im.mode,
            **dict.fromkeys(TAGS),
        }
        arr, colour = pil_read(im, max_pixels, name, draft)
    info["colour"] = colour
    return arr, info
