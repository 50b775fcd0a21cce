"""Stage 3, split: ``cxrad split WORK``: dedup, split, write the manifest, exports and summary."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from cxrad.errors import SplitError
from cxrad.folderlock import writes_folder
from cxrad.labels import CLASSES, SPLITS
from cxrad.manifest import STATUS_OK, manifest_hash, read_manifest, write_manifest
from cxrad.manifest.image_docs import write_image_docs
from cxrad.progress import Progress
from cxrad.split.dedup import FINE_DISTANCE, MAX_DISTANCE, assign_dup_groups, label_conflicts
from cxrad.split.splitter import RATIOS, assign_splits, check_ratios

logger = logging.getLogger(__name__)

SUMMARY_NAME = "split_summary.json"
IMAGE_DOCS_NAME = "image_docs.csv"
CONFLICTS_NAME = "dup_conflicts.csv"
FINE_CACHE = Path("cache") / "fine_phash.parquet"


def leak_checks(df: pd.DataFrame) -> dict[str, int]:
    """How many patients and duplicate groups sit in more than one split (both must be 0)."""
    s = df[df["split"].notna()]
    pats = s.dropna(subset=["patient_id"]).groupby("patient_id")["split"].nunique()
    dups = s.groupby("dup_group")["split"].nunique() if "dup_group" in s else pd.Series([])
    return {
        "patients_in_several_splits": int((pats > 1).sum()),
        "dup_groups_in_several_splits": int((dups > 1).sum()),
    }


def duplicate_stats(df: pd.DataFrame, conflicts: pd.DataFrame) -> dict[str, Any]:
    """Duplicate groups: total, across sources, per source pair, and with conflicting labels."""
    ok = df[df["status"] == STATUS_OK]
    sources = ok.groupby("dup_group")["source"].agg(lambda s: tuple(sorted(set(s.astype(str)))))
    sizes = ok.groupby("dup_group").size()
    multi = sources[sizes > 1]
    pairs: dict[str, int] = {}
    for srcs in multi:
        for a, b in combinations(srcs, 2):
            pairs[f"{a} + {b}"] = pairs.get(f"{a} + {b}", 0) + 1
    return {
        "groups": len(multi),
        "images_in_groups": int(sizes[sizes > 1].sum()),
        "cross_source_groups": int(sum(len(s) > 1 for s in multi)),
        "source_pairs": dict(sorted(pairs.items())),
        "conflicting_groups": len(conflicts),
    }


def split_counts(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split: images, patients, and positive images per class."""
    out = {}
    for name in SPLITS:
        s = df[df["split"] == name]
        out[name] = {
            "images": len(s),
            "patients": int(s["patient_id"].nunique()),
            **{c: int((s[c] == 1).sum()) for c in CLASSES},
        }
    return out


@writes_folder("work", "cxrad split", SplitError)  # an ingest meanwhile would be lost
def split_work(
    work: str | Path,
    ratios: Sequence[float] = RATIOS,
    seed: int = 0,
    keep_official: bool = False,
    max_distance: int = MAX_DISTANCE,
    fine_distance: int | None = FINE_DISTANCE,
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Deduplicate and split ``WORK/manifest.parquet`` in place; write the exports; return the summary.

    Writes ``manifest.parquet`` (with ``dup_group``, ``split``), ``image_docs.csv``,
    ``dup_conflicts.csv`` and ``split_summary.json``.

    Example:
        >>> summary = split_work("work", ratios=(0.6, 0.3, 0.1), seed=0)
        >>> summary["leaks"]
        {'patients_in_several_splits': 0, 'dup_groups_in_several_splits': 0}

    Raises:
        ManifestError: no manifest in ``work``.
        SplitError: invalid ratios or distances.
    """
    work = Path(work)
    r = check_ratios(ratios)
    df = read_manifest(work)
    df = assign_dup_groups(
        df, max_distance, fine_distance, cache=work / FINE_CACHE, workers=workers, progress=progress
    )
    dedup = df.attrs.get("dedup", {})
    df = assign_splits(df, r, seed=seed, keep_official=keep_official)
    conflicts = label_conflicts(df)
    write_manifest(df, work)
    lines = write_image_docs(df, work / IMAGE_DOCS_NAME)
    conflicts.assign(
        **{c: conflicts[c].map(";".join) for c in ("image_ids", "sources", "classes")}
    ).to_csv(work / CONFLICTS_NAME, index=False)
    status = df["status"].where(df["status"] == STATUS_OK, df["status"].str.split(":").str[0])
    summary: dict[str, Any] = {
        "manifest_hash": manifest_hash(df),
        "ratios": dict(zip(("train", "test", "val"), map(float, r), strict=True)),
        "seed": seed,
        "keep_official": keep_official,
        "max_distance": max_distance,
        "fine_distance": fine_distance,
        "rows": len(df),
        "split_rows": int(df["split"].notna().sum()),
        "not_split": {k: int(v) for k, v in status[status != STATUS_OK].value_counts().items()},
        "counts": split_counts(df),
        "duplicates": {**duplicate_stats(df, conflicts), **dedup},
        "leaks": leak_checks(df),
        "image_docs_lines": lines,
    }
    if any(summary["leaks"].values()):  # impossible by construction; say so loudly if it happens
        logger.error("split leaks found: %s", summary["leaks"])
    tmp = work / f"{SUMMARY_NAME}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, work / SUMMARY_NAME)
    return summary
