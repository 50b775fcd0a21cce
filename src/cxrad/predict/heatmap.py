"""Stage 9, predict: Grad-CAM overlays for the positive findings, saved as PNG and .npy.

The maps come from :func:`cxrad.models.cam.grad_cam` (thread-safe; re-exported here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cxrad.labels import NORMAL
from cxrad.models.cam import cam_layer_name, grad_cam

logger = logging.getLogger(__name__)

__all__ = [
    "OVERLAY_ALPHA",
    "cam_layer_name",
    "grad_cam",
    "lung_mask",
    "lung_mass",
    "overlay",
    "save_heatmap",
    "write_heatmaps",
]

LUNG_CONTOUR = (255, 255, 255)
"""Colour of the lung outline on heatmap overlays."""

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


def lung_mask(image: np.ndarray) -> np.ndarray | None:
    """Lung fields of a model-input image (shipped segmenter), or None when it cannot run."""
    from cxrad.errors import SegmentError
    from cxrad.segment.crop import default_segmenter

    try:
        return default_segmenter().segment(image.astype(np.float32) / 255.0).mask
    except SegmentError as e:
        logger.warning("no lung contour on heatmaps: %s", e)
        return None


def lung_mass(cam: np.ndarray, lungs: np.ndarray | None) -> float | None:
    """Share of the map's mass inside the lungs (None without lungs or with an all-zero map)."""
    total = float(cam.sum())
    if lungs is None or not total > 0:
        return None
    return round(float(cam[lungs].sum()) / total, 6)


def save_heatmap(
    stem: Path, cls: str, image: np.ndarray, cam: np.ndarray, lungs: np.ndarray | None = None
) -> Path:
    """Write ``<stem>__<CLASS>.png`` (overlay, with the lung contour in white when ``lungs``
    is given) and ``.npy`` (raw map); return the PNG path."""
    from cxrad.segment.overlay import contour, line_width

    stem.parent.mkdir(parents=True, exist_ok=True)
    base = stem.parent / f"{stem.name}__{cls}"
    png = base.with_name(base.name + ".png")
    np.save(base.with_name(base.name + ".npy"), cam.astype(np.float32))
    rgb = overlay(image, cam)
    if lungs is not None:
        rgb[contour(lungs, line_width(lungs.shape))] = LUNG_CONTOUR
    Image.fromarray(rgb).save(png)
    return png


def write_heatmaps(
    model: torch.nn.Module,
    recs: list[dict[str, Any]],
    x: np.ndarray,
    images: list[np.ndarray],
    stems: list[Path],
    classes: list[str],
    device: torch.device,
) -> None:
    """Grad-CAM overlays for each record's positive findings (NORMAL excepted), written to disk.

    Each record gains ``heatmaps`` (class -> PNG path) and, for films with a finding,
    ``heatmap_lung_mass`` (class -> share of the map inside the lungs).
    """
    for r in recs:
        r["heatmaps"] = {}
    targets = [[classes.index(c) for c in r["positive"] if c != NORMAL] for r in recs]
    todo = [i for i, t in enumerate(targets) if t]
    if not todo:
        return
    xt = torch.from_numpy(x[todo]).to(device)
    maps = grad_cam(model, xt, [targets[i] for i in todo], cam_layer_name(model))
    for i, m in zip(todo, maps, strict=True):
        lungs = lung_mask(images[i])
        recs[i]["heatmap_lung_mass"] = {}
        for c, cam in m.items():
            png = save_heatmap(stems[i], classes[c], images[i], cam, lungs)
            recs[i]["heatmaps"][classes[c]] = str(png)
            recs[i]["heatmap_lung_mass"][classes[c]] = lung_mass(cam, lungs)
