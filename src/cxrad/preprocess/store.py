"""Stage 4, preprocess: the on-disk cache layout, crash-safe shards and commits, and ``open_cache``.

``WORK/cache/<config.key>/`` holds, once complete:

- ``data/00000.u8 ...``: fixed-size pack files of raw ``uint8`` rows (``S x S`` each), see
  :mod:`cxrad.preprocess.packfiles`; a grown manifest appends, so old files never change;
- ``index.parquet``: ``sha1 -> row``; rows of one run's new images are in sorted-sha1 order;
- ``failures.parquet``: ``image_id, path, sha1, reason`` for every ``ok`` manifest row that
  could not be cached;
- ``meta.json``: config, shape, ``rows_per_file``, counts and a ``pack_id`` fingerprint.

Work in progress lives in ``shards/``: each shard is ``<name>.u8`` + ``<name>.json``, each written
to a ``.tmp`` name and ``os.replace``d, the JSON last, so a shard exists whole or not at all.
A commit appends the new rows to the pack files (each shard is deleted once copied, so the
disk never holds the new images twice), writes the small files to ``.tmp``, then a journal
naming the renames; the renames are replayed on the next start if a ``kill -9`` lands between
them, and rows appended after the last commit are cut off. Nothing in the pack depends on
timing, chunking or worker count, so an interrupted run that resumes produces the same bytes
as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrad import atomic
from cxrad.errors import CacheError
from cxrad.preprocess import packfiles
from cxrad.preprocess.packfiles import PackedImages
from cxrad.preprocess.readback import read_json_object, read_table
from cxrad.preprocess.transform import PREPROCESS_VERSION, PreprocessConfig

logger = logging.getLogger(__name__)

INDEX = "index.parquet"
FAILURES = "failures.parquet"
META = "meta.json"
JOURNAL = "pack.journal.json"
SHARDS = "shards"
FAILURE_COLUMNS = {"image_id": "string", "path": "string", "sha1": "string", "reason": "string"}


def _checkpoint(step: str) -> None:
    """No-op hook called at every crash-relevant point; tests replace it to ``kill -9`` there."""


def cache_dir(work: str | Path, config: PreprocessConfig) -> Path:
    """``WORK/cache/<config.key>``."""
    return Path(work) / "cache" / config.key


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp name and ``os.replace``; a failure leaves no temp."""
    atomic.write_bytes(path, data, path.with_name(path.name + ".tmp"))


def check_free_space(directory: Path, n_new: int, size: int, chunk_size: int) -> int:
    """Refuse to start unless the disk holds ``n_new`` images' shards plus one while packing.

    Each new image is written once as a shard row, then copied into the pack files, and each
    shard is deleted as soon as it is copied, so the peak is the new images once, one shard
    more, and the small tables. Returns the bytes needed.

    Raises:
        DiskSpaceError: not enough free space; the message says how much is needed.
    """
    if n_new <= 0:
        return 0
    row = size * size
    needed = (n_new + chunk_size) * row + (1 << 20)
    atomic.require_free(directory, needed, f"preprocess: {n_new:,} new {size} px images")
    return needed


def discard_uncommitted(directory: Path) -> None:
    """After a failed commit: drop its ``.tmp`` files and pack rows now, not on the next start.

    A disk left full by a failed run should not stay full; what was dropped is redone on the
    next run (the shards already copied were deleted, their images are decoded again).
    """
    try:
        if not (directory / JOURNAL).exists():
            for name in (INDEX, FAILURES, META):
                (directory / (name + ".tmp")).unlink(missing_ok=True)
        recover(directory)
    except OSError:  # best effort: the next start recovers too
        logger.warning("could not clean up %s after a failed commit", directory, exc_info=True)


def canonical_json(obj: object) -> bytes:
    """Deterministic JSON bytes (sorted keys), so equal contents give equal files."""
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def recover(directory: Path) -> None:
    """Finish an interrupted commit, cut rows appended after the last commit, delete ``.tmp``."""
    journal = directory / JOURNAL
    if journal.is_file():
        logger.info("finishing an interrupted cache commit in %s", directory)
        apply_journal(directory, json.loads(journal.read_text()))
    meta = meta_or_rebuild(directory)
    if meta is None:
        packfiles.truncate_to(directory, 0, 1, 1)
    else:
        packfiles.truncate_to(directory, int(meta["n"]), int(meta["size"]), _per_file(meta))
    for d in (directory, directory / SHARDS):
        if d.is_dir():
            for tmp in d.glob("*.tmp"):
                tmp.unlink()


def apply_journal(directory: Path, journal: Mapping[str, list]) -> None:
    """Replay the renames and shard deletions of a commit; safe to repeat after a crash."""
    for src, dst in journal["replace"]:
        if (directory / src).exists():
            os.replace(directory / src, directory / dst)
            _checkpoint("replaced")
    for name in journal["delete_shards"]:
        for suffix in (".json", ".u8"):
            (directory / SHARDS / (name + suffix)).unlink(missing_ok=True)
    (directory / JOURNAL).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- shards


