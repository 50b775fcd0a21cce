"""Stage 9, predict: heatmaps of a one-class run: Grad-CAM on the anomaly score.

A one-class run's only output is the NORMAL logit (see :mod:`cxrad.models.oneclass`); a film
it calls abnormal has no positive finding to explain, so its map explains ``-logit``, the
Mahalanobis distance of the film's features from the normal films', saved as ``ANOMALY``.
A run with the patch density (PaDiM) needs no gradient: its map is the per-location distance
itself (:func:`~cxrad.models.oneclass.anomaly_map`), less the film's smallest, so the overlay
colours only where a location is farther from normal than the rest of the film.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrad.labels import NORMAL
from cxrad.models import Classifier
from cxrad.models.oneclass import PATCH, anomaly_map, anomaly_view
from cxrad.predict.heatmap import grad_cam, save_heatmap

ANOMALY = "ANOMALY"
"""The name a one-class run's heatmap is saved under (``<stem>__ANOMALY.png``)."""


def anomaly_heatmaps(
    model: Classifier,
    recs: list[dict[str, Any]],
    x: np.ndarray,
    images: list[np.ndarray],
    stems: list[Path],
    device: torch.device,
) -> None:
    """Add ``heatmaps = {"ANOMALY": png}`` to every record the run did not call normal."""
    for r in recs:
        r["heatmaps"] = {}
    todo = [i for i, r in enumerate(recs) if NORMAL not in r["positive"]]
    if not todo:
        return
    xt = torch.from_numpy(x[todo]).to(device)
    if getattr(model.net, "density", None) == PATCH:
        with torch.no_grad():
            heat = anomaly_map(model, xt)
        maps = (heat - heat.flatten(1).amin(1)[:, None, None]).cpu().numpy()[:, None]
    else:
        view, layer = anomaly_view(model)
        maps = grad_cam(view, xt, [[0]] * len(todo), layer)  # type: ignore[arg-type]
    for i, m in zip(todo, maps, strict=True):
        recs[i]["heatmaps"][ANOMALY] = str(save_heatmap(stems[i], ANOMALY, images[i], m[0]))


__all__ = ["ANOMALY", "anomaly_heatmaps"]
