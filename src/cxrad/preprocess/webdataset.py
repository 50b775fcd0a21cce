"""Stage 4, preprocess: the cache as WebDataset tar shards, for streaming to many machines.

``cxrad preprocess WORK --format webdataset`` writes, per split, ``<split>-000000.tar`` ...
into ``WORK/streaming/<config.key>/``, each sample ``img.npy`` (the ``uint8`` image at the
model size), ``labels.npy`` (17 float32, NaN = not annotated, in :data:`CLASSES` order),
``id.txt`` (``image_id``) and ``sha1.txt``, plus ``index.json`` (shards and sample counts).
Tar shards are plain files: copy them to any node's disk, or serve them from object storage
(``https://``, ``pipe:aws s3 cp ... -``), which WebDataset reads without random access.

WebDataset, not LitData: LitData needs torchvision, which needs a newer torch than the
``torch==2.13.0`` this project pins.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from cxrad.errors import CacheError
from cxrad.labels import CLASSES, SPLITS
from cxrad.manifest import STATUS_OK, manifest_hash, read_manifest
from cxrad.preprocess.store import cache_dir, canonical_json, open_cache
from cxrad.preprocess.transform import PreprocessConfig

logger = logging.getLogger(__name__)

STREAMING = "streaming"
INDEX = "index.json"
SHARD_SIZE = 1000
"""Samples per tar shard (1,000 images of 256 px: about 66 MB)."""


def streaming_dir(work: str | Path, config: PreprocessConfig) -> Path:
    """``WORK/streaming/<config.key>``."""
    return Path(work) / STREAMING / cache_dir(work, config).name


def write_webdataset(
    work: str | Path,
    config: PreprocessConfig,
    out: str | Path | None = None,
    shard_size: int = SHARD_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the cached images of every split as tar shards; return the index.

    Samples are shuffled once (seeded) before writing, so each shard mixes sources and a
    small read-time shuffle buffer is enough. Needs a complete cache (``cxrad preprocess``).
    """
    import webdataset as wds

    out = Path(out) if out else streaming_dir(work, config)
    out.mkdir(parents=True, exist_ok=True)
    cache = open_cache(work, config)
    df = read_manifest(work)
    df = df[(df["status"] == STATUS_OK) & df.get("split", None).notna()].reset_index(drop=True)
    rows = cache.rows_for(df)
    index: dict[str, Any] = {
        "config": config.to_dict(),
        "classes": list(CLASSES),
        "manifest_hash": manifest_hash(df),
        "splits": {},
    }
    for split in SPLITS:
        take = np.flatnonzero((df["split"] == split).to_numpy() & (rows >= 0))
        take = take[np.random.default_rng(seed).permutation(len(take))]
        for old in out.glob(f"{split}-*.tar"):
            old.unlink()
        labels = df[list(CLASSES)].to_numpy(dtype=np.float32)
        with wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=shard_size, verbose=0) as w:
            for k, i in enumerate(take):
                w.write(
                    {
                        "__key__": f"{k:09d}",
                        "img.npy": np.array(cache.images[int(rows[i])]),
                        "labels.npy": labels[i],
                        "id.txt": str(df["image_id"].iloc[i]),
                        "sha1.txt": str(df["sha1"].iloc[i]),
                    }
                )
        shards = sorted(p.name for p in out.glob(f"{split}-*.tar"))
        counts = [min(shard_size, len(take) - j * shard_size) for j in range(len(shards))]
        index["splits"][split] = {"shards": shards, "counts": counts, "n": len(take)}
        logger.info("%s: %d samples in %d shards", split, len(take), len(shards))
    tmp = out / f"{INDEX}.tmp{os.getpid()}"
    tmp.write_bytes(canonical_json(index))
    os.replace(tmp, out / INDEX)
    return index


def read_index(directory: str | Path) -> dict[str, Any]:
    """The ``index.json`` of a streaming folder.

    Raises:
        CacheError: it is damaged (not JSON, or without the train and val shard lists).
    """
    path = Path(directory) / INDEX
    try:
        index = json.loads(path.read_bytes())
        for split in ("train", "val"):
            names, counts = index["splits"][split]["shards"], index["splits"][split]["counts"]
            if len(names) != len(counts):
                raise ValueError(f"{split}: {len(names)} shards but {len(counts)} counts")
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise CacheError(
            f"{path} is damaged ({type(e).__name__}: {e}); rerun "
            "`cxrad preprocess WORK --format webdataset` with the run's size and mode"
        ) from e
    return index
