"""Stage 8, evaluate: score Grad-CAM maps against real boxes and the lung fields.

Two questions about "where": does the map's peak fall inside the radiologist's box (the
pointing game), and how much of its mass lies inside the box, or inside the lungs at all?
Beside each, the same score for chance: a centred Gaussian blob, which knows nothing about
the film. Means carry patient-clustered bootstrap CIs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from cxrad.evaluate.clustered_mean import clustered_mean_ci

logger = logging.getLogger(__name__)

NIH_ORIGINAL_SIDE = 1024
"""NIH ChestX-ray14 films (and their ``BBox_List_2017`` coordinates) are 1024 x 1024."""

BOX_LABELS = {
    "Atelectasis": "ATELECTASIS",
    "Cardiomegaly": "CARDIOMEGALY",
    "Effusion": "EFFUSION",
    "Infiltrate": "INFILTRATION",
    "Infiltration": "INFILTRATION",
    "Mass": "MASS",
    "Nodule": "NODULE",
    "Pneumonia": "PNEUMONIA",
    "Pneumothorax": "PNEUMOTHORAX",
    "ActiveTuberculosis": "TUBERCULOSIS",
    "ObsoletePulmonaryTuberculosis": "TUBERCULOSIS",
    "PulmonaryTuberculosis": "TUBERCULOSIS",
}
"""Box labels of NIH (``BBox_List_2017``) and TBX11K (VOC xml) -> cxrad classes."""

BLOB_SIGMA = 1 / 6
"""The chance map's standard deviation, as a share of the image side."""


def centred_blob(size: int) -> np.ndarray:
    """The chance-level map: an isotropic Gaussian at the image centre."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    s = BLOB_SIGMA * size
    return np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * s * s)).astype(np.float32)


def film_boxes(meta: str | dict | None, source: str) -> tuple[list[dict[str, Any]], tuple | None]:
    """The boxes of one manifest row and the ``(w, h)`` their coordinates refer to.

    ``meta`` is a JSON string, a dict, or missing (None, NaN or ``pd.NA`` in a real manifest).
    """
    if isinstance(meta, str):
        m = json.loads(meta) if meta else {}
    else:
        m = meta if isinstance(meta, dict) else {}
    boxes = m.get("boxes") or []
    size = m.get("annotation_size")
    if size is None and source.startswith("nih"):
        size = (NIH_ORIGINAL_SIDE, NIH_ORIGINAL_SIDE)
    return boxes, (tuple(size) if size else None)


def input_box(
    xywh: list[float], ref: tuple[int, int], size: int, mode: str
) -> tuple[float, float, float, float]:
    """Map a box from annotation pixels to the model input's pixels (``(x0, y0, x1, y1)``).

    Mirrors :func:`cxrad.preprocess.resize`: letterbox keeps the aspect and centres the film.
    """
    w, h = ref
    if mode == "stretch":
        sx, sy, left, top = size / w, size / h, 0.0, 0.0
    else:
        tw, th = (
            (size, max(1, round(h * size / w))) if w >= h else (max(1, round(w * size / h)), size)
        )
        sx, sy = tw / w, th / h
        left, top = (size - tw) // 2, (size - th) // 2
    x, y, bw, bh = xywh
    return left + x * sx, top + y * sy, left + (x + bw) * sx, top + (y + bh) * sy


def box_mask(boxes: list[tuple[float, float, float, float]], size: int) -> np.ndarray:
    """Union of boxes as a boolean ``(size, size)`` mask (pixel centres inside a box)."""
    m = np.zeros((size, size), bool)
    centres = np.arange(size) + 0.5
    for x0, y0, x1, y1 in boxes:
        cols = (centres >= x0) & (centres < x1)
        rows = (centres >= y0) & (centres < y1)
        m |= rows[:, None] & cols[None, :]
    return m


def mass_inside(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's (non-negative) mass inside ``region``; NaN for an all-zero map."""
    total = float(cam.sum())
    return float(cam[region].sum()) / total if total > 0 else float("nan")