def shard_name(sha1s: Sequence[str]) -> str:
    """A shard is named by the items it was asked to do, so one chunk never gets two names."""
    return hashlib.sha1("\n".join(sha1s).encode()).hexdigest()[:16]


def write_shard(
    directory: Path, name: str, ok: list[str], images: np.ndarray, failed: dict[str, str]
) -> None:
    """Write one finished chunk: pixels first, then the JSON that marks it complete."""
    shards = directory / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(shards / f"{name}.u8", np.ascontiguousarray(images).tobytes())
    record = {"ok": ok, "failed": failed, "size": int(images.shape[-1]) if images.ndim == 3 else 0}
    atomic_write_bytes(shards / f"{name}.json", canonical_json(record))


@dataclass
class Shard:
    """A complete shard on disk: ``ok[i]`` is row ``i`` of its pixel file (read on demand)."""

    name: str
    ok: list[str]
    failed: dict[str, str]
    path: Path
    size: int

    def image(self, i: int) -> np.ndarray:
        """Row ``i``, read with one short-lived open file."""
        n = self.size * self.size
        return np.fromfile(self.path, np.uint8, count=n, offset=i * n).reshape(self.size, -1)

    def delete(self) -> None:
        for suffix in (".json", ".u8"):
            self.path.with_suffix(suffix).unlink(missing_ok=True)


def read_shards(directory: Path, size: int) -> list[Shard]:
    """Every complete shard (JSON present and pixel file of the right length), by name."""
    out: list[Shard] = []
    shards = directory / SHARDS
    if not shards.is_dir():
        return out
    for js in sorted(shards.glob("*.json")):
        rec = json.loads(js.read_text())
        data = js.with_suffix(".u8")
        n = len(rec["ok"])
        if not data.is_file() or data.stat().st_size != n * size * size:
            logger.warning("ignoring incomplete shard %s", js.stem)
            continue
        out.append(Shard(js.stem, rec["ok"], rec["failed"], data, size))
    return out


# ----------------------------------------------------------------------------- the pack


@dataclass
class Cache:
    """An opened cache: every image (read-only, bounded open files) plus its sha1 index.

    Attributes:
        images: :class:`PackedImages`, an ``(N, S, S)`` ``uint8`` array-like over the pack files.
        index: DataFrame with columns ``sha1`` and ``row``.
        failures: DataFrame ``image_id, path, sha1, reason``.
        config: the :class:`PreprocessConfig` the images were made with.
        path: the cache folder.
    """

    images: PackedImages
    index: pd.DataFrame
    failures: pd.DataFrame
    config: PreprocessConfig
    path: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows_for(self, df: pd.DataFrame) -> np.ndarray:
        """Row of ``images`` for each manifest row, by content sha1; ``-1`` when not cached.

        Rows whose ``sha1`` is null are hashed from their file on the fly.
        """
        sha1 = df["sha1"].astype("string")
        if sha1.isna().any():
            from cxrad.preprocess.cache import file_sha1

            filled = [
                s if not pd.isna(s) else _try_sha1(file_sha1, p)
                for s, p in zip(sha1, df["path"], strict=True)
            ]
            sha1 = pd.Series(filled, index=df.index, dtype="string")
        lookup = pd.Series(self.index["row"].to_numpy(), index=self.index["sha1"].to_numpy())
        rows = sha1.map(lookup)
        return rows.fillna(-1).to_numpy(dtype=np.int64)


def _try_sha1(fn, path: object) -> str | None:  # type: ignore[no-untyped-def]
    try:
        return fn(str(path))
    except OSError:
        return None


def read_meta(directory: Path) -> dict | None:
    """The committed pack's ``meta.json``, or None when there is no complete pack.

    Raises:
        CacheError: the file is there but damaged (not a JSON object with ``n`` and ``size``).
    """
    path = directory / META
    if not path.is_file() or (directory / JOURNAL).exists():
        return None
    return read_json_object(path, ("n", "size"))


def meta_or_rebuild(directory: Path) -> dict | None:
    """:func:`read_meta`, or None (rebuild the pack from the shards) when it is damaged."""
    try:
        return read_meta(directory)
    except CacheError as e:
        logger.warning("ignoring the damaged cache pack (%s); rebuilding it from the shards", e)
        return None


