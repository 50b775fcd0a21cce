"""Shared: write a file whole or not at all, and check free space before a big write.

A file is written under a temporary name beside it and ``os.replace``d onto its name, so a
reader (or a resume) never sees half a file; on any failure (a full disk, ``KeyboardInterrupt``)
the temporary file is removed, so a failed run does not keep the disk full.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from cxrad.errors import DiskSpaceError


@contextlib.contextmanager
def replacing(path: str | Path, tmp: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success move it onto ``path``, on any failure delete it.

    Args:
        path: the file to write.
        tmp: the temporary name (default ``.<name>.tmp`` beside ``path``).

    Example:
        >>> with replacing(run / "model.safetensors") as tmp:  # doctest: +SKIP
        ...     save_file(state, str(tmp))
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, tmp: str | Path | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`replacing`); returns ``path``."""
    with replacing(path, tmp) as t, open(t, "wb") as f:
        f.write(data)
    return Path(path)


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def require_free(path: str | Path, needed: int, what: str) -> None:
    """Raise :class:`DiskSpaceError` unless ``needed`` bytes are free where ``path`` lives.

    Args:
        path: where the data will go.
        needed: bytes the write will take at its peak.
        what: the write, in words ("preprocess: 1,200 new 256 px images").
    """
    free = free_bytes(path)
    if free < needed:
        raise DiskSpaceError(
            f"{what} needs about {_mb(needed)} free in {path}, but only {_mb(free)} is free; "
            "free some space or use a work folder on a bigger disk, then rerun"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
