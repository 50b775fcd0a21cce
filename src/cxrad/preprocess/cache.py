"""Stage 4, preprocess: ``preprocess_work`` caches every ``ok`` manifest row, in parallel, resumably.

Each unique image (by content sha1) is decoded and resized once with :func:`prepare`. Work is
cut into fixed-size chunks of the sorted, not-yet-cached sha1s; each worker process writes one
shard per chunk; at the end the new images are appended to the cache's fixed-size pack files
(a grown manifest writes only its new images) and each shard is deleted once copied. Only one
chunk of pixels per worker is ever in memory, and only a few files are open at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrad import folderlock
from cxrad.errors import CacheError, ImageReadError
from cxrad.image import MAX_PIXELS, file_sha1, read_image, sha1_bytes
from cxrad.manifest import STATUS_OK, read_manifest
from cxrad.parallel import process_pool
from cxrad.preprocess import packfiles, store
from cxrad.preprocess.normalise import normalise_image
from cxrad.preprocess.transform import PreprocessConfig, apply_crop, resize
from cxrad.progress import Progress

logger = logging.getLogger(__name__)

CHUNK_SIZE = 64
"""Images per shard: the unit of parallel work and of resume (64 x 256 x 256 = 4 MB)."""


@dataclass
class PreprocessSummary:
    """What a :func:`preprocess_work` run did.

    Attributes:
        cache_dir: the cache folder.
        key: the config key (folder name).
        n_rows: ``ok`` manifest rows considered.
        n_images: unique images in the cache now.
        n_new: images decoded and cached by this run.
        n_already: images that were cached before this run.
        n_failed: ``ok`` manifest rows that could not be cached (see ``failures.parquet``).
        failed_by_reason: ``n_failed`` split by reason ("truncated image", "not an image" ...).
        bytes: size of the pack files (``data/*.u8``).
        bytes_written: pixel bytes this run appended to them (a grown manifest: only the new).
        seconds: wall time.
        repacked: whether the pack was (re)written.
    """

    cache_dir: Path
    key: str
    n_rows: int = 0
    n_images: int = 0
    n_new: int = 0
    n_already: int = 0
    n_failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    repacked: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        d["cache_dir"] = str(self.cache_dir)
        return d


def _hash_or_none(path: str) -> str | None:
    try:
        return file_sha1(path)
    except OSError:
        return None


def process_chunk(
    directory: str,
    items: list[tuple[str, str]],
    size: int,
    mode: str,
    max_pixels: int,
    crop: str = "none",
    normalise: str = "none",
) -> tuple[str, int, dict[str, str]]:
    """Worker: prepare every ``(sha1, path)`` of one chunk and write its shard.

    Each file is read once; its bytes are hashed (a file changed since ingest is a failure, not
    a silently different image) and decoded from memory.

    Returns:
        ``(shard name, images cached, {sha1: failure reason})``.
    """
    config = PreprocessConfig(size=size, mode=mode, crop=crop, normalise=normalise)  # type: ignore[arg-type]
    name = store.shard_name([s for s, _ in items])
    out = np.zeros((len(items), size, size), np.uint8)
    ok: list[str] = []
    failed: dict[str, str] = {}
    for sha, path in items:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            failed[sha] = f"missing file: {e.strerror or e}"
            continue
        actual = sha1_bytes(data)
        if actual != sha:
            failed[sha] = (
                f"changed since ingest: content sha1 {actual[:12]} != manifest {sha[:12]}; "
                "rerun `cxrad ingest`"
            )
            continue
        try:
            pixels = read_image(data, max_pixels, native=True, name=path).pixels
            out[len(ok)] = normalise_image(
                resize(apply_crop(pixels, config), config.size, config.mode), config.normalise
            )
        except ImageReadError as e:
            failed[sha] = _strip_path(str(e), path)
            continue
        except Exception as e:  # one file never stops the stage: it becomes a failure row
            logger.debug("preprocessing %s failed", path, exc_info=True)
            failed[sha] = f"unreadable: {type(e).__name__}: {str(e)[:160]}"
            continue
        ok.append(sha)
    store.write_shard(Path(directory), name, ok, out[: len(ok)], failed)
    return name, len(ok), failed


def _strip_path(reason: str, path: str) -> str:
    """Reasons are stored beside the path; keep them short and groupable."""
    return reason.replace(f": {path}", "", 1)


def preprocess_work(
    work: str | Path,
    config: PreprocessConfig | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    chunk_size: int = CHUNK_SIZE,
    max_pixels: int = MAX_PIXELS,
    file_bytes: int = packfiles.FILE_BYTES,
) -> PreprocessSummary:
    """Cache every ``ok`` row of ``WORK/manifest.parquet`` into ``WORK/cache/<config.key>/``.

    Rerunning with the same config does no work; a grown manifest adds only the new images;
    a run killed at any point resumes to the same bytes. Rows that cannot be decoded go to
    ``failures.parquet`` with a reason, and the run goes on.

    Args:
        work: the work folder (with ``manifest.parquet``).
        config: size and mode (default ``PreprocessConfig()``).
        workers: processes (default ``os.cpu_count()``); 1 runs in this process.
        progress: ``progress(done, total)`` per finished chunk.
        chunk_size: images per shard.
        max_pixels: decompression-bomb guard per image.
        file_bytes: target size of one pack file for a new cache (an existing one keeps its own).

    Raises:
        ManifestError: no manifest. CacheError: another run holds the cache.

    Example:
        >>> s = preprocess_work("work", PreprocessConfig(size=256), workers=8)  # doctest: +SKIP
        >>> s.n_new, s.n_failed
    """
    t0 = time.perf_counter()
    config = config or PreprocessConfig()
    workers = max(1, workers or os.cpu_count() or 1)
    if chunk_size < 1:
        raise CacheError(f"chunk_size must be >= 1, got {chunk_size}")
    directory = store.cache_dir(work, config)
    df = read_manifest(work)
    rows = df.loc[df["status"] == STATUS_OK, ["image_id", "path", "sha1"]].copy()
    summary = PreprocessSummary(cache_dir=directory, key=config.key, n_rows=len(rows))
    with folderlock.locked(directory):
        store.recover(directory)
        _fill_sha1(rows, workers)
        wanted = rows.dropna(subset=["sha1"]).sort_values(["sha1", "image_id"])
        unique = wanted.drop_duplicates("sha1")  # sorted by sha1: chunks are deterministic
        first_path = dict(zip(unique["sha1"].tolist(), unique["path"].tolist(), strict=True))

        meta = store.meta_or_rebuild(directory)
        old_sha1s: list[str] = []
        known_failed: dict[str, str] = {}
        if meta is not None:
            try:
                pack = store.open_cache(work, config)
                old_sha1s = pack.index["sha1"].astype(str).tolist()
                known_failed.update(
                    pack.failures.dropna(subset=["sha1"]).set_index("sha1")["reason"]
                )
            except CacheError as e:  # damaged by hand: rebuild rather than refuse
                logger.warning("ignoring the damaged cache pack (%s); rebuilding", e)
                meta = None
        per_file = (
            int(meta["rows_per_file"])
            if meta and meta.get("rows_per_file")
            else (packfiles.rows_per_file(config.size, file_bytes))
        )
        packed = set(old_sha1s)
        sources: dict[str, tuple[store.Shard, int]] = {}
        shards = store.read_shards(directory, config.size)
        for sh in shards:
            for i, sha in enumerate(sh.ok):
                sources.setdefault(sha, (sh, i))
            known_failed.update(sh.failed)
        # A vanished file may come back: retry those instead of remembering them forever.
        known_failed = {k: v for k, v in known_failed.items() if not v.startswith("missing file")}

        todo = [
            s for s in first_path if s not in packed and s not in sources and s not in known_failed
        ]
        summary.n_already = sum(1 for s in first_path if s in packed or s in sources)
        chunks = [
            [(s, str(first_path[s])) for s in todo[i : i + chunk_size]]
            for i in range(0, len(todo), chunk_size)
        ]
        logger.info(
            "%d unique images: %d cached, %d to do in %d chunks",
            len(first_path),
            summary.n_already,
            len(todo),
            len(chunks),
        )
        store.check_free_space(directory, len(todo), config.size, chunk_size)
        new_names = _run_chunks(directory, chunks, config, workers, max_pixels, progress, len(todo))
        if new_names:
            for sh in store.read_shards(directory, config.size):
                if sh.name in new_names:
                    shards.append(sh)
                    for i, sha in enumerate(sh.ok):
                        sources.setdefault(sha, (sh, i))
                        summary.n_new += 1
                    known_failed.update(sh.failed)

        new_sha1s = sorted(s for s in first_path if s not in packed and s in sources)
        cached = packed | set(new_sha1s)
        failures = _failures_table(rows, {k: v for k, v in known_failed.items() if k not in cached})
        summary.n_images = sum(1 for s in first_path if s in cached)
        summary.n_failed = len(failures)
        summary.failed_by_reason = dict(
            sorted(Counter(r.split(":")[0] for r in failures["reason"]).items())
        )
        used = {sources[s][0].name for s in new_sha1s}
        leftover = [sh for sh in shards if sh.name not in used]
        new_id = store.pack_id([*old_sha1s, *new_sha1s], failures, config)
        if meta is None or meta.get("pack_id") != new_id:
            summary.bytes_written = store.commit(
                directory, config, old_sha1s, new_sha1s, sources, failures, per_file, leftover
            )
            summary.repacked = True
        else:
            store.apply_journal(
                directory, {"replace": [], "delete_shards": sorted(sh.name for sh in leftover)}
            )
    data = directory / packfiles.DATA
    summary.bytes = sum(p.stat().st_size for p in data.glob("*.u8")) if data.is_dir() else 0
    summary.seconds = time.perf_counter() - t0
    logger.debug(
        "cache %s: %d images (%d new), %d failed",
        directory,
        summary.n_images,
        summary.n_new,
        summary.n_failed,
    )
    return summary


def _fill_sha1(rows: pd.DataFrame, workers: int) -> None:
    missing = rows["sha1"].isna().to_numpy()
    if not missing.any():
        return
    paths = [str(p) for p in rows.loc[missing, "path"]]
    logger.info("hashing %d files without a sha1 in the manifest", len(paths))
    if workers > 1 and len(paths) > 64:
        with _pool(workers) as ex:
            hashes = list(ex.map(_hash_or_none, paths, chunksize=32))
    else:
        hashes = [_hash_or_none(p) for p in paths]
    rows.loc[missing, "sha1"] = pd.array(hashes, dtype="string")


def _failures_table(rows: pd.DataFrame, failed: dict[str, str]) -> pd.DataFrame:
    """One failure row per ``ok`` manifest row that is not cached, sorted by image_id."""
    no_file = rows["sha1"].isna()
    reasons = rows["sha1"].map(lambda s: failed.get(s) if isinstance(s, str) else None)
    reasons = reasons.astype("object").where(~no_file, "missing file: cannot read it to hash")
    out = rows.assign(reason=reasons).dropna(subset=["reason"])
    out = out[["image_id", "path", "sha1", "reason"]].sort_values("image_id")
    return out.reset_index(drop=True).astype(store.FAILURE_COLUMNS)


def _pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: safe even when the caller has threads (torch); spawn would be slower to start.
    return process_pool(workers, multiprocessing.get_context("forkserver"))


def _run_chunks(
    directory: Path,
    chunks: list[list[tuple[str, str]]],
    config: PreprocessConfig,
    workers: int,
    max_pixels: int,
    progress: Progress | None,
    total: int,
) -> set[str]:
    """Run every chunk (in this process when ``workers == 1``); return the shard names written."""
    done, names = 0, set()
    if progress:
        progress(0, total)
    args = (str(directory), config.size, config.mode, max_pixels, config.crop, config.normalise)
    if workers == 1 or len(chunks) <= 1:
        for items in chunks:
            name, _, _ = process_chunk(args[0], items, *args[1:])
            names.add(name)
            done += len(items)
            store._checkpoint("shard")
            folderlock.refresh(directory)
            if progress:
                progress(done, total)
        return names
    # Keep at most 2 chunks per worker queued, so memory stays flat on huge manifests.
    with _pool(workers) as ex:
        pending: dict[Future, int] = {}
        it = iter(chunks)
        while True:
            while len(pending) < 2 * workers:
                items = next(it, None)
                if items is None:
                    break
                pending[ex.submit(process_chunk, args[0], items, *args[1:])] = len(items)
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                n = pending.pop(fut)
                names.add(fut.result()[0])
                done += n
                store._checkpoint("shard")
                folderlock.refresh(directory)
                if progress:
                    progress(done, total)
    return names
