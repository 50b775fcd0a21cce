"""Stage 9, predict: Grad-CAM overlays for the positive findings, saved as PNG and .npy.

The maps come from :func:`cxrad.models.cam.grad_cam` (thread-safe; re-exported here).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from cxrad.models.cam import cam_layer_name, grad_cam

logger = logging.getLogger(__name__)

__all__ = ["OVERLAY_ALPHA", "cam_layer_name", "grad_cam", "overlay", "save_heatmap"]

OVERLAY_ALPHA = 0.5
"""Weight of the colour map over the grey image where the map peaks (fading to 0 where it is 0)."""


def overlay(image: np.ndarray, cam: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Blend a Grad-CAM map (scaled to its own maximum) over a grey image as RGB ``uint8``.

    Where the map is 0 the pixel stays the grey image's.

    Args:
        image: ``(S, S)`` grey ``uint8``, the image the model saw.
        cam: ``(S, S)`` non-negative map.
        cmap: a matplotlib colour map name.
    """
    import matplotlib

    peak = float(cam.max())
    norm = cam / peak if peak > 0 else np.zeros_like(cam)
    colour = matplotlib.colormaps[cmap](norm)[..., :3]
    grey = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=-1)
    # Colour fades out where the map is cold, so the radiograph stays readable there.
    weight = (OVERLAY_ALPHA * np.sqrt(norm))[..., None]
    blend = (1 - weight) * grey + weight * colour
    return np.clip(blend * 255.0 + 0.5, 0, 255).astype(np.uint8)


def save_heatmap(stem: Path, cls: str, image: np.ndarray, cam: np.ndarray) -> Path:
    """Write ``<stem>__<CLASS>.png`` (overlay) and ``.npy`` (raw map); return the PNG path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    base = stem.parent / f"{stem.name}__{cls}"
    png = base.with_name(base.name + ".png")
    np.save(base.with_name(base.name + ".npy"), cam.astype(np.float32))
    Image.fromarray(overlay(image, cam)).save(png)
    return png