def pointing_hit(cam: np.ndarray, region: np.ndarray) -> float:
    """1.0 when the map's maximum lies inside ``region``, else 0.0; NaN for an all-zero map."""
    if not float(cam.max()) > 0:
        return float("nan")
    return float(region.flat[int(np.argmax(cam))])


def box_targets(
    rows: pd.DataFrame, classes: list[str], size: int, mode: str
) -> list[tuple[int, str, np.ndarray]]:
    """``(row position, class, box mask in input pixels)`` for every boxed class of every row.

    Rows whose boxes carry no reference size are skipped with a log line.
    """
    out = []
    for i, (meta, source) in enumerate(zip(rows["meta"], rows["source"], strict=True)):
        boxes, ref = film_boxes(meta, str(source))
        if not boxes:
            continue
        if ref is None:
            logger.info("row %d: boxes without an annotation size; skipped", i)
            continue
        by_class: dict[str, list] = {}
        for b in boxes:
            cls = BOX_LABELS.get(str(b.get("label")))
            if cls in classes:
                by_class.setdefault(cls, []).append(input_box(b["xywh"], ref, size, mode))
        for cls, bs in sorted(by_class.items()):
            out.append((i, cls, box_mask(bs, size)))
    return out


def score_boxes(
    targets: list[tuple[int, str, np.ndarray]],
    cams: dict[tuple[int, str], np.ndarray],
    rows: pd.DataFrame,
    clusters: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Pointing game and in-box mass per class and source, model beside chance, with CIs."""
    if not targets:
        return {"status": "no boxed films of the model's classes in this split", "per_class": []}
    size = next(iter(cams.values())).shape[0] if cams else 0
    blob = centred_blob(size)
    recs = []
    for i, cls, region in targets:
        cam = cams[(i, cls)]
        recs.append(
            {
                "row": i,
                "class": cls,
                "source": str(rows["source"].iloc[i]),
                "hit": pointing_hit(cam, region),
                "mass": mass_inside(cam, region),
                "chance_hit": pointing_hit(blob, region),
                "chance_mass": mass_inside(blob, region),
                "box_area": float(region.mean()),
            }
        )
    df = pd.DataFrame(recs)
    per_class = []
    for (cls, source), g in df.groupby(["class", "source"], sort=True):
        cl = clusters[g["row"].to_numpy()]
        per_class.append(
            {
                "class": cls,
                "source": source,
                "n_films": len(g),
                **{
                    k: clustered_mean_ci(g[k].to_numpy(), cl, n_boot, seed)
                    for k in ("hit", "mass", "chance_hit", "chance_mass", "box_area")
                },
            }
        )
    return {"status": "ok", "per_class": per_class}


def score_lungs(
    cams: list[np.ndarray],
    lungs: list[np.ndarray],
    names: list[str],
    clusters: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Share of heatmap mass inside the lungs, per explained class and overall, beside chance
    (the centred blob) and the lung area (what a flat map would score)."""
    if not cams:
        return {"status": "no films", "per_class": []}
    blob = centred_blob(cams[0].shape[0])
    df = pd.DataFrame(
        {
            "class": names,
            "mass": [mass_inside(c, m) for c, m in zip(cams, lungs, strict=True)],
            "chance_mass": [mass_inside(blob, m) for m in lungs],
            "lung_area": [float(m.mean()) for m in lungs],
            "cluster": clusters,
        }
    )
    keys = ("mass", "chance_mass", "lung_area")

    def summary(g: pd.DataFrame) -> dict[str, Any]:
        cl = g["cluster"].to_numpy()
        return {k: clustered_mean_ci(g[k].to_numpy(), cl, n_boot, seed) for k in keys}

    per_class = [
        {"class": cls, "n_films": len(g), **summary(g)} for cls, g in df.groupby("class", sort=True)
    ]
    return {"status": "ok", "all": {"n_films": len(df), **summary(df)}, "per_class": per_class}
