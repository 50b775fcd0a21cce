"""Stage 3, split: group exact and near duplicate images into ``dup_group``; report conflicts.

Measured on ../shared/data (10,898 images, all pairs): the manifest's 64-bit ``phash`` cannot
tell a re-encoded copy from another patient: distinct X-rays come as close as 2 bits, and 271
distinct pairs lie at 4. The 256-bit phash (``hash_size=16``) separates them: re-encoded and
resized copies are 0-12 bits apart, re-crops and contrast edits 14-34, and the closest distinct
pairs 36-38 (look-alike pediatric films; random pairs: 0.1th percentile 80). So the 64-bit hash
only proposes candidates (within ``max_distance``, found by multi-index hashing), and each
candidate is confirmed on a 256-bit phash computed here from the file (``fine_distance``).
See docs/split.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd

from cxrad.labels import CLASSES
from cxrad.manifest import STATUS_OK
from cxrad.manifest.hashing import load_grey
from cxrad.parallel import map_chunks
from cxrad.progress import Progress
from cxrad.split.graph import components, same_value_edges
from cxrad.split.hamming import hamming, hex_to_words, near_pairs

logger = logging.getLogger(__name__)

MAX_DISTANCE = 8
"""Candidate radius on the 64-bit manifest phash (true duplicates measured at <= 8)."""
FINE_DISTANCE = 28
"""Confirmation radius on the 256-bit phash (duplicates <= 34, distinct films >= 36)."""
FINE_HASH_SIZE = 16
_CHUNK = 64


def fine_hash_file(path: str) -> str | None:
    """The 256-bit phash (hex) of one image, or None if it cannot be decoded."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return str(imagehash.phash(load_grey(path, data), hash_size=FINE_HASH_SIZE))
    except Exception as e:
        logger.debug("fine hash failed for %s: %s", path, e)
        return None


def _fine_chunk(paths: Sequence[str]) -> list[str | None]:
    return [fine_hash_file(p) for p in paths]


