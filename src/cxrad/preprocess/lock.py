"""Stage 4, preprocess: one writer per cache folder (and run folder), by an atomic lock file (NFS-safe).

``flock`` is not reliable between NFS clients, so the lock is a file created with
``O_CREAT | O_EXCL`` (atomic on NFSv3+ and local disks) that names its owner (host, pid,
start time). A lock is stale, and taken over, when its owner is on this host and no longer
runs, or when it has not been refreshed (``touch``) for :data:`STALE_SECONDS` on another host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

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
