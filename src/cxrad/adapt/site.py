"""Stage 8b, adapt: a site's labelled films as logits, labels and bootstrap clusters.

Two layouts:
- a work folder (``manifest.parquet`` + a cache built with the run's preprocessing): every
  ``ok`` row (or one split's) is used; patients come from the manifest;
- a plain folder of class-named subfolders, ``FOLDER/<CLASS>/*.png|jpg|dcm``, where CLASS is
  one of the 17 class names (case-insensitive): the film is 1 for it, and a ``NORMAL`` film is
  0 for every finding; a finding's film is 0 for NORMAL. Each film is its own patient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrad.errors import AdaptError, CxradError
from cxrad.evaluate.bootstrap import cluster_ids
from cxrad.evaluate.run import infer, open_dataset, select_rows
from cxrad.image import is_image_file, walk_files
from cxrad.labels import CLASSES, NORMAL
from cxrad.manifest import read_manifest
from cxrad.models import Classifier, RunConfig
from cxrad.preprocess import prepare

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteFilms:
    """What adapt fits on: ``(N, C)`` logits and labels (1/0/NaN), ``(N,)`` clusters."""

    logits: np.ndarray
    labels: np.ndarray
    clusters: np.ndarray
    skipped: list[tuple[str, str]]


def load_site(
    model: Classifier, config: RunConfig, data: str | Path, split: str = "all"
) -> SiteFilms:
    """Run the model over the site's films (see the module docstring for the layouts).

    ``split`` picks the rows of a work folder (``"all"``: every ``ok`` row; ``"val"`` refits a
    run on the split it was selected on).

    Raises:
        AdaptError: ``data`` is neither layout, or holds no usable film.
    """
    data = Path(data)
    if (data / "manifest.parquet").is_file():
        rows = select_rows(read_manifest(data), split)
        ds = open_dataset(data, rows, config)
        fix = f"run `{config.preprocess.cache_config().command(data)}`"
        if len(ds) == 0:
            raise AdaptError(f"none of the films in {data} are cached; {fix}")
        cached = set(ds.df["image_id"])
        uncached = [(i, f"not in the cache; {fix}") for i in rows["image_id"] if i not in cached]
        logits, labels = infer(model, ds), ds.labels.astype(np.float64)
        return SiteFilms(logits, labels, cluster_ids(ds.df), uncached)
    if data.is_dir():
        return _from_folder(model, config, data)
    raise AdaptError(
        f"{data} is neither a work folder (manifest.parquet) nor a folder of class-named "
        f"subfolders (e.g. {data}/NORMAL/*.png, {data}/PNEUMONIA/*.png)"
    )


def _from_folder(model: Classifier, config: RunConfig, root: Path) -> SiteFilms:
    names = {c.lower(): c for c in CLASSES}
    pre = config.preprocess.cache_config()
    classes = list(config.classes)
    images, labels, skipped = [], [], []
    for f in sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith(".")):
        skipped.append((str(f), "not in a class-named subfolder, so it has no label"))
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cls = names.get(sub.name.lower())
        if cls is None:
            skipped.append((str(sub), f"not a class name; expected one of {', '.join(CLASSES)}"))
            continue
        row = np.full(len(classes), np.nan)
        if cls in classes:
            row[classes.index(cls)] = 1.0
        if cls == NORMAL:
            row[[i for i, c in enumerate(classes) if c != NORMAL]] = 0.0
        elif NORMAL in classes:
            row[classes.index(NORMAL)] = 0.0
        walk = walk_files(sub, want=is_image_file)  # as predict and ingest find films
        skipped += walk.skipped
        for f in walk.files:
            try:
                images.append(prepare(f, pre))
                labels.append(row)
            except CxradError as e:
                skipped.append((str(f), str(e)))
    for path, why in skipped:
        logger.warning("adapt: skipped %s: %s", path, why)
    if not images:
        raise AdaptError(f"no readable films in class-named subfolders of {root}")
    x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32) / 255.0)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = torch.cat([model(b.to(device)).float().cpu() for b in x.split(32)]).numpy()
    return SiteFilms(logits, np.stack(labels), np.arange(len(images)), skipped)