def fine_hashes(
    paths: Sequence[str],
    keys: Sequence[str],
    cache: str | Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[str | None]:
    """256-bit phashes for ``paths``, read from ``cache`` (keyed by ``keys``, e.g. sha1) when known.

    New hashes are appended to the cache file (Parquet, ``key``/``fine_phash``), so a second
    ``cxrad split`` with another seed decodes nothing.
    """
    known: dict[str, str] = {}
    cache = Path(cache) if cache else None
    if cache is not None and cache.is_file():
        c = pd.read_parquet(cache)
        known = dict(zip(c["key"], c["fine_phash"], strict=True))
    todo = sorted({(k, p) for k, p in zip(keys, paths, strict=True) if k not in known})
    total = len(todo)
    workers = max(1, workers or os.cpu_count() or 1)
    new = map_chunks(_fine_chunk, [p for _, p in todo], _CHUNK, workers, progress)
    fresh = {k: h for (k, _), h in zip(todo, new, strict=True) if h is not None}
    known.update(fresh)
    if cache is not None and fresh:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        pd.DataFrame({"key": list(known), "fine_phash": list(known.values())}).to_parquet(tmp)
        os.replace(tmp, cache)
    logger.info("fine hashes: %d decoded, %d from cache", total, len(keys) - total)
    return [known.get(k) for k in keys]


def assign_dup_groups(
    df: pd.DataFrame,
    max_distance: int = MAX_DISTANCE,
    fine_distance: int | None = FINE_DISTANCE,
    cache: str | Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Add ``dup_group`` (Int64): rows showing the same picture share a group.

    Exact duplicates (same ``sha1``) and near duplicates (``phash`` within ``max_distance``
    bits, confirmed by a 256-bit phash within ``fine_distance``) are joined by union-find, so
    grouping is transitive. Only ``ok`` rows take part; every row gets a group (singletons
    their own), numbered by smallest ``image_id`` so ids do not depend on row order.

    Example:
        >>> df = assign_dup_groups(read_manifest("work"), cache="work/cache/fine_phash.parquet")

    Args:
        df: a manifest with ``sha1`` and ``phash``.
        max_distance: candidate radius in bits on the 64-bit ``phash``.
        fine_distance: confirmation radius on the 256-bit phash; None trusts ``phash`` alone.
        cache: Parquet file remembering 256-bit hashes by sha1 between runs.
        workers: processes decoding images for the 256-bit hash.
        progress: ``progress(done, total)`` while decoding.

    Returns:
        A copy of ``df`` with ``dup_group``; ``df.attrs["dedup"]`` holds counts.
    """
    out = df.reset_index(drop=True).copy()
    n = len(out)
    ok = (out["status"] == STATUS_OK).to_numpy()
    sha = out["sha1"].where(ok)
    ei, ej = same_value_edges(sha)
    take = np.flatnonzero(ok & out["phash"].notna().to_numpy())
    words = hex_to_words(out["phash"].iloc[take].astype(str).tolist())
    ci, cj, _ = near_pairs(words, max_distance)
    ci, cj = take[ci], take[cj]
    same = sha.iloc[ci].to_numpy(dtype=object) == sha.iloc[cj].to_numpy(dtype=object)
    ci, cj = ci[~same], cj[~same]
    stats = {"candidate_pairs": len(ci), "near_pairs": len(ci), "fine_hash_failed": 0}
    if fine_distance is not None and len(ci):
        rows = np.unique(np.r_[ci, cj])
        keys = out["sha1"].iloc[rows].fillna(out["image_id"].iloc[rows]).astype(str).tolist()
        paths = out["path"].iloc[rows].astype(str).tolist()
        fine = fine_hashes(paths, keys, cache=cache, workers=workers, progress=progress)
        have = np.array([h is not None for h in fine])
        stats["fine_hash_failed"] = int((~have).sum())
        if (~have).any():
            logger.warning(
                "%d candidate images could not be decoded for the 256-bit hash; "
                "they join groups by exact sha1 only",
                int((~have).sum()),
            )
        pos = np.full(n, -1)
        pos[rows[have]] = np.arange(int(have.sum()))
        fw = hex_to_words([h for h in fine if h is not None])
        both = (pos[ci] >= 0) & (pos[cj] >= 0)
        ci, cj = ci[both], cj[both]
        d = hamming(fw[pos[ci]], fw[pos[cj]])
        ci, cj = ci[d <= fine_distance], cj[d <= fine_distance]
        stats["near_pairs"] = len(ci)
    groups = components(n, np.r_[ei, ci], np.r_[ej, cj], out["image_id"])
    out["dup_group"] = pd.array(groups, dtype="Int64")
    sizes = np.bincount(groups)
    stats.update(
        exact_pairs=len(ei),
        groups=int((sizes > 1).sum()),
        images_in_groups=int(sizes[groups][sizes[groups] > 1].size),
    )
    out.attrs["dedup"] = stats
    logger.info(
        "dedup: %d duplicate groups (%d images); %d exact links, %d near pairs of %d candidates",
        stats["groups"],
        stats["images_in_groups"],
        len(ei),
        stats["near_pairs"],
        stats["candidate_pairs"],
    )
    return out


def label_conflicts(df: pd.DataFrame) -> pd.DataFrame:
    """Duplicate groups whose members disagree: a class is 1 in one member and 0 in another.

    NaN (not annotated) never conflicts. One row per group: ``dup_group``, ``n_images``,
    ``image_ids``, ``sources`` (lists) and ``classes`` (the classes in conflict).
    """
    cols = ["dup_group", "n_images", "image_ids", "sources", "classes"]
    sizes = df.groupby("dup_group")["image_id"].transform("size")
    multi = df[(sizes > 1).to_numpy()]
    if multi.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    lab = multi[list(CLASSES)].astype("float64")
    g = multi["dup_group"].to_numpy()
    pos = (lab == 1).groupby(g).any()
    neg = (lab == 0).groupby(g).any()
    clash = pos & neg
    bad = clash.index[clash.any(axis=1)]
    rows = []
    for gid in bad:
        members = multi[g == gid].sort_values("image_id")
        rows.append(
            {
                "dup_group": int(gid),
                "n_images": len(members),
                "image_ids": members["image_id"].astype(str).tolist(),
                "sources": sorted(set(members["source"].astype(str))),
                "classes": [c for c in CLASSES if clash.loc[gid, c]],
            }
        )
    return pd.DataFrame(rows, columns=cols)
