"""Stage 3, segment: crop a film to its lung fields plus a margin (``preprocess --crop lungs``).

Borders, burnt-in text and side markers mostly lie outside the lung box, so a model trained on
the crop has less of them to learn shortcuts from.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np

from cxrad.errors import SegmentError
from cxrad.segment.geometry import expand_box
from cxrad.segment.infer import Segmenter
from cxrad.segment.model import ASSET_DIR, WEIGHTS

logger = logging.getLogger(__name__)

LUNG_MARGIN = 0.05
"""The lung box grows by this share of its width/height on every side."""


@functools.lru_cache(maxsize=1)
def default_segmenter() -> Segmenter:
    """The shipped segmenter, loaded once per process (it is safe to share between threads)."""
    return Segmenter()


@functools.lru_cache(maxsize=4)
def segmenter_id(path: str | None = None) -> str:
    """Short content hash of a segmenter's weights: part of the crop cache key."""
    folder = Path(path) if path is not None else ASSET_DIR
    try:
        return hashlib.sha1((folder / WEIGHTS).read_bytes()).hexdigest()[:12]
    except OSError as e:
        raise SegmentError(
            f"no lung segmenter weights in {folder} ({e}); reinstall cxrad, or run "
            "scripts/train_segmenter.py"
        ) from e


def lung_box(
    img: np.ndarray, margin: float = LUNG_MARGIN, segmenter: Segmenter | None = None
) -> tuple[int, int, int, int] | None:
    """The expanded ``(x0, y0, x1, y1)`` lung box of a film, or None when no lung is found.

    Args:
        img: 2-D film, ``uint8`` or float in [0, 1].
        margin: see :data:`LUNG_MARGIN`.
        segmenter: default the shipped one.
    """
    unit = img.astype(np.float32) / np.float32(255.0) if img.dtype == np.uint8 else img
    box = (segmenter or default_segmenter()).segment(np.asarray(unit, np.float32)).box
    if box is None:
        return None
    return expand_box(box, margin, img.shape[1], img.shape[0])


def crop_to_lungs(
    img: np.ndarray, margin: float = LUNG_MARGIN, segmenter: Segmenter | None = None
) -> np.ndarray:
    """The film cut to its lung box (same dtype); the whole film when no lung is found."""
    box = lung_box(img, margin, segmenter)
    if box is None:
        logger.info("no lung field found; keeping the whole film (%dx%d)", *img.shape[::-1])
        return img
    x0, y0, x1, y1 = box
    return img[y0:y1, x0:x1]
