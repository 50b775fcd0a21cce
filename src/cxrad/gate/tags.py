"""Stage 5, gate: what a file says about itself (DICOM tags, size, colour) and the tag rules.

DICOM tags decide first where they exist: a CT, MR or ultrasound object is rejected without
decoding a pixel, so even files whose transfer syntax cannot be decoded get the right reason.
Tags that are absent or unknown decide nothing; the pixel rules and the classifier then do.

:func:`read_info` is the one place that reads headers; it returns the keys that
``cxrad.image.read_image(...).info`` carries (``format``, ``width``, ``height``, ``mode``,
``colour`` and the DICOM tags), so it can switch to that reader once it lands.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxrad.gate.result import (
    LATERAL_VIEW,
    NOT_CHEST,
    NOT_RADIOGRAPH,
    NOT_XRAY_MODALITY,
    GateResult,
    reject,
)
from cxrad.image.formats import HEAD_BYTES, looks_like_dicom

logger = logging.getLogger(__name__)

DICOM_TAGS = ("Modality", "SOPClassUID", "BodyPartExamined", "ViewPosition")
TAG_KEYS = (*DICOM_TAGS, "PhotometricInterpretation")

XRAY_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})
"""Projection radiography: these pass the modality check."""
NON_XRAY_MODALITIES = frozenset(
    {"CT", "MR", "US", "NM", "PT", "SEG", "RTIMAGE", "RTDOSE", "RTSTRUCT", "RTPLAN", "SR"}
    | {"ES", "XC", "GM", "SM", "OP", "OPT", "OPM", "OCT", "IVUS", "IVOCT", "ECG", "HD", "EPS"}
    | {"BMD", "DOC", "KO", "PR", "REG", "AU"}
)
"""Not X-ray projection images at all (cross-sectional, nuclear, optical, waveforms, documents)."""
FLUORO_MODALITIES = frozenset({"XA", "RF"})
OTHER_REGION_MODALITIES = frozenset({"MG", "IO", "PX", "DG"})
"""X-ray modalities that never show a chest: mammography, intra-oral, panoramic dental."""

# SOP class names (pydicom's UID dictionary) -> code, for files whose Modality is missing.
_SOP_WORDS: tuple[tuple[str, str], ...] = (
    ("CT Image", NOT_XRAY_MODALITY),
    ("MR ", NOT_XRAY_MODALITY),
    ("Ultrasound", NOT_XRAY_MODALITY),
    ("Nuclear Medicine", NOT_XRAY_MODALITY),
    ("Positron Emission", NOT_XRAY_MODALITY),
    ("Segmentation", NOT_XRAY_MODALITY),
    ("Photographic", NOT_XRAY_MODALITY),
    ("Ophthalmic", NOT_XRAY_MODALITY),
    ("Endoscopic", NOT_XRAY_MODALITY),
    ("Microscopic", NOT_XRAY_MODALITY),
    ("Mammography", NOT_CHEST),
    ("Intra-oral", NOT_CHEST),
    ("X-Ray Angiographic", NOT_RADIOGRAPH),
    ("Fluoroscopic", NOT_RADIOGRAPH),
)

CHEST_PARTS = frozenset({"CHEST", "THORAX", "TORAX", "TÓRAX", "LUNG", "LUNGS", "PORT CHEST"})
NOT_CHEST_PARTS = frozenset(
    {"SKULL", "HEAD", "BRAIN", "FACE", "SINUS", "NECK", "CSPINE", "TSPINE", "LSPINE", "SSPINE"}
    | {"SPINE", "COCCYX", "SACRUM", "PELVIS", "HIP", "ABDOMEN", "KUB", "BREAST", "SHOULDER"}
    | {"CLAVICLE", "ARM", "HUMERUS", "ELBOW", "FOREARM", "WRIST", "HAND", "FINGER", "LEG"}
    | {"FEMUR", "THIGH", "KNEE", "TIBIA", "ANKLE", "FOOT", "TOE", "HEEL", "EXTREMITY", "JAW"}
    | {"PANCREAS", "LIVER", "KIDNEY", "WHOLE BODY", "WHOLEBODY", "TMJ", "ORBIT"}
)
"""BodyPartExamined values (upper case) that name a region other than the chest."""
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "L", "R LAT", "L LAT", "LLAT", "RLAT"})


def _looks_like_dicom(path: Path) -> bool:
    """The reader's one DICOM test (preamble or not; the suffix only for unknown bytes)."""
    with open(path, "rb") as f:
        return looks_like_dicom(f.read(HEAD_BYTES), path.name)


