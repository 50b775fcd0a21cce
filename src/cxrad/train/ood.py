"""Stage 7, train: fit a run's out-of-distribution statistics on its work folder's train/val films.

``cxrad train`` calls :func:`fit_run_ood` at the end of every run; ``cxrad fit-ood RUN --data
WORK`` does the same for a run trained before (the shipped default, say). The Gaussian is fitted
on the *train* films' penultimate features and its threshold is a quantile of the *val* films'
scores; test films play no part, and neither do the run's held-out sources.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrad.data.holdout import fit_rows
from cxrad.errors import TrainError
from cxrad.folderlock import folder_lock
from cxrad.manifest import read_manifest
from cxrad.models import Classifier, load_run, read_config, resolve_run
from cxrad.models.ood import DEFAULT_QUANTILE, GaussianOOD, attach_ood
from cxrad.train.setup import open_work_cache

logger = logging.getLogger(__name__)

MAX_FIT = 20_000
"""At most this many train films (a seeded sample) go into the Gaussian: plenty for 512 features."""


def fit_run_ood(
    run: str | Path,
    work: str | Path,
    quantile: float = DEFAULT_QUANTILE,
    batch_size: int = 64,
    max_fit: int = MAX_FIT,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit ``run``'s OOD statistics on ``work``'s train split, threshold them on val, store them.

    Args:
        run: a trained run directory (written to: ``ood.safetensors`` and the config's ``ood``).
        work: a work folder with a split manifest and a cache at the run's preprocessing size.
        quantile: the share of in-distribution val films scored below the threshold.
        batch_size: images per forward pass.
        max_fit: cap on train films used (a seeded random sample).
        seed: seeds that sample.

    Returns:
        The ``ood`` entry written into the run's config.

    Raises:
        TrainError: no split, no cache at the run's size, or empty train/val splits.

    Example:
        >>> fit_run_ood("runs/fast", "work")["threshold"]  # doctest: +SKIP
    """
    path = resolve_run(run)
    with folder_lock(
        path, "cxrad fit-ood", TrainError
    ):  # a train or adapt writing the run would race its config
        return _fit_and_attach(path, work, quantile, batch_size, max_fit, seed)


def _fit_and_attach(
    path: Path, work: str | Path, quantile: float, batch_size: int, max_fit: int, seed: int
) -> dict[str, Any]:
    model, cfg = load_run(path)
    df = read_manifest(work)
    if "split" not in df.columns:
        raise TrainError(f"the manifest in {work} has no split; run `cxrad split {work}` first")
    size = int(cfg.preprocess.size)
    pre = cfg.preprocess
    cache = open_work_cache(work, size, str(pre.mode), pre.normalise, pre.crop)
    train_df = fit_rows(df, cfg, "train")  # a held-out source stays unseen here too
    if len(train_df) > max_fit:
        train_df = train_df.sample(n=max_fit, random_state=seed).sort_index()
    feats = {
        name: split_features(model, rows, cache, batch_size)
        for name, rows in (("train", train_df), ("val", fit_rows(df, cfg, "val")))
    }
    for name, f in feats.items():
        if len(f) < 2:
            raise TrainError(
                f"the {name} split of {work} has {len(f)} cached films; OOD statistics need "
                f"at least 2 (run `{pre.cache_config().command(work)}`)"
            )
    ood = GaussianOOD().fit(feats["train"]).set_threshold(feats["val"], quantile)
    return attach_ood(path, ood)


def fit_ood_if_cached(run: str | Path, work: str | Path) -> dict[str, Any] | None:
    """:func:`fit_run_ood` where ``work`` has the run's cache; else a warning and None.

    A run streamed from WebDataset shards may train where only the shards are: its weights and
    cut-offs are saved, and the OOD statistics wait for ``cxrad fit-ood`` where the cache is.
    """
    pre = read_config(run).preprocess
    try:
        open_work_cache(work, int(pre.size), str(pre.mode), pre.normalise, pre.crop)
    except TrainError as e:
        logger.warning(
            "no OOD statistics fitted (%s); run `cxrad fit-ood %s --data WORK` where the cache is",
            e, run,
        )  # fmt: skip
        return None
    return fit_run_ood(run, work)


@torch.no_grad()
def split_features(
    model: Classifier, rows: pd.DataFrame, cache: Any, batch_size: int = 64
) -> np.ndarray:
    """Penultimate features ``(N, F)`` of the cached films of ``rows``, in order.

    Rows missing from the cache are left out (and counted in the log). No label is read.
    """
    model = model.eval()
    out = [
        model.forward_features(x).double().numpy() for x in cached_batches(rows, cache, batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0))


def cached_batches(rows: pd.DataFrame, cache: Any, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Float ``(B, 1, S, S)`` batches in [0, 1] of the cached films of ``rows``, in order; no labels."""
    idx = np.asarray(cache.rows_for(rows), dtype=np.int64)
    missing = int((idx < 0).sum())
    if missing:
        logger.warning("%d of %d rows are not in the cache and were left out", missing, len(idx))
    idx = idx[idx >= 0]
    for start in range(0, len(idx), batch_size):
        x = np.asarray(cache.images[idx[start : start + batch_size]], dtype=np.float32) / 255.0
        yield torch.from_numpy(x)[:, None]


__all__ = ["cached_batches", "fit_ood_if_cached", "fit_run_ood", "split_features"]
