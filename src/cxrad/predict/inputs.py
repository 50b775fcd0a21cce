"""Stage 9, predict: turn the user's files, folders and globs into a list of images to read.

Folders are walked recursively but only files with a known image extension are taken, so a
folder with notes or CSVs beside the X-rays works. A file named explicitly is always tried,
whatever its extension: extension-less DICOM exports are common. Every argument must match
something: a typo in one path fails fast, before a long run, with a one-line reason.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrad.errors import ImageReadError, PredictError
from cxrad.image import IMAGE_SUFFIXES, is_image_file, walk_files

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = IMAGE_SUFFIXES
"""Extensions picked up when walking a folder (case-insensitive): :data:`cxrad.image.IMAGE_SUFFIXES`."""

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputFile:
    """One image to predict on.

    Attributes:
        path: the file as found (absolute).
        rel: the name to mirror under a heatmaps folder: the path below the folder argument it
            was found in, or just the file name for a file or glob argument.
        skipped: why a path found while walking a folder cannot be read (an unreadable
            folder, a symlink loop, a dangling link, a FIFO); the predictor writes it as an
            error record, so nothing is skipped silently.
    """

    path: Path
    rel: Path
    skipped: str | None = None


def _walk(root: Path, skipped: list[InputFile]) -> Iterator[Path]:
    # Symlinked folders are followed (loops are not); what cannot be walked becomes a record.
    walk = walk_files(root, want=is_image_file)  # a UID-named DICOM counts, as in ingest
    for path, reason in walk.skipped:
        p = Path(path)
        skipped.append(InputFile(p.absolute(), _rel(p, root), skipped=reason))
    yield from walk.files


def _rel(p: Path, root: Path) -> Path:
    try:
        return p.relative_to(root)
    except ValueError:
        return Path(p.name)


def find_inputs(sources: Iterable[str | os.PathLike[str]]) -> list[InputFile]:
    """Expand files, folders (recursive) and glob patterns into the images to read.

    Duplicates (the same file reached twice) are kept once, in first-seen order.

    Args:
        sources: paths as the user typed them.

    Raises:
        PredictError: no sources, an empty source, or a source that matches no image
            (missing path, empty folder, glob without matches).

    Example:
        >>> [f.path.name for f in find_inputs(["scans/"])]  # doctest: +SKIP
        ['a.png', 'b.dcm']
    """
    sources = [str(s) for s in sources]
    if not sources:
        raise PredictError("no inputs given; pass image files, folders or glob patterns")
    seen: set[Path] = set()
    found: list[InputFile] = []

    def add(path: Path, rel: Path) -> None:
        path = path.absolute()
        if path not in seen:
            seen.add(path)
            found.append(InputFile(path, rel))

    for src in sources:
        before = len(found)
        matched = 0
        if not src.strip():  # Path("") is ".", so an unset shell variable would scan the cwd
            raise PredictError(
                "an empty path was given (an unset variable?); pass a file or folder"
            )
        p = Path(src).expanduser()
        if p.is_dir():
            skipped: list[InputFile] = []
            for f in _walk(p, skipped):
                add(f, _rel(f, p))
                matched += 1
            for s in skipped:
                found.append(s)
                matched += 1
            if not matched:
                raise PredictError(
                    f"folder {src} holds no images; expected files ending in "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))}, or DICOM files by any name "
                    "(searched recursively)"
                )
        elif p.is_file():
            add(p, Path(p.name))
            matched = 1
        elif _GLOB_CHARS & set(src):
            for m in sorted(glob.glob(os.path.expanduser(src), recursive=True)):
                mp = Path(m)
                if mp.is_file():
                    add(mp, Path(mp.name))
                    matched += 1
            if not matched:
                raise PredictError(f"pattern {src!r} matches no files; check the pattern")
        else:
            raise PredictError(f"{src} does not exist; pass an image file, a folder or a glob")
        logger.debug("%s: %d image(s)", src, len(found) - before)
    return found


def check_output_dir(
    out: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]]
) -> None:
    """Refuse an output folder inside an input folder.

    Raw data is read-only, and overlays written among the inputs would be read back as
    X-rays by the next run over that folder.

    Raises:
        PredictError: ``out`` is, or lies inside, one of the folder ``sources``.
    """
    target = Path(out).expanduser().resolve()
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir() and target.is_relative_to(p.resolve()):
            raise PredictError(
                f"--heatmaps {out} is inside the input folder {src}; write heatmaps to a folder "
                "outside the inputs (they are never written to)"
            )


def unique_stem(root: Path, f: InputFile, used: set[Path]) -> Path:
    """``root/<rel without suffix>``; a second image with the same stem gets a path hash."""
    stem = root / f.rel.parent / f.rel.stem
    if stem in used:
        tag = hashlib.sha1(str(f.path).encode()).hexdigest()[:8]
        stem = stem.with_name(f"{stem.name}-{tag}")
    used.add(stem)
    return stem


def array_to_unit(a: np.ndarray) -> np.ndarray:
    """An array ``prepare`` takes: ``uint8`` (grey or RGB(A)), or 2-D float in [0, 1]."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        if a.dtype == np.uint8:
            return a
        a = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if a.ndim != 2 or a.size == 0:
        raise PredictError(
            f"expected a 2-D grey or H×W×3/4 colour image array, got shape {a.shape}"
        )
    if a.dtype == np.uint8:
        return a
    finite = np.isfinite(a) if a.dtype.kind in "fc" else np.ones(a.shape, bool)
    if not finite.any():
        raise ImageReadError(
            "not_an_image", "not an image: the array holds no finite value (all NaN or Infinity)"
        )
    f = np.nan_to_num(a.astype(np.float64))
    lo, hi = float(f.min()), float(f.max())
    if a.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return f.astype(np.float32)
    if a.dtype == np.bool_:
        return f.astype(np.float32)
    return ((f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)).astype(np.float32)
