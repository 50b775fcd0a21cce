"""Image reading (below every stage): the one suffix list, DICOM detection, pixel cap and sha1.

Every stage that lists, hashes or decodes image files takes these from here, so ingest,
split, preprocess and predict agree on what is an image and what is a DICOM.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom", ".dic"}
)
"""File name endings (case-insensitive) listed as images when walking a folder."""

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic")

MAX_PIXELS = 16384 * 16384
"""Decompression-bomb guard: an image (one frame) with more pixels is rejected as ``too_large``."""

HEAD_BYTES = 132
"""Bytes read to sniff a file's format (the DICOM preamble and its ``DICM`` marker)."""

_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8", b"BM", b"II*\x00", b"MM\x00*", b"GIF8", b"RIFF")


def has_image_suffix(name: str | os.PathLike[str]) -> bool:
    """True when the name ends in one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def looks_like_dicom(head: bytes, name: str = "") -> bool:
    """True for a DICOM file, with or without its 128-byte preamble.

    Content decides: the ``DICM`` marker at byte 128 (Part 10), or, for files written without
    the preamble, a first data element in group 0002 or 0008 (explicit or implicit VR, either
    byte order). A DICOM suffix counts only when the bytes are not another known image format.

    Args:
        head: the first :data:`HEAD_BYTES` bytes of the file.
        name: the file name, for the suffix fallback.
    """
    if head[128:132] == b"DICM" or head[:4] == b"DICM":
        return True
    if len(head) >= 8 and _bare_dataset(head):
        return True
    if head.startswith(_IMAGE_MAGIC):
        return False
    return str(name).lower().endswith(DICOM_SUFFIXES)


def _bare_dataset(head: bytes) -> bool:
    """A dataset without preamble: (0002|0008, xxxx) then an explicit VR or a sane length."""
    little = int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")
    big = int.from_bytes(head[0:2], "big"), int.from_bytes(head[2:4], "big")
    for group, element in (little, big):
        if group not in (0x0002, 0x0008) or element > 0x0100:
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.isupper():
            return True
        length = int.from_bytes(head[4:8], "little")
        if 0 < length < 1024:
            return True
    return False


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when the file's first bytes are a DICOM (see :func:`looks_like_dicom`); reads 132 bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return False
    return bool(head) and looks_like_dicom(head, "")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """An image suffix, or any other name whose first bytes are a DICOM.

    Scanners and PACS exports name DICOM files by UID (``1.2.840.113619.2.55.3``) or with no
    suffix at all, so a folder walk that went by suffix alone would pass them over unseen.
    """
    return has_image_suffix(os.fspath(path)) or is_dicom_file(path)


def sha1_bytes(data: bytes) -> str:
    """Content sha1 (hex) of bytes already read: the manifest's ``sha1``."""
    return hashlib.sha1(data).hexdigest()


def file_sha1(path: str | os.PathLike[str]) -> str:
    """Content sha1 (hex) of a file, read in 1 MiB blocks: the manifest's ``sha1``."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
