"""Image reading, at the bottom of the import graph: any image or DICOM file to grey pixels.

Imports nothing from cxrad but :mod:`cxrad.errors`, so every stage may use it. One suffix list
(:data:`IMAGE_SUFFIXES`), one DICOM detection (:func:`looks_like_dicom`, preamble or not), one
pixel cap (:data:`MAX_PIXELS`), one sha1 (:func:`file_sha1`) and one reader (:func:`read_image`).
"""

from __future__ import annotations

from cxrad.image.dicom import TAGS as DICOM_TAGS
from cxrad.image.formats import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    file_sha1,
    has_image_suffix,
    is_dicom_file,
    is_image_file,
    looks_like_dicom,
    sha1_bytes,
)
from cxrad.image.pil import bits_for, grey_from_rgb, pil_read, pil_to_array, to_float
from cxrad.image.reader import ImageRead, read_image
from cxrad.image.walk import Walk, walk_files

__all__ = [
    "DICOM_SUFFIXES",
    "DICOM_TAGS",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "ImageRead",
    "Walk",
    "bits_for",
    "file_sha1",
    "grey_from_rgb",
    "has_image_suffix",
    "is_dicom_file",
    "is_image_file",
    "looks_like_dicom",
    "pil_read",
    "pil_to_array",
    "read_image",
    "sha1_bytes",
    "to_float",
    "walk_files",
]
