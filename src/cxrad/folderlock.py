"""Shared: one writer per folder (a cache, a run, a work folder), by an atomic lock file.

``flock`` is not reliable between NFS clients, so the lock is a file created with
``O_CREAT | O_EXCL`` (atomic on NFSv3+ and local disks) that names its owner (command, host,
pid, start time). A lock is stale, and taken over, when its owner is on this host and no longer
runs, or when it has not been refreshed (``touch``) for :data:`STALE_SECONDS` on another host.

:func:`locked` is the bare lock (the cache's). :func:`folder_lock` and :func:`writes_folder`
add what run and work folders need: two ``cxrad train`` runs into one ``--out`` would resume
from each other's checkpoints, and a split beside an ingest would describe a manifest that is
no longer there. They are re-entrant within a process (``cxrad train`` calls ``fit_run_ood`` on
the run it holds), only rank 0 of a distributed run locks (the DDP ranks that Lightning or
SLURM start share the folder), and a folder the lock had to create is removed again if the
command left it empty, so a command refused for its inputs leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cxrad.errors import CacheError, CxradError
from cxrad.parallel import pid_alive

logger = logging.getLogger(__name__)

LOCK = ".lock"
STALE_SECONDS = 6 * 3600
"""A lock from another host not refreshed for this long is taken over."""
EMPTY_GRACE_SECONDS = 60
"""An empty lock file older than this names no owner that could still be writing it."""


def _owner(who: str) -> dict[str, object]:
    return {
        "command": who,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
    }


def _stale(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text() or "{}")
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # being written or just removed: try again, do not steal
    if not owner:  # an ownerless file: left by cxrad's older flock lock, or a crash mid-create
        return age > EMPTY_GRACE_SECONDS
    if owner.get("host") == socket.gethostname():
        return not pid_alive(int(owner.get("pid", -1)))
    return age > STALE_SECONDS


def _create(path: Path, who: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(_owner(who), fh)
    return True


def refresh(directory: Path) -> None:
    """Mark the lock as still held (long runs call this as they progress)."""
    with contextlib.suppress(OSError):
        os.utime(Path(directory) / LOCK)


@contextlib.contextmanager
def locked(
    directory: Path, who: str = "cxrad preprocess", error: type[CxradError] = CacheError
) -> Iterator[None]:
    """Hold the folder's lock for the block; a dead owner's lock is taken over.

    Args:
        directory: the folder one process at a time may write (a cache, a run).
        who: the command that writes it, for the message.
        error: what a held lock raises.

    Raises:
        CacheError: (or ``error``) a live ``who`` holds it; says which process.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    if not _create(path, who):
        if _stale(path):
            logger.warning("taking over a stale lock %s (%s)", path, _read(path))
            stale = path.with_name(f"{LOCK}.stale{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, stale)  # atomic: only one taker renames it
                stale.unlink()
        if not _create(path, who):
            owner = _command(path, who)
            raise error(
                f"another `{owner}` is writing {directory} ({_read(path)}); wait for it "
                f"to finish, or delete {path} if that process is gone"
            )
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _command(path: Path, who: str) -> str:
    """The command the lock's owner recorded (locks from before it was recorded: ``who``)."""
    try:
        return str(json.loads(_read(path)).get("command", who))
    except (ValueError, AttributeError):
        return who


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return "owner unknown"


F = TypeVar("F", bound=Callable[..., Any])
_HELD: set[Path] = set()
"""Folders this process holds the lock of (through :func:`folder_lock`)."""


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
"""Set (to non-zero) in every process but the first of a distributed run."""


def is_rank_zero() -> bool:
    """True unless a launcher's rank variables name another process of a distributed run."""
    return all(os.environ.get(v, "0").strip() in ("", "0") for v in RANK_VARIABLES)


@contextlib.contextmanager
def folder_lock(folder: Path, who: str, error: type[CxradError]) -> Iterator[None]:
    """Hold ``folder``'s lock for the block on rank 0; other ranks, and a holder, run unlocked.

    Raises:
        CxradError: (``error``) another live cxrad command is writing ``folder``; says which,
            and its process.
    """
    path = Path(folder).resolve()
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
            for made in created:
                made.rmdir()


def writes_folder(param: str, who: str, error: type[CxradError]) -> Callable[[F], F]:
    """Decorate a function that writes the folder named by its argument ``param``."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked_fn(*args: Any, **kwargs: Any) -> Any:
            with folder_lock(Path(signature.bind(*args, **kwargs).arguments[param]), who, error):
                return fn(*args, **kwargs)

        return locked_fn  # type: ignore[return-value]

    return wrap
