"""Stage 2, manifest: find a moved dataset again by rewriting the ``path`` prefix of its rows.

Paths are stored absolute and normalised (no ``..``), and ``ingest_summary.json`` records each
dataset root. When the data moves, ``relocate(work, old, new)`` points every row under ``old``
at ``new``; the content sha1s still guard against a different file in the new place.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cxrad.errors import ManifestError
from cxrad.folderlock import writes_folder
from cxrad.labels import CLASSES
from cxrad.manifest.io import read_manifest, write_manifest
from cxrad.manifest.schema import STATUS_OK

logger = logging.getLogger(__name__)

MISSING_FILE = "missing file"


@dataclass
class Relocated:
    """What :func:`relocate` changed: rows moved, and how many of those files now exist."""

    rows: int
    found: int
    missing: int
    restored: int


@writes_folder("work", "cxrad ingest --relocate", ManifestError)
def relocate(work: str | Path, old: str | Path, new: str | Path) -> Relocated:
    """Rewrite the paths of rows under ``old`` to lie under ``new``, and save the manifest.

    Rows whose status was ``missing file``, that carry labels, and whose file now exists
    become ``ok`` again.

    Raises:
        ManifestError: ``new`` is not a folder, or no row lies under ``old`` (the message lists
            the roots that the manifest does hold).
    """
    new_root = Path(os.path.abspath(Path(new).expanduser()))
    if not new_root.is_dir():
        raise ManifestError(f"--relocate: {new} is not a folder; expected where the data is now")
    old_root = os.path.abspath(Path(old).expanduser()).rstrip(os.sep)
    df = read_manifest(work)
    paths = df["path"].astype("string")
    under = paths.str.startswith(old_root + os.sep).fillna(False).to_numpy()
    if not under.any():
        roots = sorted({os.path.dirname(p) for p in paths.dropna()})[:5]
        raise ManifestError(
            f"--relocate: no manifest row lies under {old_root}; its paths are under e.g. "
            + ", ".join(roots)
        )
    moved = paths[under].str.slice(len(old_root) + 1).map(lambda r: str(new_root / r))
    df.loc[under, "path"] = moved.astype("string")
    exists = moved.map(os.path.isfile).to_numpy(dtype=bool)
    restore = under.copy()
    labelled = df.loc[under, list(CLASSES)].notna().any(axis=1).to_numpy()
    restore[under] = exists & labelled & (df.loc[under, "status"] == MISSING_FILE).to_numpy()
    df.loc[restore, "status"] = STATUS_OK
    write_manifest(df, work)
    out = Relocated(
        rows=int(under.sum()),
        found=int(exists.sum()),
        missing=int((~exists).sum()),
        restored=int(restore.sum()),
    )
    logger.info("relocated %d rows from %s to %s", out.rows, old_root, new_root)
    return out
