"""Stage 3, segment: lung-mask geometry: clean-up, left/right split, area, box, Dice.

All functions take and return plain NumPy arrays at the film's own resolution, so callers can
use them on any mask, predicted or annotated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MIN_PART = 0.1
"""A component smaller than this share of the largest one is dropped as noise."""


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Keep at most the two largest connected lung components, with their holes filled.

    Small islands (under :data:`MIN_PART` of the largest) are noise outside the chest; holes are
    devices or figure marks inside a lung.
    """
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(mask.shape, bool)
    sizes = ndimage.sum_labels(np.ones(mask.shape), labels, index=np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1][:2]
    keep = [int(i) + 1 for i in order if sizes[i] >= MIN_PART * sizes[order[0]]]
    out = np.isin(labels, keep)
    return ndimage.binary_fill_holes(out)


@dataclass(frozen=True)
class LungSides:
    """The mask split into the image's left and right halves of the chest.

    In a standard frontal film (PA or AP, patient facing the viewer) the image's left side shows
    the patient's right lung.

    Attributes:
        image_left, image_right: boolean masks.
        by: ``"components"`` when two separate lungs were found, ``"midline"`` when the lungs
            touch (or one is missing) and the mask was cut at its middle column.
    """

    image_left: np.ndarray
    image_right: np.ndarray
    by: str


def split_sides(mask: np.ndarray) -> LungSides:
    """Split a cleaned lung mask into image-left and image-right lungs."""
    labels, n = ndimage.label(mask)
    if n >= 2:
        sizes = ndimage.sum_labels(np.ones(mask.shape), labels, index=np.arange(1, n + 1))
        a, b = (int(i) + 1 for i in np.argsort(sizes)[::-1][:2])
        ca = ndimage.center_of_mass(labels == a)[1]
        cb = ndimage.center_of_mass(labels == b)[1]
        left, right = (a, b) if ca < cb else (b, a)
        return LungSides(labels == left, labels == right, "components")
    cols = np.flatnonzero(mask.any(axis=0))
    mid = (cols[0] + cols[-1] + 1) // 2 if len(cols) else mask.shape[1] // 2
    left = mask.copy()
    left[:, mid:] = False
    right = mask.copy()
    right[:, :mid] = False
    return LungSides(left, right, "midline")


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of the mask, end-exclusive, or None when the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def expand_box(
    box: tuple[int, int, int, int], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Grow a box by ``margin`` times its own width/height on every side, clipped to the film."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (
        max(0, int(np.floor(x0 - mx))),
        max(0, int(np.floor(y0 - my))),
        min(width, int(np.ceil(x1 + mx))),
        min(height, int(np.ceil(y1 + my))),
    )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total
