"""Stage 5, data: choosing the trainable classes, and building the train/val data loaders."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from cxrad.data.dataset import CachedDataset, CacheLike, EpochSampler
from cxrad.data.sampling import BalancedSampler, check_sampler
from cxrad.labels import CLASSES

logger = logging.getLogger(__name__)


class Loaders(NamedTuple):
    """The two loaders :func:`make_dataloaders` builds; their datasets hold rows and labels."""

    train: DataLoader
    val: DataLoader


def trainable_classes(df: pd.DataFrame) -> list[str]:
    """Classes, in :data:`~cxrad.labels.CLASSES` order, with >= 1 positive and >= 1 negative in ``df``.

    A class with no positives (or no negatives) cannot be learned or scored, so the model
    does not get an output for it.
    """
    out = []
    for c in CLASSES:
        col = df[c].to_numpy(dtype=np.float64)
        if (col == 1).any() and (col == 0).any():
            out.append(c)
    return out


def single_label_mask(labels: np.ndarray) -> np.ndarray:
    """Rows with exactly one positive among the columns (NaN counts as not positive).

    The original project trained a softmax over single-label folders; ``--loss softmax`` keeps
    only such rows for a like-for-like comparison.
    """
    return (np.nan_to_num(labels, nan=0.0) == 1).sum(axis=1) == 1


def make_dataloaders(
    df: pd.DataFrame,
    cache: CacheLike,
    classes: Sequence[str],
    *,
    batch_size: int = 32,
    workers: int = 0,
    seed: int = 0,
    limit_train: int | None = None,
    single_label: bool = False,
    pin_memory: bool = False,
    uint8: bool = False,
    sampler: str = "shuffle",
    domain: str | None = None,
) -> Loaders:
    """Train and val loaders over a split manifest (``split`` column) and its cache.

    Args:
        df: the manifest (``ok`` rows with a ``split`` column).
        cache: the opened preprocessing cache.
        classes: the model's classes.
        batch_size: images per batch.
        workers: loader processes (0 = load in the main process: best on 2 cores).
        seed: seeds the shuffling (per epoch) and the ``limit_train`` subset.
        limit_train: keep at most this many train images (a seeded random subset), for quick runs.
        single_label: keep only train rows with exactly one positive (``--loss softmax``).
        pin_memory: pin batches for faster host-to-GPU copies.
        uint8: batches carry ``uint8`` images, scaled to [0, 1] later on the device.
        sampler: ``"shuffle"`` (each film once per epoch) or ``"balanced"`` (each class x source
            cell equally often, see :mod:`cxrad.data.sampling`).
        domain: a column the train items also carry as a code (see :class:`CachedDataset`).
    """
    train_df = df[df["split"] == "train"]
    val_df = df[df["split"] == "val"]
    if single_label:
        keep = single_label_mask(train_df[list(classes)].to_numpy(dtype=np.float32))
        logger.info(
            "softmax loss: training on %d single-label rows; %d multi- or zero-label rows left out",
            int(keep.sum()),
            int((~keep).sum()),
        )
        train_df = train_df[keep]
    if limit_train is not None and limit_train < len(train_df):
        logger.info("limit_train: using %d of %d train rows", limit_train, len(train_df))
        train_df = train_df.sample(n=limit_train, random_state=seed).sort_index()
    train_ds = CachedDataset(train_df, cache, classes, uint8=uint8, domain=domain)
    val_ds = CachedDataset(val_df, cache, classes, uint8=uint8)
    common = {
        "batch_size": batch_size,
        "num_workers": workers,
        "pin_memory": pin_memory,
        "persistent_workers": workers > 0,
    }
    train = DataLoader(
        train_ds,
        sampler=BalancedSampler(train_ds.df, classes, seed=seed)
        if check_sampler(sampler) == "balanced"
        else EpochSampler(len(train_ds), seed=seed),
        drop_last=len(train_ds) > batch_size,  # a batch of 1 breaks BatchNorm
        generator=torch.Generator().manual_seed(seed),
        **common,
    )
    val = DataLoader(
        val_ds,
        sampler=EpochSampler(len(val_ds), shuffle=False),
        generator=torch.Generator().manual_seed(seed),
        **common,
    )
    return Loaders(train, val)
