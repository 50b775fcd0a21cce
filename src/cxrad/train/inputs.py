"""Stage 7, train: what a training run reads (usable rows, cached or streamed loaders).

The checks here fail before any epoch runs, with the command that fixes the work folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrad.errors import TrainError
from cxrad.manifest import STATUS_OK, read_manifest
from cxrad.options import suggest
from cxrad.train.module import LOSSES

if TYPE_CHECKING:
    from cxrad.preprocess import PreprocessConfig

DATA_FORMATS = ("cache", "webdataset")


def check_options(
    data_format: str,
    loss: str,
    sampler: str,
    normalise: str,
    crop: str,
    dg: str,
    hold_out: Sequence[str] = (),
    limit_train: int | None = None,
) -> None:
    """Fail on options that do not exist or do not combine, before any data is read."""
    if data_format not in DATA_FORMATS:
        raise TrainError(
            f"unknown data format {data_format!r}; expected one of {DATA_FORMATS}."
            f"{suggest(data_format, DATA_FORMATS)}"
        )
    if loss not in LOSSES:
        raise TrainError(f"unknown loss {loss!r}; expected one of {LOSSES}.{suggest(loss, LOSSES)}")
    if (
        data_format == "webdataset"
        and (sampler, normalise, crop, dg) != ("shuffle",) + ("none",) * 3
    ):
        raise TrainError(
            "--sampler balanced, --normalise, --crop and --dg read the memmap cache; drop them "
            "or use --data-format cache"
        )
    if data_format == "webdataset" and (hold_out or limit_train is not None):
        # The shards hold every train film; streaming cannot leave some out.
        raise TrainError(
            "--hold-out and --limit-train choose films from the memmap cache; the WebDataset "
            "shards stream every train film. Drop them or use --data-format cache"
        )


def training_rows(work: str | Path) -> Any:
    """The usable rows of WORK's manifest; an error that says what to run when a split is empty."""
    df = read_manifest(work)
    if "split" not in df.columns:
        raise TrainError(f"the manifest in {work} has no split; run `cxrad split {work}` first")
    df = df[df["status"] == STATUS_OK]
    for name in ("train", "val"):
        if not (df["split"] == name).any():
            raise TrainError(
                f"no usable rows in the {name!r} split of {work}; run `cxrad split {work}` "
                "(it needs ingested images with status 'ok')"
            )
    return df


def streamed_loaders(
    work: Any,
    size: int,
    mode: str,
    base: str | None,
    df: Any,
    classes: list[str],
    batch_size: int,
    seed: int,
    hw: Any,
) -> Any:
    """Loaders from ``cxrad preprocess --format webdataset`` shards (train streamed per rank)."""
    from cxrad.data import Loaders
    from cxrad.data.streaming import streaming_loaders
    from cxrad.preprocess import PreprocessConfig
    from cxrad.preprocess.webdataset import read_index, streaming_dir

    folder = streaming_dir(work, PreprocessConfig(size=size, mode=mode))  # type: ignore[arg-type]
    if not (folder / "index.json").is_file():
        raise TrainError(
            f"no WebDataset shards in {folder}; run "
            f"`cxrad preprocess {work} --size {size} --mode {mode} --format webdataset` first"
        )
    labels = df.loc[df["split"] == "train", classes].to_numpy(dtype=np.float32)
    train, val = streaming_loaders(
        base or str(folder), read_index(folder), classes, labels, batch_size, seed, hw.workers
    )
    val.dataset.df = val_rows(df, val.dataset.ids, folder)
    return Loaders(train, val)  # fmt: skip


def val_rows(df: Any, ids: list[str], folder: Path) -> Any:
    """The manifest rows of the streamed val films, in shard order (their sources fit the cuts)."""
    rows = df[df["split"] == "val"].set_index("image_id")  # a film re-split since is stale too
    unknown = [i for i in ids if i not in rows.index]
    if unknown:
        raise TrainError(
            f"{len(unknown)} val films in the shards of {folder} (e.g. {unknown[0]!r}) are not "
            "usable val rows of the manifest; the shards are stale: rerun `cxrad preprocess "
            "--format webdataset`"
        )
    return rows.loc[ids].reset_index()


def check_loaded(
    train_ds: Any, val_ds: Any, classes: list[str], work: Any, config: PreprocessConfig
) -> None:
    """Refuse, before any epoch, a cache that lacks the split or a val split AUROC can't use."""
    fix = f"run `{config.command(work)}`"
    if len(train_ds) == 0:
        raise TrainError(f"none of the train rows are in the cache of {work}; {fix}")
    if len(val_ds) == 0:
        raise TrainError(f"none of the val rows are in the cache of {work}; {fix}")
    y = val_ds.labels
    if not ((y == 1).any(axis=0) & (y == 0).any(axis=0)).any():
        raise TrainError(
            f"no class has both positives and negatives in the val split of {work}, so checkpoints "
            "cannot be selected on AUROC; re-split with a larger val fraction"
        )
