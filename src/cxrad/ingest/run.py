"""Stage 1, ingest: run adapters over several roots, merge, hash, and summarise."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrad.errors import IngestError
from cxrad.ingest.base import subdirs, unlisted_files
from cxrad.ingest.provenance import apply_rules, label_counts, rules_table
from cxrad.ingest.registry import (
    check_folder,
    find_datasets,
    find_format,
    get_adapter,
    unknown_layout_message,
)
from cxrad.labels import CLASSES
from cxrad.manifest import STATUS_OK, empty_manifest, validate
from cxrad.progress import Progress

logger = logging.getLogger(__name__)


def _plan(roots: Sequence[Path], fmt: str | None, notes: list[str]) -> list[tuple[Path, str]]:
    """``(dataset folder, adapter name)`` for every dataset to read, given roots first.

    Rules: a missing or empty root, or an unrecognised folder without sub-folders, is an
    error. An unrecognised folder with sub-folders is searched one level down; if nothing is
    found there it is an error when it is the only root, else it is skipped with a note (so a
    shell glob like ``../shared/data/*`` may include ``fixtures/`` and ``README.md``).
    """
    direct: list[tuple[Path, str]] = []
    nested: list[tuple[Path, str]] = []
    for root in roots:
        if Path(root).is_file() and len(roots) > 1:
            notes.append(f"{root}: a file, not a dataset folder; skipped")
            continue
        path = check_folder(root)
        if fmt is not None:
            direct.append((path, get_adapter(fmt).name))
            continue
        name = find_format(path)
        if name is not None:
            direct.append((path, name))
            continue
        if not subdirs(path) or len(roots) == 1:
            found, skipped = find_datasets(path) if subdirs(path) else ([], [])
            if not found:
                raise IngestError(unknown_layout_message(path))
        else:
            found, skipped = find_datasets(path)
            if not found:
                notes.append(f"{path}: no known layout in it or its sub-folders; skipped")
                continue
        listed = ", ".join(f"{p.name} ({n})" for p, n in found)
        notes.append(f"{path}: not a dataset itself; ingested its sub-folders {listed}")
        notes += [f"{s}: no known layout; skipped" for s in skipped]
        nested += found
    if not direct and not nested:
        raise IngestError("no dataset folder given; pass at least one DIR")
    return direct + nested


def _rekey(df: pd.DataFrame, folder: Path, taken: set[str]) -> pd.DataFrame:
    """Make ids unique when two folders hold the same dataset (e.g. two copies of TBX11K)."""
    for n in range(1, 1000):
        tag = folder.name if n == 1 else f"{folder.name}.{n}"
        ids = df["image_id"].str.replace(r"^([^/]+)/", rf"\1@{tag}/", regex=True)
        if not taken.intersection(ids):
            out = df.copy()
            out["image_id"] = ids.astype("string")
            return out
    raise IngestError(f"cannot make image ids of {folder} unique")  # pragma: no cover


def ingest(
    roots: str | Path | Sequence[str | Path],
    fmt: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    hash_images: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read every dataset folder in ``roots`` into one manifest, hash it, and summarise it.

    A root may be a dataset folder or a parent of several (searched one level deep).

    Example:
        >>> df, summary = ingest(["../shared/data/nih-chestxray14"], hash_images=False)
        >>> summary["per_source"]["nih"]["rows"]
        1289

    Args:
        roots: dataset folders (or parents of dataset folders).
        fmt: force this adapter for every root instead of detecting the layout.
        workers: hashing processes (default: all CPUs).
        progress: ``progress(done, total)`` while hashing.
        hash_images: fill ``sha1`` and ``phash`` (reads every image once).

    Returns:
        ``(manifest, summary)``; the summary counts rows per source, class and status.

    Raises:
        IngestError: a root is missing, empty or unrecognised, or ``fmt`` is unknown.
    """
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if not roots:
        raise IngestError("no dataset folders given; pass at least one DIR")
    if fmt is not None:
        get_adapter(fmt)  # fail fast on a typo, before reading anything
    notes: list[str] = []
    plan = _plan([Path(r) for r in roots], fmt, notes)
    frames: list[pd.DataFrame] = []
    taken: set[str] = set()
    done_folders: set[Path] = set()
    per_root = []
    for folder, name in plan:
        if folder.resolve() in done_folders:
            notes.append(f"{folder}: given twice; read once")
            continue
        done_folders.add(folder.resolve())
        df = get_adapter(name).read(folder)
        notes += df.attrs.get("notes", [])  # label-file precedence, duplicates, empty ids
        logger.debug("%s: %d rows from %s", name, len(df), folder)
        if taken.intersection(df["image_id"]):
            df = _rekey(df, folder, taken)
            notes.append(f"{folder}: ids overlap another {name} folder; prefixed with its name")
        taken.update(df["image_id"])
        unlisted = unlisted_files(folder, df["path"].dropna().astype(str))
        per_root.append(
            {"root": str(folder), "format": name, "rows": len(df), "ok": _n_ok(df),
             "not_ingested": unlisted}
        )  # fmt: skip
        unexpected = {
            r: n for r, n in unlisted["by_reason"].items() if r != "label or metadata file"
        }
        if unexpected:
            first, n = next(iter(unexpected)), sum(unexpected.values())
            notes.append(
                f"{folder} ({name}): {n} file{'' if n == 1 else 's'} left out of the manifest ("
                + ", ".join(f"{r}: {n}" for r, n in unexpected.items())
                + f"); e.g. {unlisted['examples'][first][0]}"
            )
        if len(df) and not _n_ok(df):
            notes.append(f"{folder} ({name}): no usable image; every row has a reason status")
        frames.append(df)
    frames = [f for f in frames if len(f)]
    manifest = pd.concat(frames, ignore_index=True) if frames else empty_manifest()
    manifest, filled = apply_rules(manifest)
    validate(manifest)
    if hash_images:
        from cxrad.manifest.hashing import add_hashes

        manifest = add_hashes(manifest, workers=workers, progress=progress)
    summary = summarize(manifest)
    summary.update(roots=per_root, notes=notes, hashed=hash_images)
    summary["label_provenance"] = {
        "rules": rules_table(),
        "set_by_rules": filled,
        "counts": label_counts(manifest[manifest["status"] == STATUS_OK]),
    }
    return manifest, summary


def _n_ok(df: pd.DataFrame) -> int:
    return int((df["status"] == STATUS_OK).sum())


def _positives(df: pd.DataFrame) -> dict[str, int]:
    labels = df[list(CLASSES)].to_numpy(dtype=np.float64)
    return {c: int(n) for c, n in zip(CLASSES, np.nansum(labels == 1, axis=0), strict=True)}


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for ``ingest_summary.json``: rows, ok rows, per source/class/status, rejects.

    Class counts are positives (label 1) among ``ok`` rows only: what training can use.
    """
    ok = df[df["status"] == STATUS_OK]
    per_source = {}
    for src, g in df.groupby("source", sort=True):
        g_ok = g[g["status"] == STATUS_OK]
        per_source[str(src)] = {
            "rows": len(g),
            "ok": len(g_ok),
            "positives": {c: n for c, n in _positives(g_ok).items() if n},
            "rejects": {str(k): int(v) for k, v in g.loc[g["status"] != STATUS_OK, "status"].value_counts().items()},
        }  # fmt: skip
    statuses = df["status"].value_counts()
    out: dict[str, Any] = {
        "rows": len(df),
        "ok": len(ok),
        "per_source": per_source,
        "per_class": _positives(ok),
        "per_status": {str(k): int(v) for k, v in statuses.items()},
        "rejects": {str(k): int(v) for k, v in statuses.items() if k != STATUS_OK},
    }
    sha = ok["sha1"].dropna()
    if len(sha):
        sizes = sha.value_counts()
        out["exact_duplicate_groups"] = int((sizes > 1).sum())
        out["exact_duplicate_rows"] = int(sizes[sizes > 1].sum())
    return out
