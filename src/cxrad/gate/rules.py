"""Stage 5, gate: simple pixel rules that need no model (too small, blank, colour).

They run after the DICOM tags and before the classifier. Each one is a property the classifier
could not be trusted to learn from a few hundred examples, and each is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxrad.gate.result import BLANK, NOT_RADIOGRAPH, TOO_SMALL, GateResult, reject

MIN_SIDE = 64
"""Shortest side, in pixels, below which a film is too small to read (the classifier sees 64 px)."""
BLANK_RANGE = 0.04
"""A film is blank when its 1st-99th percentile range is under this (of the [0, 1] scale)."""


def check_pixels(
    pixels: np.ndarray, info: dict[str, Any] | None = None, min_side: int = MIN_SIDE
) -> GateResult | None:
    """A rejection decided by simple rules on the decoded grey pixels, or None.

    Args:
        pixels: the decoded 2-D grey image (``uint8``, or float in [0, 1]).
        info: header facts from :func:`~cxrad.gate.tags.read_info`; ``colour`` rejects.
        min_side: the smallest acceptable shortest side.
    """
    h, w = pixels.shape[:2]
    if min(h, w) < min_side:
        return reject(
            TOO_SMALL, "rules", f"image is {w}x{h}; the shortest side must be ≥ {min_side}"
        )
    spread = intensity_range(pixels)
    if spread < BLANK_RANGE:
        return reject(BLANK, "rules", f"near-uniform pixels (1-99% range {spread:.3f})", 1.0)
    if info and info.get("colour"):
        return reject(NOT_RADIOGRAPH, "rules", "the file holds a colour image")
    return None


def intensity_range(pixels: np.ndarray) -> float:
    """The 1st-99th percentile range of the pixels on the [0, 1] scale (on a ≤256² subsample)."""
    step = max(1, max(pixels.shape[:2]) // 256)
    a = np.asarray(pixels[::step, ::step], dtype=np.float32)
    if pixels.dtype == np.uint8:
        a = a / 255.0
    lo, hi = np.percentile(a, [1, 99])
    return float(hi - lo)
