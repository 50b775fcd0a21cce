"""Stage 8, evaluate: the "where" sections: heatmaps scored, and shortcut counterfactuals.

Runs on the cached images the model sees. Lung masks come from the lung segmenter run on those
same images, so masks, boxes and heatmaps share one pixel grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrad.evaluate.bootstrap import cluster_ids, resample_counts
from cxrad.evaluate.counterfactual import WHERE, blank, counterfactual_section
from cxrad.evaluate.localisation import box_targets, score_boxes, score_lungs
from cxrad.evaluate.metrics import MIN_COUNT
from cxrad.models import Classifier, probabilities
from cxrad.models.cam import cam_layer_name, grad_cam
from cxrad.progress import Progress
from cxrad.segment import Segmenter

logger = logging.getLogger(__name__)


def _classes(config: Any) -> list[str]:
    return list(config.classes) if hasattr(config, "classes") else list(config["classes"])


def _mode_crop(config: Any) -> tuple[str, str]:
    """Resize mode and crop of a :class:`RunConfig` or a plain config dict."""
    pre = getattr(config, "preprocess", None)
    if pre is not None and not isinstance(pre, dict):
        return str(pre.mode), str(getattr(pre, "crop", "none"))
    d = (config.get("preprocess") if isinstance(config, dict) else None) or {}
    return str(d.get("mode") or "letterbox"), str(d.get("crop") or "none")


def lung_masks(images: np.ndarray, segmenter: Segmenter) -> np.ndarray:
    """``(N, S, S)`` bool lung masks of ``uint8`` model-input images."""
    return np.stack([segmenter.segment(im.astype(np.float32) / 255.0).mask for im in images])


@torch.inference_mode()
def predict_probs(
    model: Classifier, images: np.ndarray, config: dict[str, Any], batch_size: int = 64
) -> np.ndarray:
    """Probabilities ``(N, C)`` for ``uint8`` images ``(N, S, S)``."""
    device = next(model.parameters()).device
    out = []
    for b in range(0, len(images), batch_size):
        x = torch.from_numpy(images[b : b + batch_size].astype(np.float32) / 255.0)[:, None]
        out.append(probabilities(model(x.to(device)).float().cpu(), config).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(_classes(config))))


def cams_for(
    model: Classifier,
    images: np.ndarray,
    targets: Sequence[tuple[int, int]],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Grad-CAM maps for ``(image row, class index)`` pairs, in order."""
    layer = cam_layer_name(model)
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    for b in range(0, len(targets), batch_size):
        chunk = targets[b : b + batch_size]
        x = torch.from_numpy(np.stack([images[i] for i, _ in chunk]).astype(np.float32) / 255.0)
        maps = grad_cam(model, x[:, None].to(device), [[c] for _, c in chunk], layer)
        out.extend(m[c] for m, (_, c) in zip(maps, chunk, strict=True))
        if progress is not None:
            progress(len(out), len(targets))
    return out


def top_abnormal(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """Each film's most probable class other than NORMAL (the finding a user would look at)."""
    p = probs.copy()
    if "NORMAL" in classes:
        p[:, classes.index("NORMAL")] = -np.inf
    return np.argmax(p, axis=1)


def where_sections(
    model: Classifier,
    images: np.ndarray,
    rows: pd.DataFrame,
    config: dict[str, Any],
    segmenter: Segmenter,
    probs: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    min_count: int = MIN_COUNT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Localisation (boxes, lungs) and counterfactual sections for one evaluated split.

    Args:
        model: the classifier, in eval mode.
        images: ``(N, S, S)`` uint8 cached model inputs, aligned with ``rows``.
        rows: manifest rows (``source``, ``meta`` with boxes, ``patient_id``, class columns).
        config: the run config (classes, preprocess, activation, temperature).
        segmenter: the lung segmenter.
        probs: probabilities on the full films, if already computed.
        n_boot, seed: bootstrap resamples and seed.
        batch_size: images per forward pass.
        min_count: fewest positives/negatives for a counterfactual AUROC.
        progress: ``progress(done, total)`` over the Grad-CAM passes.
    """
    classes = _classes(config)
    mode, crop = _mode_crop(config)
    size = images.shape[-1]
    clusters = cluster_ids(rows)
    lungs = lung_masks(images, segmenter)
    if probs is None:
        probs = predict_probs(model, images, config, batch_size)
    variants = {"full": probs}
    for where in WHERE:
        variants[where] = predict_probs(model, blank(images, lungs, where), config, batch_size)
    counts = resample_counts(int(clusters.max()) + 1 if len(clusters) else 0, n_boot, seed)
    y = rows[classes].to_numpy(dtype=np.float64)
    counterfactual = counterfactual_section(variants, y, classes, clusters, counts, min_count)

    top = top_abnormal(probs, classes)
    boxed = box_targets(rows, classes, size, mode) if crop == "none" else []
    pairs = [(i, int(c)) for i, c in enumerate(top)] + [(i, classes.index(c)) for i, c, _ in boxed]
    maps = cams_for(model, images, pairs, progress=progress)
    lung_cams, box_cams = maps[: len(top)], maps[len(top) :]
    in_lungs = score_lungs(
        lung_cams, list(lungs), [classes[c] for c in top], clusters, n_boot, seed
    )
    cams = {(i, c): m for (i, c, _), m in zip(boxed, box_cams, strict=True)}
    boxes = score_boxes(boxed, cams, rows, clusters, n_boot, seed)
    if crop != "none":
        boxes = {"status": "not scored: boxes are not mapped into lung crops", "per_class": []}
    return {
        "localisation": {
            "boxes": boxes,
            "lungs": in_lungs,
            "segmenter_lung_area": float(lungs.mean()),
            "explained_class": "each film's most probable class other than NORMAL",
            "chance": "a centred Gaussian blob (sigma = 1/6 of the side)",
        },
        "counterfactual": counterfactual,
    }
