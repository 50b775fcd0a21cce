"""Stage 1, ingest: the adapter registry and layout detection with a fix-it error."""

from __future__ import annotations

import logging
from pathlib import Path

from cxrad.errors import IngestError
from cxrad.ingest.base import Adapter, subdirs
from cxrad.ingest.cxnet import CXNET_ADAPTER
from cxrad.ingest.folders import FOLDER_ADAPTERS, GENERIC_ADAPTER
from cxrad.ingest.labelfiles import LABELFILE_ADAPTERS
from cxrad.ingest.tables import TABLE_ADAPTERS
from cxrad.options import suggest

logger = logging.getLogger(__name__)

ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        *TABLE_ADAPTERS,
        CXNET_ADAPTER,
        *LABELFILE_ADAPTERS,
        *FOLDER_ADAPTERS,
        GENERIC_ADAPTER,
    )
}
"""Every known layout, most specific first; the generic class-folder adapter is last."""


def known_layouts() -> str:
    """One line per adapter, ``name: layout``, for error messages and ``--help``."""
    return "\n".join(f"  {a.name:<20} {a.layout}" for a in ADAPTERS.values())


def get_adapter(name: str) -> Adapter:
    """The adapter called ``name``.

    Raises:
        IngestError: unknown name; suggests close names and lists the known ones.
    """
    if name in ADAPTERS:
        return ADAPTERS[name]
    raise IngestError(
        f"unknown format {name!r}.{suggest(name, ADAPTERS)} Known formats: {', '.join(ADAPTERS)}"
    )


def check_folder(root: str | Path) -> Path:
    """``root`` as a Path if it is a non-empty folder.

    Raises:
        IngestError: missing, not a folder, or empty; the message says which.
    """
    path = Path(root)
    if not path.exists():
        raise IngestError(f"{path} does not exist; pass the folder a dataset was unpacked into")
    if not path.is_dir():
        raise IngestError(f"{path} is a file; pass the folder a dataset was unpacked into")
    if not any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise IngestError(f"{path} is empty; expected a dataset folder with images and labels")
    return path


def find_format(root: Path) -> str | None:
    """The name of the first adapter (most specific first) that recognises ``root``, or None."""
    for adapter in ADAPTERS.values():
        try:
            if adapter.detect(root):
                return adapter.name
        except OSError as e:  # an unreadable sub-folder must not hide the other layouts
            logger.debug("%s: detect failed on %s: %s", adapter.name, root, e)
    return None


def detect_format(root: str | Path) -> str:
    """Which adapter reads ``root``.

    Example:
        >>> detect_format("../shared/data/kaggle-pediatric-pneumonia")
        'kaggle-pediatric'

    Raises:
        IngestError: ``root`` is missing or empty, or matches no layout (lists every layout).
    """
    path = check_folder(root)
    name = find_format(path)
    if name is None:
        raise IngestError(unknown_layout_message(path))
    return name


def unknown_layout_message(path: Path) -> str:
    """The fix-it message for a folder no adapter recognises (after anomalib's MVTec check)."""
    seen = ", ".join(p.name for p in sorted(path.iterdir())[:8])
    return (
        f"{path} matches no known dataset layout (it holds: {seen or 'nothing'}). "
        f"Expected one of these layouts, or pass --format NAME:\n{known_layouts()}"
    )


def find_datasets(root: Path, depth: int = 1) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Datasets in the sub-folders of ``root`` (down to ``depth`` levels), and the folders skipped.

    Lets ``cxrad ingest ../shared/data`` take a parent folder of several datasets.
    """
    found: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for sub in subdirs(root):
        name = find_format(sub)
        if name is not None:
            found.append((sub, name))
            continue
        deeper, deeper_skipped = find_datasets(sub, depth - 1) if depth > 1 else ([], [sub])
        found += deeper
        skipped += deeper_skipped if deeper else [sub]
    return found, skipped
