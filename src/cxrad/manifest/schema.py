"""Stage 2, manifest: the schema that every adapter writes and every later stage reads.

One row per image, never one per class. Labels are one float column per class in
:data:`cxrad.labels.CLASSES`: 1 = present, 0 = known absent, NaN = not annotated by the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cxrad.errors import ManifestError
from cxrad.labels import CLASSES

STATUS_OK = "ok"

OPTIONAL_COLUMNS: dict[str, object] = {"site": None}
"""Base columns added after the first release: an older manifest lacks them and reads as null."""

# name -> pandas dtype. Strings are pandas' nullable "string" so that nulls stay nulls.
BASE_COLUMNS: dict[str, str] = {
    "image_id": "string",  # unique across the manifest: "<source>/<path relative to its root>"
    "path": "string",  # absolute path of the original file (never modified)
    "source": "string",  # adapter name, e.g. "kaggle-pediatric"
    "official_split": "string",  # the dataset's own split ("train"/"val"/"test") or null
    "patient_id": "string",  # "<source>:<id>" so ids never collide across datasets; null if unknown
    "view": "string",  # PA / AP / LL ... or null
    "site": "string",  # where the film was taken or collected (sub-source), or null
    **{c: "float32" for c in CLASSES},
    "label_source": "string",  # where the labels came from: "folder:PNEUMONIA", "Data_Entry_2017.csv"
    "raw_label": "string",  # the dataset's own label text, unmapped
    "meta": "string",  # JSON object of extra per-image facts (subtype, readings, boxes ...)
    "sha1": "string",  # content hash of the file bytes (filled by hashing)
    "phash": "string",  # perceptual hash, hex (filled by hashing)
    "status": "string",  # "ok", or the reason this row cannot be used
}

# Optional columns added by hashing (absent in manifests from older versions).
HASH_COLUMNS: dict[str, str] = {
    "phash256": "string",  # 256-bit perceptual hash, hex: confirms near duplicates in split
}

# Columns added by the split stage.
SPLIT_COLUMNS: dict[str, str] = {
    "dup_group": "Int64",  # rows with the same group are the same picture (exact or near)
    "split": "string",  # "train" / "val" / "test"
}


def empty_manifest() -> pd.DataFrame:
    """An empty manifest with every base column at its dtype."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in BASE_COLUMNS.items()})


def make_rows(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a schema-conformant frame from dicts; missing columns become null/NaN.

    Adapters call this so they only name the columns they know. Class columns that a record
    does not mention stay NaN (unannotated), which is the safe default.

    Example:
        >>> df = make_rows([{"image_id": "x/a.png", "path": "/d/a.png", "source": "x",
        ...                  "PNEUMONIA": 1.0, "status": "ok"}])
    """
    records = list(records)
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    unknown = set(df.columns) - set(BASE_COLUMNS)
    if unknown:
        raise ManifestError(
            f"unknown manifest columns {sorted(unknown)}; expected {list(BASE_COLUMNS)}"
        )
    for col, dtype in BASE_COLUMNS.items():
        if col not in df.columns:
            df[col] = np.nan if dtype == "float32" else None
    df = df[list(BASE_COLUMNS)]
    return df.astype(BASE_COLUMNS)


def validate(df: pd.DataFrame) -> pd.DataFrame:
    """Check the schema and invariants; return ``df`` unchanged so calls can chain.

    Raises:
        ManifestError: a column is missing, ids repeat, or a label is outside {0, 1, NaN}.
    """
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest is missing columns {missing}")
    if df["image_id"].isna().any():
        raise ManifestError("manifest has rows without an image_id")
    dup = df["image_id"][df["image_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"image_id must be unique; repeated: {list(dup[:5])}")
    labels = df[list(CLASSES)].to_numpy(dtype=np.float64)
    bad = ~(np.isnan(labels) | (labels == 0) | (labels == 1))
    if bad.any():
        raise ManifestError("class columns must hold only 0, 1 or NaN")
    if df["status"].isna().any():
        raise ManifestError("every row needs a status ('ok' or a reason)")
    return df


def label_matrix(df: pd.DataFrame, classes: Iterable[str] = CLASSES) -> np.ndarray:
    """The N×C float32 label matrix (NaN = unannotated) for ``classes``."""
    return df[list(classes)].to_numpy(dtype=np.float32)
