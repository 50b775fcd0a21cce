"""Stage 2, manifest: export ``image_docs.csv`` in the original project's format, for old tooling.

The original project listed one line per image and positive class, with the header
``image,anomaly,split category`` and categories TRAIN/TEST/VALIDATION. A multi-label image
therefore appears once per positive class; a NORMAL image once, as ``NORMAL``.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrad.labels import CLASSES

logger = logging.getLogger(__name__)

HEADER = ("image", "anomaly", "split category")
CATEGORIES = {"train": "TRAIN", "test": "TEST", "val": "VALIDATION"}


def image_docs_rows(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(image_id, class, category)`` per image with a split and per positive class, sorted by image."""
    has = df["split"].notna().to_numpy()
    sub = df[has].sort_values("image_id", kind="stable")
    lab = sub[list(CLASSES)].to_numpy(dtype=np.float64) == 1
    ids = sub["image_id"].astype(str).to_numpy()
    cats = sub["split"].map(CATEGORIES).to_numpy(dtype=object)
    r, c = np.nonzero(lab)  # row-major: by image, then class in CLASSES order
    return [(ids[i], CLASSES[j], cats[i]) for i, j in zip(r, c, strict=True)]


def write_image_docs(df: pd.DataFrame, path: str | Path) -> int:
    """Write ``image_docs.csv``; return the number of lines written (header excluded).

    Rows without a split (not ``ok``) are left out; split rows without any positive class
    are counted in the log, since the format cannot express them.

    Example:
        >>> write_image_docs(read_manifest("work"), "work/image_docs.csv")
    """
    rows = image_docs_rows(df)
    split_rows = df["split"].notna()
    no_pos = int((split_rows & ~(df[list(CLASSES)] == 1).any(axis=1)).sum())
    if no_pos:
        logger.warning(
            "image_docs: %d split images have no positive class and are not listed", no_pos
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)
    os.replace(tmp, path)
    return len(rows)
