"""Stage 3, split: group exact and near duplicate images into ``dup_group``; report conflicts.

Measured on ../shared/data (10,898 images, all pairs): the manifest's 64-bit ``phash`` cannot
tell a re-encoded copy from another patient: distinct X-rays come as close as 2 bits, and 271
distinct pairs lie at 4. The 256-bit phash (``hash_size=16``) separates them: re-encoded and
resized copies are 0-12 bits apart, re-crops and contrast edits 14-34, and the closest distinct
pairs 36-38 (look-alike pediatric films; random pairs: 0.1th percentile 80). So pairs are
searched on the 256-bit hash (``phash256``, computed once at ingest; decoded here only for
manifests from older versions) within ``fine_distance``, with a bounded nearest-neighbour search
(:mod:`cxrad.split.neighbours`), and also kept within ``max_distance`` on the 64-bit hash, as
before. See docs/split.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd

from cxrad.errors import SplitError
from cxrad.labels import CLASSES
from cxrad.manifest import STATUS_OK
from cxrad.manifest.hashing import FINE_HASH_SIZE, load_grey
from cxrad.parallel import map_chunks
from cxrad.progress import Progress
from cxrad.split.graph import components, same_value_edges
from cxrad.split.hamming import hamming, hex_to_words
from cxrad.split.neighbours import NearPairs, near_pairs, words_to_codes

logger = logging.getLogger(__name__)

MAX_DISTANCE = 8
"""Candidate radius on the 64-bit manifest phash (true duplicates measured at <= 8)."""
FINE_DISTANCE = 28
"""Confirmation radius on the 256-bit phash (duplicates <= 34, distinct films >= 36)."""
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


def fine_column(
    df: pd.DataFrame,
    rows: np.ndarray,
    cache: str | Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[str | None]:
    """The 256-bit phash of ``rows``: the manifest's ``phash256`` where present, else decoded.

    Manifests written before ingest stored ``phash256`` have no such column; those rows are
    decoded once here (and remembered in ``cache`` by sha1), with a warning to re-ingest.
    """
    col = df["phash256"] if "phash256" in df else pd.Series(pd.NA, index=df.index, dtype="string")
    fine = col.iloc[rows].astype(object).where(col.iloc[rows].notna(), None).tolist()
    miss = [k for k, h in enumerate(fine) if h is None]
    if miss:
        logger.warning(
            "%d images have no phash256 in the manifest (ingested by an older cxrad); "
            "decoding them for the 256-bit hash. Re-run `cxrad ingest` to skip this.",
            len(miss),
        )
        r = rows[miss]
        keys = df["sha1"].iloc[r].fillna(df["image_id"].iloc[r]).astype(str).tolist()
        paths = df["path"].iloc[r].astype(str).tolist()
        got = fine_hashes(paths, keys, cache=cache, workers=workers, progress=progress)
        for k, h in zip(miss, got, strict=True):
            fine[k] = h
    return fine


def near_duplicate_pairs(
    df: pd.DataFrame,
    take: np.ndarray,
    max_distance: int | None,
    fine_distance: int | None,
    **fine_kw: object,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Row pairs among ``take`` that show the same picture, with counts for the summary.

    With ``fine_distance``, candidates come from a bounded search on the 256-bit hash and are
    kept when the 64-bit ``phash`` is also within ``max_distance`` (None: no 64-bit check).
    Without it, the search runs on the 64-bit ``phash`` alone.
    """
    if fine_distance is None:
        if max_distance is None:
            raise SplitError("give max_distance, fine_distance, or both")
        words = hex_to_words(df["phash"].iloc[take].astype(str).tolist())
        found = near_pairs(words_to_codes(words), max_distance)
        ci, cj = take[found.i], take[found.j]
        stats = {"candidate_pairs": len(ci), "near_pairs": len(ci), "fine_hash_failed": 0}
        return ci, cj, stats | _search_stats(found)
    fine = fine_column(df, take, **fine_kw)  # type: ignore[arg-type]
    have = np.array([h is not None for h in fine], dtype=bool)
    if (~have).any():
        logger.warning(
            "%d images could not be decoded for the 256-bit hash; they join groups by sha1 only",
            int((~have).sum()),
        )
    rows = take[have]
    found = near_pairs(
        words_to_codes(hex_to_words([h for h in fine if h is not None])), fine_distance
    )
    ci, cj = rows[found.i], rows[found.j]
    stats = {"candidate_pairs": len(ci), "fine_hash_failed": int((~have).sum())}
    if max_distance is not None and len(ci):
        w = hex_to_words(df["phash"].iloc[rows].astype(str).tolist())
        pos = np.full(len(df), -1, dtype=np.int64)
        pos[rows] = np.arange(len(rows))
        near = hamming(w[pos[ci]], w[pos[cj]]) <= max_distance
        ci, cj = ci[near], cj[near]
    stats["near_pairs"] = len(ci)
    return ci, cj, stats | _search_stats(found)


def _search_stats(found: NearPairs) -> dict[str, int]:
    return {
        "identical_hash_pairs": found.identical_pairs,
        "distinct_hashes": found.distinct_hashes,
        "template_hashes": found.template_hashes,
    }


def assign_dup_groups(
    df: pd.DataFrame,
    max_distance: int | None = MAX_DISTANCE,
    fine_distance: int | None = FINE_DISTANCE,
    cache: str | Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Add ``dup_group`` (Int64): rows showing the same picture share a group.

    Exact duplicates (same ``sha1``) and near duplicates (256-bit ``phash256`` within
    ``fine_distance`` and 64-bit ``phash`` within ``max_distance``, found by a bounded
    nearest-neighbour search, see :mod:`cxrad.split.neighbours`) are joined by union-find, so
    grouping is transitive. Only ``ok`` rows take part; every row gets a group (singletons
    their own), numbered by smallest ``image_id`` so ids do not depend on row order.

    Example:
        >>> df = assign_dup_groups(read_manifest("work"), cache="work/cache/fine_phash.parquet")

    Args:
        df: a manifest with ``sha1``, ``phash`` and (from ingest) ``phash256``.
        max_distance: radius in bits on the 64-bit ``phash``; None skips that check.
        fine_distance: radius on the 256-bit phash; None searches the 64-bit ``phash`` alone.
        cache: Parquet file remembering decoded 256-bit hashes by sha1 (old manifests only).
        workers: processes decoding images for manifests without ``phash256``.
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
    ci, cj, stats = near_duplicate_pairs(
        out, take, max_distance, fine_distance, cache=cache, workers=workers, progress=progress
    )
    same = sha.iloc[ci].to_numpy(dtype=object) == sha.iloc[cj].to_numpy(dtype=object)
    ci, cj = ci[~same], cj[~same]
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
