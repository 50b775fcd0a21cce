"""Stage 2, manifest: read and write ``WORK/manifest.parquet`` atomically, and hash it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from cxrad.atomic import replacing
from cxrad.errors import ManifestError
from cxrad.manifest.schema import (
    BASE_COLUMNS,
    HASH_COLUMNS,
    OPTIONAL_COLUMNS,
    SPLIT_COLUMNS,
    validate,
)

MANIFEST_NAME = "manifest.parquet"


def manifest_path(work: str | Path) -> Path:
    """Where the manifest of work folder ``work`` lives."""
    return Path(work) / MANIFEST_NAME


def write_manifest(df: pd.DataFrame, work: str | Path) -> Path:
    """Validate and write the manifest; a crash mid-write leaves the old file intact."""
    validate(df)
    path = manifest_path(work)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, path.with_suffix(f".tmp{os.getpid()}")) as tmp:
        df.reset_index(drop=True).to_parquet(tmp, index=False)
    return path


def read_manifest(work: str | Path) -> pd.DataFrame:
    """Read a work folder's manifest (or a manifest file directly), with schema dtypes.

    Raises:
        ManifestError: the file is missing, unreadable (cut short, not parquet) or has a column
            that is not of its type; says which command recreates it.
    """
    p = Path(work)
    path = p if p.suffix == ".parquet" else manifest_path(p)
    if not path.is_file():
        raise ManifestError(f"{path} not found; create it with `cxrad ingest DIR... --out {p}`")
    redo = f"rerun `cxrad ingest DIR... --out {path.parent}` (then `cxrad split`)"
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise ManifestError(f"{path} cannot be read as parquet ({_first_line(e)}); {redo}") from e
    for col, default in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = default
    dtypes = {c: t for c, t in {**BASE_COLUMNS, **HASH_COLUMNS, **SPLIT_COLUMNS}.items()
              if c in df.columns}  # fmt: skip
    try:
        df = df.astype(dtypes)
    except (TypeError, ValueError) as e:  # a hand edit put text where a number belongs
        raise ManifestError(f"{path}: {_first_line(e)}; fix the column or {redo}") from e
    return validate(df)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def manifest_hash(df: pd.DataFrame) -> str:
    """A short, order-independent fingerprint of which images carry which labels and splits.

    Stored with trained models so a run can say exactly which data it saw.
    """
    cols = [c for c in ("image_id", "sha1", "split", *BASE_COLUMNS) if c in df.columns]
    cols = list(dict.fromkeys(cols))
    canon = df[cols].sort_values("image_id").astype("string").fillna("<NA>")
    h = hashlib.sha1()
    for row in canon.itertuples(index=False):
        h.update("\x1f".join(row).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]
