"""Stage 5, data: streaming training samples from WebDataset tar shards, split across ranks.

Each DDP rank reads a disjoint set of shards (``shards[rank::world_size]``), and every rank
stops after the same number of samples (the smallest rank's share), so ranks never wait on
each other at the end of an epoch. Shards may be local paths or any URL WebDataset opens
(``https://...``, ``pipe:aws s3 cp s3://bucket/train-000000.tar -``): no POSIX random access
is needed on the training nodes. See :mod:`cxrad.preprocess.webdataset` for the writer.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cxrad.labels import CLASSES

logger = logging.getLogger(__name__)

IDS_DIR_ENV = "CXRAD_STREAM_IDS_DIR"
"""If set, each rank appends the image ids it streamed to ``$DIR/rank-<r>.txt`` (a debug aid)."""


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StreamingDataset(IterableDataset):
    """``(image (1, S, S) uint8, labels (C,) float32)`` samples from tar shards.

    Args:
        urls: shard paths or URLs, in index order.
        counts: samples per shard (from ``index.json``).
        classes: the model's classes (a subset of :data:`CLASSES`, in any order).
        seed: seeds the per-epoch shuffle buffer (with the epoch and rank).
        shuffle_buffer: samples held for shuffling (0 reads in shard order).
    """

    def __init__(
        self,
        urls: Sequence[str],
        counts: Sequence[int],
        classes: Sequence[str],
        seed: int = 0,
        shuffle_buffer: int = 1000,
    ) -> None:
        self.urls, self.counts = list(urls), [int(c) for c in counts]
        self.classes = list(classes)
        self.columns = np.array([CLASSES.index(c) for c in self.classes])
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def per_rank(self, world: int) -> int:
        """Samples each of ``world`` ranks streams per epoch (the smallest rank's share)."""
        return min(sum(self.counts[r::world]) for r in range(world)) if self.urls else 0

    def __len__(self) -> int:
        return self.per_rank(_rank_world()[1])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import webdataset as wds

        rank, world = _rank_world()
        mine = self.urls[rank::world]
        take = self.per_rank(world)
        info = get_worker_info()
        if info is not None:  # DataLoader workers share this rank's shards
            mine = mine[info.id :: info.num_workers]
            take = take // info.num_workers
        pipeline = wds.WebDataset(
            mine, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
        )
        if self.shuffle_buffer:
            rng = random.Random(self.seed * 1_000_003 + self.epoch * 1009 + rank)
            pipeline = pipeline.shuffle(self.shuffle_buffer, rng=rng)
        pipeline = pipeline.decode()
        ids_dir = os.environ.get(IDS_DIR_ENV)
        log = open(Path(ids_dir) / f"rank-{rank}.txt", "a") if ids_dir else None  # noqa: SIM115
        try:
            for k, sample in enumerate(pipeline):
                if k >= take:
                    break
                if log is not None:
                    log.write(sample["id.txt"] + "\n")
                img = torch.from_numpy(np.ascontiguousarray(sample["img.npy"], dtype=np.uint8))
                labels = torch.from_numpy(sample["labels.npy"][self.columns].astype(np.float32))
                yield img[None], labels
        finally:
            if log is not None:
                log.close()
        self.epoch += 1


def streaming_loader(
    base: str,
    index: dict,
    classes: Sequence[str],
    batch_size: int,
    seed: int = 0,
    workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A train DataLoader over the ``train`` shards listed in ``index``, under ``base``.

    ``base`` is a folder or a URL prefix; shard names from the index are appended with ``/``.
    """
    split = index["splits"]["train"]
    urls = [f"{base.rstrip('/')}/{name}" for name in split["shards"]]
    ds = StreamingDataset(urls, split["counts"], classes, seed=seed)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=workers, drop_last=len(ds) > batch_size
    )


class StreamedSplit(torch.utils.data.Dataset):
    """A small split (val) read whole from its shards into memory, in index order.

    Every rank sees all of it, like the cache-backed val set; ``labels`` and ``ids`` line up.
    """

    def __init__(self, urls: Sequence[str], classes: Sequence[str]) -> None:
        import webdataset as wds

        cols = np.array([CLASSES.index(c) for c in classes])
        images, labels, ids = [], [], []
        pipeline = wds.WebDataset(
            list(urls),
            shardshuffle=False,
            nodesplitter=None,
            workersplitter=None,
            empty_check=False,
        ).decode()
        for sample in pipeline:
            images.append(np.ascontiguousarray(sample["img.npy"], dtype=np.uint8))
            labels.append(sample["labels.npy"][cols].astype(np.float32))
            ids.append(sample["id.txt"])
        self.images = np.stack(images) if images else np.zeros((0, 1, 1), np.uint8)
        self.labels = np.stack(labels) if labels else np.zeros((0, len(cols)), np.float32)
        self.ids = ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images[i])[None], torch.from_numpy(self.labels[i])


def streaming_loaders(
    base: str,
    index: dict,
    classes: Sequence[str],
    train_labels: np.ndarray,
    batch_size: int,
    seed: int = 0,
    workers: int = 0,
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """Train (streamed, split across ranks) and val (read whole) loaders from tar shards.

    Args:
        base: the shards' folder or URL prefix; the index's shard names are appended.
        index: the streaming folder's ``index.json``.
        classes: the model's classes.
        train_labels: ``(N, C)`` train labels (from the manifest), kept as the train
            dataset's ``labels`` for class weights.
        batch_size: images per batch per rank.
        seed: seeds the shuffle.
        workers: DataLoader processes per rank.
    """
    train = streaming_loader(base, index, classes, batch_size, seed, workers)
    train.dataset.labels = train_labels  # type: ignore[attr-defined]
    names = index["splits"]["val"]["shards"]
    val_ds = StreamedSplit([f"{base.rstrip('/')}/{n}" for n in names], classes)
    val = torch.utils.data.DataLoader(val_ds, batch_size=batch_size, shuffle=False)
    return train, val
