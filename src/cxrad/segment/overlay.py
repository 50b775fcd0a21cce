"""Stage 3, segment: draw lung contours on a film, for people to check a mask at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

LEFT_COLOUR = (255, 64, 64)
"""Image-left lung (the patient's right on a standard frontal film): red."""
RIGHT_COLOUR = (64, 160, 255)
"""Image-right lung: blue."""


def contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The ``width``-pixel inner edge of a boolean mask."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    inner = ndimage.binary_erosion(mask, iterations=max(1, width), border_value=0)
    return mask & ~inner


def line_width(shape: tuple[int, ...]) -> int:
    """About 1 px per 256 px of the film's longer side, so contours stay visible when shrunk."""
    return max(1, round(max(shape[:2]) / 256))


def draw_contours(
    rgb: np.ndarray, left: np.ndarray, right: np.ndarray, width: int | None = None
) -> np.ndarray:
    """Paint the two lung contours onto an ``(H, W, 3)`` uint8 image (a copy is returned)."""
    out = rgb.copy()
    w = line_width(rgb.shape) if width is None else width
    out[contour(left, w)] = LEFT_COLOUR
    out[contour(right, w)] = RIGHT_COLOUR
    return out


def grey_to_rgb(img: np.ndarray) -> np.ndarray:
    """A float [0, 1] (or uint8) grey film as ``(H, W, 3)`` uint8."""
    g = img if img.dtype == np.uint8 else np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def overlay(img: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The film in grey with the image-left lung outlined red and the image-right lung blue."""
    return draw_contours(grey_to_rgb(img), left, right)


def save_png(arr: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path
