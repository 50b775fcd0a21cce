"""Stage 7, train: checkpoints and the run folder's history across resumes and moves.

Lightning's ``ModelCheckpoint`` forgets its best score when the run folder moves, and its CSV
logger deletes the epochs logged before a resume; the helpers here keep both, so a resumed or
copied run still ships its best epoch. Checkpoints are written whole or not at all
(:class:`AtomicCheckpointIO`), and a damaged one is removed before a resume could pick it up
(:func:`drop_partial_checkpoints`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from cxrad.atomic import replacing

logger = logging.getLogger(__name__)

MONITOR = "val_macro_auroc"
"""The logged metric checkpoints are selected on."""


class MovableCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose state survives moving or copying the run folder.

    Lightning keeps only ``best_model_path`` when the checkpoint folder's absolute path differs
    from the one saved in ``last.ckpt``: it forgets the best score, so a resumed run would take
    its next epoch as "best" even when an earlier one was better. Here the saved paths are
    re-rooted into the current folder instead, and the best score is kept.

    Its ``state_key`` is ``ModelCheckpoint``'s, so checkpoints written by either class restore
    into the other (Lightning matches callback state by class name).
    """

    @property
    def state_key(self) -> str:
        key = super().state_key
        return "ModelCheckpoint" + key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:

            def moved(path: Any) -> Any:
                if path and os.path.dirname(str(path)) == old:
                    return os.path.join(new, os.path.basename(str(path)))
                return path

            state_dict = {
                **state_dict,
                "dirpath": new,
                "best_model_path": moved(state_dict.get("best_model_path")),
                "kth_best_model_path": moved(state_dict.get("kth_best_model_path")),
                "last_model_path": moved(state_dict.get("last_model_path")),
                "best_k_models": {
                    moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()
                },
            }
        super().load_state_dict(state_dict)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save each checkpoint to a temp file beside it, then rename: never half a ``.ckpt``.

    Lightning writes the file in place, so a full disk or a kill mid-write leaves a truncated
    ``last.ckpt`` that the next resume would load; here a failed save removes its temp file and
    keeps the previous checkpoint intact.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            torch.save(checkpoint, tmp)


def readable_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a complete torch zip checkpoint (a truncated one lacks its directory)."""
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def drop_partial_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Delete temp files and unreadable checkpoints in ``ckpt_dir``; return what was removed.

    Such files come from an interrupted save of an older cxrad or from damage by hand; leaving
    them would make a resume fail with a raw traceback or, worse, pick the wrong epoch.
    """
    if not ckpt_dir.is_dir():
        return []
    bad = [p for p in ckpt_dir.iterdir() if p.is_file() and ".tmp" in p.name]
    bad += [p for p in sorted(ckpt_dir.glob("*.ckpt")) if not readable_checkpoint(p)]
    for p in bad:
        logger.warning("removing the partial checkpoint %s (a resume would not load it)", p)
        p.unlink(missing_ok=True)
    return bad


def best_checkpoint(
    ckpt_cb: ModelCheckpoint, ckpt_dir: Path, metrics_csv: Path, last: Path
) -> Path:
    """The checkpoint to ship: the callback's best, else the best-scoring ``best-*.ckpt`` on disk.

    The callback can come back without its state (a checkpoint from another cxrad version, a
    hand-edited folder); falling back to ``last.ckpt`` would then silently ship the last epoch.
    Instead the ``best-*.ckpt`` files left on disk are ranked by the val AUROC that the CSV log
    recorded for their epoch.
    """
    if ckpt_cb.best_model_path and Path(ckpt_cb.best_model_path).is_file():
        return Path(ckpt_cb.best_model_path)
    found = sorted(ckpt_dir.glob("best-epoch*.ckpt"))
    if not found:
        return last
    scores: dict[int, float] = {}
    if metrics_csv.is_file() and metrics_csv.stat().st_size:
        log = pd.read_csv(metrics_csv)
        if MONITOR in log.columns:
            per_epoch = log.dropna(subset=[MONITOR]).groupby("epoch")[MONITOR].max()
            scores = {int(e): float(v) for e, v in per_epoch.items()}

    def score(path: Path) -> float:
        m = re.fullmatch(r"best-epoch(\d+)(-v\d+)?", path.stem)
        return scores.get(int(m.group(1)), -np.inf) if m else -np.inf

    best = max(found, key=score)
    logger.warning(
        "the checkpoint callback lost track of its best epoch; using %s (val AUROC %.4f in %s)",
        best.name,
        score(best),
        metrics_csv,
    )
    return best


@contextlib.contextmanager
def keep_log_history(path: Path, enabled: bool) -> Iterator[None]:
    """Keep the epochs logged before a resume: Lightning's CSV logger deletes an existing file."""
    old = pd.read_csv(path) if enabled and path.is_file() and path.stat().st_size else None
    try:
        yield
    finally:
        if old is not None and path.is_file() and path.stat().st_size:
            new = pd.read_csv(path)
            start = new["epoch"].min() if len(new) else np.inf
            merged = pd.concat([old[old["epoch"] < start], new], ignore_index=True)
            merged.to_csv(path, index=False)
        elif old is not None:
            old.to_csv(path, index=False)


def clear_previous(out: Path) -> None:
    """`--no-resume`: remove an earlier run's checkpoints and logs so nothing resumes from them."""
    old = list((out / "checkpoints").glob("*.ckpt")) if (out / "checkpoints").is_dir() else []
    if old:
        logger.info("--no-resume: removing %d old checkpoints in %s", len(old), out / "checkpoints")
        for p in old:
            p.unlink()
    if (out / "logs").is_dir():
        shutil.rmtree(out / "logs")
