"""Stage 1, ingest: the Adapter type and the small helpers every adapter shares.

An adapter is a pure function ``root -> manifest rows``: it lists files and reads label
files, never pixels. Helpers here build the label part of a row so every adapter applies
the same rules (a NORMAL image is negative for every finding; unannotated stays NaN).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxrad import image
from cxrad.errors import IngestError
from cxrad.labels import CLASSES, FINDINGS, NORMAL
from cxrad.manifest import STATUS_OK

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = image.IMAGE_SUFFIXES
"""File name endings (case-insensitive) that adapters list as images (:mod:`cxrad.image`'s)."""
METADATA_SUFFIXES: frozenset[str] = frozenset(
    {".csv", ".tsv", ".txt", ".xml", ".json", ".md", ".xlsx", ".xls", ".pdf", ".html", ".yaml",
     ".yml", ".parquet", ".py", ".ipynb", ".zip", ".gz", ".tar", ".npz", ".npy"}
)  # fmt: skip
"""Endings of label, metadata and archive files: expected beside images, never sniffed."""

MISSING_FILE = "missing file"


@dataclass(frozen=True)
class Adapter:
    """One dataset layout: how to recognise it and how to turn it into manifest rows.

    Attributes:
        name: registry key and the manifest's ``source`` value.
        description: the public dataset(s) this layout comes from.
        layout: one line showing the expected folder layout (used in error messages).
        detect: ``root -> bool``; cheap (lists a few folders, reads no label file).
        read: ``root -> DataFrame`` of manifest rows; pure, touches no pixels.
    """

    name: str
    description: str
    layout: str
    detect: Callable[[Path], bool]
    read: Callable[[Path], pd.DataFrame]


# ---------------------------------------------------------------- labels


def normal_labels() -> dict[str, float]:
    """A healthy image: NORMAL=1 and every one of the 16 findings known absent."""
    return {NORMAL: 1.0, **dict.fromkeys(FINDINGS, 0.0)}


def positive_labels(*present: str, absent: Iterable[str] = ()) -> dict[str, float]:
    """Findings ``present`` = 1, NORMAL = 0, ``absent`` = 0, everything else NaN (unannotated)."""
    for c in (*present, *absent):
        assert c in CLASSES, c
    out = {NORMAL: 0.0, **dict.fromkeys(absent, 0.0)}
    out.update(dict.fromkeys(present, 1.0))
    return out


def _has_id(patient: object) -> bool:
    """An id is present unless it is None, blank, or a NaN that a table reader left."""
    if patient is None or (isinstance(patient, float) and patient != patient):
        return False
    return bool(str(patient).strip()) and str(patient).strip().lower() != "nan"


# ---------------------------------------------------------------- files


def is_image(path: Path) -> bool:
    """True for a visible file that is an image: an image suffix, or a DICOM by its content.

    Scanners often write DICOM files with no suffix or with a UID for a name
    (``1.2.840.113619.2.55.3.604688119``), so a file whose suffix is neither an image type nor
    a known label/metadata type (:data:`METADATA_SUFFIXES`) is sniffed for a DICOM header
    (132 bytes read, no pixels; the ``DICM`` marker, or a bare dataset without preamble).
    """
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in METADATA_SUFFIXES:  # label files are never sniffed
        return False
    return image.is_image_file(path)


def is_dicom_file(path: Path) -> bool:
    """True if ``path`` is a DICOM by its bytes, with or without the 128-byte preamble."""
    return image.is_dicom_file(path)


def _real(path: str) -> str:
    """``os.path.realpath``, or the path itself when it cannot be one (a NUL byte in a name)."""
    try:
        return os.path.realpath(path)
    except (ValueError, OSError):
        return path


def unlisted_files(folder: Path, listed: Iterable[str], limit: int = 5) -> dict[str, Any]:
    """Visible files under ``folder`` that are not manifest rows, counted by why.

    So that nothing is dropped silently: a label or metadata file is expected; an image in a
    folder the adapter skips (``masks``) or a file that is not an image at all is reported.

    Args:
        folder: a dataset root an adapter read.
        listed: the ``path`` column of that adapter's rows.
        limit: example paths kept per reason.

    Returns:
        ``{"files": n, "by_reason": {reason: count}, "examples": {reason: [paths]}}``.
    """
    seen = {_real(x) for x in listed}
    by_reason: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    walk = image.walk_files(folder, want=lambda p: True)
    for path, why in walk.skipped:  # unreadable folders, loops, dangling links, FIFOs
        reason = why.split(":")[0]
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if len(examples.setdefault(reason, [])) < limit:
            examples[reason].append(path)
    for p in walk.files:
        if _real(str(p)) in seen:
            continue
        suffix = p.suffix.lower()
        if suffix in METADATA_SUFFIXES:
            reason = "label or metadata file"
        elif is_image(p):
            reason = "image the layout does not use (e.g. masks, another view)"
        else:
            reason = "not an image type"
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if len(examples.setdefault(reason, [])) < limit:
            examples[reason].append(str(p))
    return {"files": sum(by_reason.values()), "by_reason": by_reason, "examples": examples}


def list_images(folder: Path, recursive: bool = False, skip_dirs: Sequence[str] = ()) -> list[Path]:
    """Image files in ``folder``, sorted so manifests are deterministic.

    Args:
        folder: where to look; a missing folder yields nothing.
        recursive: also look in sub-folders.
        skip_dirs: sub-folder names (case-insensitive) never descended into, e.g. ``masks``.
    """
    if not folder.is_dir():
        return []
    skip = {s.lower() for s in skip_dirs}
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))
    # Symlinked sub-folders are followed; what cannot be walked is reported by unlisted_files.
    return sorted(image.walk_files(folder, want=is_image, skip_dirs=skip).files)


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def has_images(folder: Path) -> bool:
    """True if ``folder`` directly holds at least one image file (stops at the first)."""
    if not folder.is_dir():
        return False
    return any(p.is_file() and is_image(p) for p in folder.iterdir())


