"""Stage 2, manifest: content hashes (sha1 of the bytes, perceptual hash of the picture).

``sha1`` finds byte-identical copies; ``phash`` (imagehash's DCT hash of the greyscale image)
survives resizing and re-encoding, so the split stage can group near duplicates across
sources. Images are hashed one at a time per worker process, never all held in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from cxrad.errors import ImageReadError
from cxrad.image import MAX_PIXELS, read_image, sha1_bytes
from cxrad.manifest.schema import STATUS_OK
from cxrad.parallel import map_chunks
from cxrad.progress import Progress

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = MAX_PIXELS
"""The pixel cap (:data:`cxrad.image.MAX_PIXELS`), checked before decoding."""
CHUNK = 64
"""Images per task sent to a worker: large enough to amortise IPC, small for smooth progress."""
_DRAFT = 256
"""JPEGs are decoded at a reduced scale of at least this side: phash works on 32x32 anyway."""

FINE_HASH_SIZE = 16
"""``phash256``: a 16x16 DCT phash, fine enough to tell re-encoded copies from look-alikes."""

HashResult = tuple[str | None, str | None, str, str | None]  # (sha1, phash, status, phash256)

_STATUS = {
    "empty": "empty file",
    "not_an_image": "not an image",
    "truncated": "truncated",
    "too_large": "too large",
    "missing": "missing file",
}


def load_grey(path: str, data: bytes) -> Image.Image:
    """The file's bytes as an 8-bit grey PIL image, the way the perceptual hashes see it.

    Decoded by :func:`cxrad.image.read_image` (the same pixels preprocess caches), so the
    split stage's finer hash and this one see an image identically.

    Raises:
        ImageReadError: the bytes are not a readable image.
    """
    r = read_image(data, MAX_IMAGE_PIXELS, native=True, draft=_DRAFT, name=path)
    px = r.pixels
    if px.dtype != np.uint8:
        px = np.clip(np.rint(px * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(px)


def status_for(error: ImageReadError, path: str) -> str:
    """A manifest status for a failed read: ``unreadable: <short reason>``, groupable."""
    reason = _STATUS.get(error.code) or str(error).replace(f": {path}", "", 1)[:160]
    return f"unreadable: {reason}"


def hash_file(path: str) -> HashResult:
    """``(sha1, phash, status, phash256)`` for one file; status is ``ok`` or ``unreadable: ...``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        return None, None, f"unreadable: {e.strerror or type(e).__name__}", None
    sha1 = sha1_bytes(data)
    if not data:
        return sha1, None, "unreadable: empty file", None
    try:
        img = load_grey(path, data)
        fine = str(imagehash.phash(img, hash_size=FINE_HASH_SIZE))
        return sha1, str(imagehash.phash(img)), STATUS_OK, fine
    except ImageReadError as e:
        return sha1, None, status_for(e, path), None
    except Exception as e:  # imagehash on a degenerate image: still one row with a reason
        return sha1, None, f"unreadable: {type(e).__name__}: {str(e)[:100]}", None


def _hash_chunk(paths: Sequence[str]) -> list[HashResult]:
    return [hash_file(p) for p in paths]


def add_hashes(
    df: pd.DataFrame, workers: int | None = None, progress: Progress | None = None
) -> pd.DataFrame:
    """Fill ``sha1``, ``phash`` and ``phash256`` for ``ok`` rows; undecodable files get an ``unreadable`` status.

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
        sha1, phash, status, fine = (list(col) for col in zip(*results, strict=True))
        cols = [out.columns.get_loc(c) for c in ("sha1", "phash", "status")]
        out.iloc[idx, cols[0]] = pd.array(sha1, dtype="string")
        out.iloc[idx, cols[1]] = pd.array(phash, dtype="string")
        out.iloc[idx, cols[2]] = pd.array(status, dtype="string")
        out["phash256"] = pd.Series(pd.NA, index=out.index, dtype="string")
        out.iloc[idx, out.columns.get_loc("phash256")] = pd.array(fine, dtype="string")
    bad = total - sum(r[2] == STATUS_OK for r in results)
    logger.info("hashed %d images with %d worker(s); %d unreadable", total, workers, bad)
    return out