def read_info(path: str | Path) -> dict[str, Any]:
    """Header facts about an image file, read without decoding its pixels (PIL/pydicom lazily).

    Returns ``format``, ``width``, ``height``, ``mode``, ``colour`` (the file holds real colour:
    more than a trace of chroma, not grey stored as RGB) and, for DICOM, :data:`TAG_KEYS`
    (None when absent). A file neither can open gives ``format = None``; decoding it later
    raises the real error.
    """
    path = Path(path)
    info: dict[str, Any] = {"format": None, "width": None, "height": None, "mode": None}
    info.update(dict.fromkeys(TAG_KEYS), colour=False)
    try:
        if _looks_like_dicom(path):
            return _dicom_info(path, info)
        with Image.open(path) as im:
            info.update(format=(im.format or "").lower(), width=im.size[0], height=im.size[1])
            info.update(mode=im.mode, colour=colour_fraction(im) > COLOUR_FRACTION)
    except Exception:  # any unreadable file: the decoder reports it with its own reason
        logger.debug("no header for %s", path, exc_info=True)
    return info


def _dicom_info(path: Path, info: dict[str, Any]) -> dict[str, Any]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    for key in TAG_KEYS:
        value = ds.get(key)
        info[key] = None if value in (None, "") else str(value).strip()
    photometric = (info["PhotometricInterpretation"] or "").upper()
    info.update(format="dicom", mode=photometric or None)
    info.update(width=ds.get("Columns"), height=ds.get("Rows"))
    info["colour"] = photometric.startswith(("RGB", "YBR", "PALETTE"))
    return info


COLOUR_CHROMA = 32
"""A pixel is coloured when max(R, G, B) - min(R, G, B) exceeds this (of 255)."""
COLOUR_FRACTION = 0.05
"""An image is colour when more than this share of its pixels is coloured: a red arrow or a
coloured label on a radiograph figure stays under it, a photo or a colour map does not."""


def colour_fraction(im: Image.Image) -> float:
    """Share of coloured pixels, on a 128 px thumbnail (0.0 for grey modes)."""
    if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return 0.0
    small = im.convert("RGB")
    small.thumbnail((128, 128))
    a = np.asarray(small, dtype=np.int16)
    chroma = a.max(axis=-1) - a.min(axis=-1)
    return float((chroma > COLOUR_CHROMA).mean())


def check_tags(info: dict[str, Any]) -> GateResult | None:
    """A rejection decided by DICOM tags alone, or None when the tags do not decide."""
    modality = (info.get("Modality") or "").upper()
    if modality in NON_XRAY_MODALITIES:
        return reject(NOT_XRAY_MODALITY, "dicom_tags", f"DICOM Modality is {modality}")
    if modality in FLUORO_MODALITIES:
        return reject(NOT_RADIOGRAPH, "dicom_tags", f"DICOM Modality {modality} is fluoroscopy")
    if modality in OTHER_REGION_MODALITIES:
        return reject(NOT_CHEST, "dicom_tags", f"DICOM Modality {modality} never shows a chest")
    if not modality and info.get("SOPClassUID"):
        verdict = _check_sop_class(str(info["SOPClassUID"]))
        if verdict is not None:
            return verdict
    part = (info.get("BodyPartExamined") or "").upper().replace("_", " ")
    if part in NOT_CHEST_PARTS:
        return reject(NOT_CHEST, "dicom_tags", f"DICOM BodyPartExamined is {part}")
    view = (info.get("ViewPosition") or "").upper()
    if view in LATERAL_VIEWS:
        return reject(LATERAL_VIEW, "dicom_tags", f"DICOM ViewPosition is {view}")
    return None


def _check_sop_class(uid: str) -> GateResult | None:
    from pydicom.uid import UID

    name = UID(uid).name
    for word, code in _SOP_WORDS:
        if word in name:
            return reject(code, "dicom_tags", f"DICOM SOP class is {name}")
    return None
