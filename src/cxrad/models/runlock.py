"""Run folders: one writer each.

Two ``cxrad train`` runs into the same ``--out`` would resume from each other's checkpoints and
could leave one run's weights beside the other's ``config.json``; a one-class train, an
ensemble, an adapt or a fit-ood writing a folder another command is writing would mix them the
same way. The run folder takes the cache's lock file (:mod:`cxrad.preprocess.lock`: atomic,
NFS-safe, a dead owner's lock taken over). Only the rank-0 process locks: DDP ranks that
Lightning or SLURM start share the folder. The lock is re-entrant within a process, so
``cxrad train`` can call :func:`~cxrad.train.ood.fit_run_ood` on the run it holds.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cxrad.errors import CxradError, TrainError
from cxrad.preprocess.lock import locked

F = TypeVar("F", bound=Callable[..., Any])
_HELD: set[Path] = set()
"""Run folders this process holds the lock of."""

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
"""Set (to non-zero) in every process but the first of a distributed run."""


def is_rank_zero() -> bool:
    """True unless a launcher's rank variables name another process of a distributed run."""
    return all(os.environ.get(v, "0").strip() in ("", "0") for v in RANK_VARIABLES)


@contextlib.contextmanager
def run_lock(
    out: Path, who: str = "cxrad train", error: type[CxradError] = TrainError
) -> Iterator[None]:
    """Hold ``out``'s lock for the block on rank 0; other ranks, and a holder, run unlocked.

    A folder the lock had to create, and that the block left empty, is removed again: a
    command refused for its inputs leaves nothing behind.

    Raises:
        TrainError: (or ``error``) another live cxrad command is writing ``out``; says which,
            and its process.
    """
    path = Path(out).resolve()
    if not is_rank_zero() or path in _HELD:
        yield
        return
    created = [d for d in (path, *path.parents) if not d.exists()]  # innermost first
    try:
        with locked(path, who=who, error=error):
            _HELD.add(path)
            try:
                yield
            finally:
                _HELD.discard(path)
    finally:
        with contextlib.suppress(OSError):  # not empty (the run was written), or gone
            for folder in created:
                folder.rmdir()


def writes_run(param: str, who: str, error: type[CxradError] = TrainError) -> Callable[[F], F]:
    """Decorate a function that writes the run folder named by its argument ``param``."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked_fn(*args: Any, **kwargs: Any) -> Any:
            with run_lock(Path(signature.bind(*args, **kwargs).arguments[param]), who, error):
                return fn(*args, **kwargs)

        return locked_fn  # type: ignore[return-value]

    return wrap


__all__ = ["RANK_VARIABLES", "is_rank_zero", "run_lock", "writes_run"]
