"""Seeded byte mutation of real-format files, shared by the fuzz tests.

Each seed picks one base file and one mutation (bit flips, truncation, inserted or overwritten
runs, a duplicated segment), so any failure is reproducible from its seed alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import JPEG2000Lossless, RLELossless

from helpers import make_dicom, synthetic_xray

FUZZ_MAX_PIXELS = 1 << 20
"""Pixel cap for mutated files: a flipped size field must not allocate gigabytes in a test."""


def base_files(tmp: Path) -> dict[str, list[bytes]]:
    """Small valid files per format: ``{"png": [...], "jpeg": [...], "dicom": [...]}``."""
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grey = synthetic_xray("PNEUMONIA", rng, side=48)
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)

    def pil(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt, **kw)
        return buf.getvalue()

    px16 = (grey.astype(np.uint16) * 16).astype(np.uint16)
    png = [pil(grey, "PNG"), pil(rgb, "PNG"), pil(px16, "PNG")]
    jpeg = [pil(grey, "JPEG", quality=90), pil(rgb, "JPEG", quality=80, progressive=True)]
    dicom = []
    plain = make_dicom(tmp / "a.dcm", px16, 12, WindowCenter=2000, WindowWidth=3000,
                       RescaleSlope=1, RescaleIntercept=0)  # fmt: skip
    dicom.append(plain.read_bytes())
    m1 = make_dicom(tmp / "m1.dcm", px16, 12, photometric="MONOCHROME1")
    dicom.append(m1.read_bytes())
    for uid in (RLELossless, JPEG2000Lossless):
        ds = pydicom.dcmread(plain)
        ds.compress(uid)
        buf = io.BytesIO()
        ds.save_as(buf)
        dicom.append(buf.getvalue())
    dicom.append(plain.read_bytes()[132:])  # no preamble
    return {"png": png, "jpeg": jpeg, "dicom": dicom}


def mutate(data: bytes, seed: int) -> bytes:
    """One seeded mutation of ``data``."""
    rng = np.random.default_rng(seed)
    b = bytearray(data)
    kind = int(rng.integers(0, 6))
    n = len(b)
    if kind == 0:  # flip a few random bits anywhere
        for i in rng.integers(0, n, int(rng.integers(1, 12))):
            b[int(i)] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # truncate
        b = b[: int(rng.integers(0, n))]
    elif kind == 2:  # overwrite a run with one byte value
        start, length = int(rng.integers(0, n)), int(rng.integers(1, 64))
        b[start : start + length] = bytes([int(rng.choice([0, 0xFF, 0x7F]))]) * length
    elif kind == 3:  # insert random bytes
        at = int(rng.integers(0, n))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
    elif kind == 4:  # mutate the header region hard (sizes, tags, chunk lengths)
        for i in rng.integers(0, min(n, 400), int(rng.integers(1, 6))):
            b[int(i)] = int(rng.integers(0, 256))
    else:  # duplicate a segment
        start = int(rng.integers(0, n))
        end = min(n, start + int(rng.integers(1, 256)))
        at = int(rng.integers(0, n))
        b[at:at] = b[start:end]
    return bytes(b)


def mutated(bases: dict[str, list[bytes]], fmt: str, seed: int) -> bytes:
    files = bases[fmt]
    return mutate(files[seed % len(files)], seed)