def open_cache(work: str | Path, config: PreprocessConfig | None = None) -> Cache:
    """Open the cache of ``work`` made with ``config`` (default ``PreprocessConfig()``).

    Raises:
        CacheError: no complete cache for this config, or its files disagree; says to run
            ``cxrad preprocess WORK`` with the matching options.

    Example:
        >>> cache = open_cache("work", PreprocessConfig(size=256))  # doctest: +SKIP
        >>> x = cache.images[cache.rows_for(df)[0]]  # (256, 256) uint8
    """
    config = config or PreprocessConfig()
    directory = cache_dir(work, config)
    hint = f"run `{config.command(work)}`"
    try:
        meta = read_meta(directory)
    except CacheError as e:
        raise CacheError(f"{e}; {hint} (it rebuilds the pack)") from e
    if meta is None:
        raise CacheError(f"no complete preprocessing cache at {directory}; {hint}")
    n, s = int(meta["n"]), int(meta["size"])
    per_file = _per_file(meta)
    bad = packfiles.present(directory, n, s, per_file)
    if bad:
        raise CacheError(f"{directory}: pack files {bad[:3]} are missing or short; {hint}")
    images = PackedImages(directory, n, s, per_file)
    index, failures = (read_table(directory / name, hint) for name in (INDEX, FAILURES))
    if len(index) != n:
        raise CacheError(f"{directory / INDEX} has {len(index)} rows, expected {n}; {hint}")
    return Cache(images=images, index=index, failures=failures, config=config, path=directory)


def pack_id(ok_sha1s: Sequence[str], failures: pd.DataFrame, config: PreprocessConfig) -> str:
    """Fingerprint of a pack's contents: which images, which failures, which config."""
    h = hashlib.sha1(config.key.encode())
    h.update("\n".join(ok_sha1s).encode())
    for row in failures.astype("string").fillna("<NA>").itertuples(index=False):
        h.update(("\x1f".join(row) + "\x1e").encode())
    return h.hexdigest()[:16]


def _per_file(meta: Mapping[str, object]) -> int:
    return int(meta.get("rows_per_file") or packfiles.rows_per_file(int(meta["size"])))  # type: ignore[arg-type]


def commit(
    directory: Path,
    config: PreprocessConfig,
    old_sha1s: Sequence[str],
    new_sha1s: Sequence[str],
    sources: Mapping[str, tuple[Shard, int]],
    failures: pd.DataFrame,
    per_file: int,
    leftover_shards: Sequence[Shard] = (),
) -> int:
    """Append ``new_sha1s`` after the committed rows, then commit index, failures and meta.

    Args:
        old_sha1s: the committed rows, in row order (their bytes are not touched).
        new_sha1s: sorted sha1s to append, one row each.
        sources: ``sha1 -> (shard, row)`` for every new image; read one image at a time, and
            each shard is deleted as soon as its last image is copied.
        failures: the failures table, already sorted.
        per_file: rows per pack file.
        leftover_shards: shards whose images are not needed (already cached): deleted.

    Returns:
        Pixel bytes written to the pack files.
    """
    try:
        return _commit(
            directory, config, old_sha1s, new_sha1s, sources, failures, per_file, leftover_shards
        )
    except BaseException:
        discard_uncommitted(directory)
        raise


def _commit(
    directory: Path,
    config: PreprocessConfig,
    old_sha1s: Sequence[str],
    new_sha1s: Sequence[str],
    sources: Mapping[str, tuple[Shard, int]],
    failures: pd.DataFrame,
    per_file: int,
    leftover_shards: Sequence[Shard],
) -> int:
    s = config.size
    remaining: dict[str, int] = {}
    for sha in new_sha1s:
        sh = sources[sha][0]
        remaining[sh.name] = remaining.get(sh.name, 0) + 1
    writer = packfiles.PackWriter(directory, len(old_sha1s), s, per_file)
    for sha in new_sha1s:
        sh, row = sources[sha]
        writer.append(sh.image(row))
        remaining[sh.name] -= 1
        if not remaining[sh.name]:
            sh.delete()  # copied: free its disk now, not after the whole pack
    writer.close()
    all_sha1s = [*old_sha1s, *new_sha1s]
    index = pd.DataFrame(
        {"sha1": pd.array(all_sha1s, dtype="string"), "row": np.arange(len(all_sha1s))}
    )
    index.to_parquet(directory / (INDEX + ".tmp"), index=False)
    failures.astype(FAILURE_COLUMNS).to_parquet(directory / (FAILURES + ".tmp"), index=False)
    n = len(all_sha1s)
    meta = {
        "config": config.to_dict(),
        "key": config.key,
        "version": PREPROCESS_VERSION,
        "n": n,
        "size": s,
        "shape": [n, s, s],
        "dtype": "uint8",
        "rows_per_file": per_file,
        "files": packfiles.file_rows(n, per_file),
        "n_failures": len(failures),
        "pack_id": pack_id(all_sha1s, failures, config),
    }
    atomic_write_bytes(directory / (META + ".tmp"), canonical_json(meta))
    _checkpoint("pack-written")
    journal = {
        "replace": [[name + ".tmp", name] for name in (INDEX, FAILURES, META)],
        "delete_shards": sorted(sh.name for sh in leftover_shards),
    }
    atomic_write_bytes(directory / JOURNAL, canonical_json(journal))
    _checkpoint("journal")
    apply_journal(directory, journal)
    return writer.bytes_written
