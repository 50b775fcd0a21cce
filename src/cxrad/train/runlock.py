"""Stage 7, train: one writer per run folder.

Two ``cxrad train`` runs into the same ``--out`` would resume from each other's checkpoints and
could leave one run's weights beside the other's ``config.json``. The run folder takes the
cache's lock file (:mod:`cxrad.preprocess.lock`: atomic, NFS-safe, a dead owner's lock taken
over). Only the rank-0 process locks: DDP ranks that Lightning or SLURM start share the folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cxrad.errors import TrainError
from cxrad.preprocess.lock import locked

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
"""Set (to non-zero) in every process but the first of a distributed run."""


def is_rank_zero() -> bool:
    """True unless a launcher's rank variables name another process of a distributed run."""
    return all(os.environ.get(v, "0").strip() in ("", "0") for v in RANK_VARIABLES)


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the block on rank 0; other ranks run unlocked.

    Raises:
        TrainError: another live ``cxrad train`` is writing ``out``; says which process.
    """
    if not is_rank_zero():
        yield
        return
    with locked(Path(out), who="cxrad train", error=TrainError):
        yield


__all__ = ["RANK_VARIABLES", "is_rank_zero", "run_lock"]
