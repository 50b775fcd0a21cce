"""Stage 5, data: samplers that decide which training films an epoch sees.

``balanced`` draws every (class, source) cell equally often. In these collections class and
source are confounded (COVID films come from two web collections, children from one
hospital), so a shuffled epoch lets "which source" stand in for "which class"; a balanced one
shows the model, say, as many NIH normals as Radiography normals. Drawn with replacement,
with a generator keyed on ``(seed, epoch)``, like :class:`~cxrad.data.EpochSampler`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from cxrad.data.dataset import mix_seed
from cxrad.errors import TrainError
from cxrad.options import suggest

SAMPLERS = ("shuffle", "balanced")
"""``cxrad train --sampler`` choices."""


def check_sampler(name: str) -> str:
    """``name`` if it is a known sampler.

    Raises:
        TrainError: unknown name, with "did you mean".
    """
    if name not in SAMPLERS:
        raise TrainError(
            f"unknown sampler {name!r}; expected one of {SAMPLERS}.{suggest(name, SAMPLERS)}"
        )
    return name


def cell_labels(df: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """``"<first positive class>|<source>"`` per row (``"none"`` when no class is positive)."""
    y = np.nan_to_num(df[list(classes)].to_numpy(dtype=np.float64), nan=0.0) == 1
    first = np.where(y.any(axis=1), np.argmax(y, axis=1), -1)
    names = np.array([*classes, "none"], dtype=object)[first]
    return names + "|" + df["source"].astype(str).to_numpy(dtype=object)


def balanced_weights(cells: np.ndarray) -> np.ndarray:
    """Per-row weights ``1 / size of its cell``, normalised to sum 1: each cell weighs the same."""
    _, inv, counts = np.unique(cells, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv.ravel()]
    return w / w.sum()


class BalancedSampler(Sampler[int]):
    """Draws ``len(df)`` rows per epoch, with replacement, each (class, source) cell equally often.

    Example:
        >>> s = BalancedSampler(train_ds.df, ["COVID_19", "NORMAL"], seed=0)
    """

    def __init__(self, df: pd.DataFrame, classes: Sequence[str], seed: int = 0) -> None:
        self.cells = cell_labels(df, classes)
        self.weights = torch.from_numpy(balanced_weights(self.cells))
        self.n = len(df)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 0xBA1))
        return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist())


__all__ = ["SAMPLERS", "BalancedSampler", "balanced_weights", "cell_labels", "check_sampler"]