def find_base(root: Path, ok: Callable[[Path], bool], wrappers: Sequence[str] = ()) -> Path | None:
    """The dataset's own folder: ``root`` itself or ``root/<wrapper>`` where ``ok`` holds.

    Lets users pass either the folder a download unpacked into or the dataset folder itself.
    """
    if ok(root):
        return root
    for w in wrappers:
        if (root / w).is_dir() and ok(root / w):
            return root / w
    return None


def detector(ok: Callable[[Path], bool], wrappers: Sequence[str] = ()) -> Callable[[Path], bool]:
    """An :attr:`Adapter.detect` that looks for the layout ``ok`` at ``root`` or its wrappers."""
    return lambda root: find_base(root, ok, wrappers) is not None


def require_base(
    root: Path, ok: Callable[[Path], bool], wrappers: Sequence[str], layout: str
) -> Path:
    """Like :func:`find_base`, but raise a fix-it :class:`IngestError` when the layout is absent."""
    base = find_base(root, ok, wrappers)
    if base is None:
        raise IngestError(f"{root} does not have the expected layout {layout}")
    return base


# ---------------------------------------------------------------- rows


def row(
    source: str,
    base: Path,
    path: Path,
    labels: dict[str, float] | None = None,
    *,
    status: str = STATUS_OK,
    patient: str | None = None,
    split: str | None = None,
    view: str | None = None,
    site: str | None = None,
    label_source: str | None = None,
    raw_label: str | None = None,
    meta: dict[str, Any] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """One manifest record; ``image_id`` is ``<source>/<path relative to base>`` (or ``key``)."""
    rel = key if key is not None else path.relative_to(base).as_posix()
    rec: dict[str, Any] = {
        "image_id": f"{source}/{rel}",
        "path": os.path.abspath(path),  # absolute and normalised: no cwd-relative ".."
        "source": source,
        "official_split": split,
        "patient_id": f"{source}:{patient}" if _has_id(patient) else None,
        "view": view,
        "site": site,
        "label_source": label_source,
        "raw_label": raw_label,
        "meta": json.dumps(meta, sort_keys=True, default=str) if meta else None,
        "status": status,
    }
    if labels:
        rec.update(labels)
    return rec


SPLIT_NAMES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "train_val": "train",
    "trainval": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
"""Folder or list-file names that mean an official split, normalised to the manifest's names."""


def split_name(name: str) -> str | None:
    """Normalise a split folder name (``Train``, ``validation`` ...) or return None."""
    return SPLIT_NAMES.get(name.lower())


_NORM = re.compile(r"[^a-z0-9]+")


def norm_name(name: str) -> str:
    """Lower-case and strip punctuation/spaces so ``COVID-19``, ``covid_19`` and ``Covid 19`` match."""
    return _NORM.sub("", name.lower())
