"""Stage 2, manifest: content hashes (sha1 of the bytes, perceptual hash of the picture).

``sha1`` finds byte-identical copies; ``phash`` (imagehash's DCT hash of the greyscale image)
survives resizing and re-encoding, so the split stage can group near duplicates across
sources. Images are hashed one at a time per worker process, never all held in memory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from cxrad.manifest.schema import STATUS_OK
from cxrad.parallel import map_chunks
from cxrad.progress import Progress

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 200_000_000
"""Decoding refuses images with more pixels than this (a decompression-bomb guard, checked
before decoding; PIL's own global guard is left as it is)."""
CHUNK = 64
"""Images per task sent to a worker: large enough to amortise IPC, small for smooth progress."""
DICOM_SUFFIXES = (".dcm", ".dicom")

HashResult = tuple[str | None, str | None, str]  # (sha1, phash, status)


def _dicom_image(data: bytes) -> Image.Image:
    """Greyscale 8-bit image of a DICOM's pixels: min-max scaled, MONOCHROME1 inverted."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    _check_size(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)))
    arr = np.asarray(ds.pixel_array, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour
        arr = arr[..., :3].mean(axis=-1)
    elif arr.ndim == 3:  # multi-frame: the first frame
        arr = arr[0]
    return Image.fromarray(_to_uint8(arr, str(ds.get("PhotometricInterpretation", ""))))


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(f"{width}x{height} pixels")


def _to_uint8(arr: np.ndarray, photometric: str = "") -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    out = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.round(out * 255).astype(np.uint8)


def _grey(img: Image.Image) -> Image.Image:
    """8-bit greyscale; 16-bit and float images are min-max scaled (PIL would clip them)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        return Image.fromarray(_to_uint8(np.asarray(img, dtype=np.float32)))
    return img.convert("L")


def load_grey(path: str, data: bytes) -> Image.Image:
    """The file's bytes as an 8-bit grey PIL image, the way the perceptual hashes see it.

    Shared with the split stage's finer hash, so both hashes decode an image identically.
    """
    if path.lower().endswith(DICOM_SUFFIXES) or data[128:132] == b"DICM":
        return _dicom_image(data)
    img = Image.open(io.BytesIO(data))
    _check_size(*img.size)
    img.draft("L", (256, 256))  # JPEG: decode at reduced scale; phash works on 32x32 anyway
    img.load()
    return _grey(img)


def hash_file(path: str) -> HashResult:
    """``(sha1, phash, status)`` for one file; status is ``ok`` or ``unreadable: <reason>``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        return None, None, f"unreadable: {e.strerror or type(e).__name__}"
    sha1 = hashlib.sha1(data).hexdigest()
    if not data:
        return sha1, None, "unreadable: empty file"
    try:
        img = load_grey(path, data)
        return sha1, str(imagehash.phash(img)), STATUS_OK
    except Image.DecompressionBombError:
        return sha1, None, "unreadable: too large"
    except UnidentifiedImageError:
        return sha1, None, "unreadable: not an image"
    except (OSError, SyntaxError) as e:
        reason = "truncated" if "truncat" in str(e).lower() else str(e)[:120] or type(e).__name__
        return sha1, None, f"unreadable: {reason}"
    except Exception as e:
        return sha1, None, f"unreadable: {type(e).__name__}: {str(e)[:100]}"


def _hash_chunk(paths: Sequence[str]) -> list[HashResult]:
    return [hash_file(p) for p in paths]


def add_hashes(
    df: pd.DataFrame, workers: int | None = None, progress: Progress | None = None
) -> pd.DataFrame:
    """Fill ``sha1`` and ``phash`` for ``ok`` rows; undecodable files get an ``unreadable`` status.

    Example:
        >>> df = add_hashes(make_rows([...]), workers=2)

    Args:
        df: manifest rows; only rows with status ``ok`` are read.
        workers: processes (default ``os.cpu_count()``); 1 hashes in this process.
        progress: ``progress(done, total)`` after each chunk of images.

    Returns:
        A copy of ``df`` with ``sha1``, ``phash`` and ``status`` updated.
    """
    out = df.copy()
    idx = np.flatnonzero((out["status"] == STATUS_OK).to_numpy())
    paths = out["path"].iloc[idx].astype(str).tolist()
    total = len(paths)
    workers = max(1, workers or os.cpu_count() or 1)
    results = map_chunks(_hash_chunk, paths, CHUNK, workers, progress)
    if total:
        sha1, phash, status = (list(col) for col in zip(*results, strict=True))
        cols = [out.columns.get_loc(c) for c in ("sha1", "phash", "status")]
        out.iloc[idx, cols[0]] = pd.array(sha1, dtype="string")
        out.iloc[idx, cols[1]] = pd.array(phash, dtype="string")
        out.iloc[idx, cols[2]] = pd.array(status, dtype="string")
    bad = total - sum(s == STATUS_OK for _, _, s in results)
    logger.info("hashed %d images with %d worker(s); %d unreadable", total, workers, bad)
    return out
