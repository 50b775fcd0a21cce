"""Image reading (below every stage): walk a folder for image files, and say what was skipped.

Symlinked folders are followed (a dataset assembled from links is common); a link back to a
folder already walked (a loop) is not. Every path that is not taken for a reason other than
"not an image type" is counted by that reason: unreadable folders, symlink loops, dangling
links, and FIFOs, sockets or devices. Nothing is skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cxrad.image.formats import has_image_suffix

UNREADABLE_FOLDER = "unreadable folder"
SYMLINK_LOOP = "symlink loop (folder already walked)"
DANGLING_LINK = "dangling link"
NOT_REGULAR = "not a regular file (FIFO, socket or device)"


@dataclass
class Walk:
    """The files a walk found and the paths it skipped, as ``(path, reason)``."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def by_reason(self) -> dict[str, int]:
        """Skipped paths counted by reason."""
        out: dict[str, int] = {}
        for _, reason in self.skipped:
            out[reason] = out.get(reason, 0) + 1
        return out


def walk_files(
    root: str | os.PathLike[str],
    want: Callable[[Path], bool] = lambda p: has_image_suffix(p.name),
    skip_dirs: Iterable[str] = (),
) -> Walk:
    """Every regular file under ``root`` that ``want`` accepts, plus what was skipped.

    Order is deterministic: a folder's files (sorted), then its sub-folders (sorted).

    Hidden names (``.x``) are ignored, as are sub-folders named in ``skip_dirs``
    (case-insensitive); those are choices, not failures, so they are not counted.

    Args:
        root: the folder to walk (its symlinked sub-folders are followed).
        want: which regular files to take (default: an image suffix).
        skip_dirs: sub-folder names never descended into, e.g. ``masks``.
    """
    skip = {s.lower() for s in skip_dirs}
    out = Walk()
    seen = {os.path.realpath(root)}

    def onerror(e: OSError) -> None:
        out.skipped.append((str(e.filename), f"{UNREADABLE_FOLDER}: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d.lower() in skip:
                continue
            full = os.path.join(dirpath, d)
            real = os.path.realpath(full)
            if real in seen:
                out.skipped.append((full, SYMLINK_LOOP))
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if not p.exists():
                out.skipped.append((str(p), DANGLING_LINK))
            elif not p.is_file():
                out.skipped.append((str(p), NOT_REGULAR))
            elif want(p):
                out.files.append(p)
    return out
