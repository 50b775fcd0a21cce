"""Stage 5, data: a torch ``Dataset`` over manifest rows and the preprocessed ``uint8`` cache.

The hot loop only slices a memory-mapped array: no PNG/JPEG decoding, no resizing. Rows that the
cache does not hold (failed or skipped by ``cxrad preprocess``) are dropped and counted, never
silently lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)


class CacheLike(Protocol):
    """What the dataset needs from :func:`cxrad.preprocess.open_cache`'s ``Cache``."""

    images: np.ndarray

    def rows_for(self, df: pd.DataFrame) -> np.ndarray: ...


class CachedDataset(Dataset[tuple[torch.Tensor, ...]]):
    """Images from the cache and their labels, for the given classes.

    Items are ``(x, y)``: ``x`` float32 ``(1, S, S)`` in [0, 1]; ``y`` float32 ``(C,)`` with
    1 = present, 0 = absent and NaN = not annotated (the loss masks those out); with ``domain``,
    ``(x, y, d)``.

    Args:
        df: manifest rows to serve (usually one split).
        cache: an opened preprocessing cache (``images`` memmap + ``rows_for``).
        classes: the model's output classes, in order.
        uint8: serve ``x`` as the cached ``uint8`` instead (a quarter of the bytes through loader
            workers and host-to-GPU copies); the training module scales it on the device.
        domain: a manifest column (``source``) whose value each item also carries, as an
            ``int64`` code, for a training-only head that predicts it (``--dg adversarial``).

    Attributes:
        df: the rows kept (those present in the cache), index reset.
        labels: ``(N, C)`` float32 label matrix of the kept rows.
        dropped: how many input rows were not in the cache.
        domains: with ``domain``, the column's values among the kept rows, sorted (code order).
        domain_codes: with ``domain``, ``(N,)`` each kept row's code.

    Example:
        >>> ds = CachedDataset(df[df.split == "train"], cache, ["NORMAL", "PNEUMONIA"])
        >>> x, y = ds[0]
    """

    def __init__(
        self,
        df: pd.DataFrame,
        cache: CacheLike,
        classes: Sequence[str],
        uint8: bool = False,
        domain: str | None = None,
    ) -> None:
        rows = np.asarray(cache.rows_for(df), dtype=np.int64)
        keep = rows >= 0
        self.dropped = int((~keep).sum())
        if self.dropped:
            logger.warning(
                "%d of %d rows are not in the cache and were left out (see the cache's failures "
                "table, or rerun `cxrad preprocess`)",
                self.dropped,
                len(df),
            )
        self.df = df[keep].reset_index(drop=True)
        self.rows = rows[keep]
        self.classes = list(classes)
        self.labels = self.df[self.classes].to_numpy(dtype=np.float32).reshape(-1, len(classes))
        self.images = cache.images
        self.uint8 = uint8
        self.domains: list[str] = []
        self.domain_codes: np.ndarray | None = None
        if domain is not None:  # only the values of the rows kept count
            values = self.df[domain].astype(str).to_numpy()
            names, codes = np.unique(values, return_inverse=True)
            self.domains, self.domain_codes = [str(n) for n in names], codes.astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if self.uint8:
            x = torch.from_numpy(np.array(self.images[self.rows[i]], dtype=np.uint8))
        else:
            x = torch.from_numpy(np.asarray(self.images[self.rows[i]], dtype=np.float32) / 255.0)
        y = torch.from_numpy(self.labels[i].copy())
        if self.domain_codes is None:
            return x[None], y
        return x[None], y, torch.tensor(self.domain_codes[i])

    def __getstate__(self) -> dict[str, Any]:
        # A pickled np.memmap carries its whole content: reopen it by file name in workers.
        state = self.__dict__.copy()
        img = self.images
        if isinstance(img, np.memmap) and img.filename is not None:
            state["images"] = ("memmap", img.filename, img.dtype.str, img.shape, img.offset)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        img = state["images"]
        if isinstance(img, tuple) and img and img[0] == "memmap":
            _, name, dtype, shape, offset = img
            state["images"] = np.memmap(name, dtype=dtype, mode="r", shape=shape, offset=offset)
        self.__dict__.update(state)


class EpochSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each epoch (also through its DDP wrapper), so a
    run resumed at epoch ``k`` sees exactly the order an uninterrupted run sees, without
    touching the global RNG.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # type: ignore[no-untyped-def]
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 0x5A))
        return iter(torch.randperm(self.n, generator=g).tolist())


def mix_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (``np.random.SeedSequence``)."""
    return int(
        np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0]
        >> 1
    )
