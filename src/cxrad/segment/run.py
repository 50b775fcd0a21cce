"""Stage 3, segment: segment many files, write masks and overlays, one JSON record per file.

A file that cannot be read becomes a record with ``status = "error"``, a stable ``code`` and a
``reason``; the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cxrad.errors import CxradError
from cxrad.progress import Progress
from cxrad.segment.infer import Segmenter
from cxrad.segment.io import read_film
from cxrad.segment.overlay import overlay, save_png

logger = logging.getLogger(__name__)

MASK_SUFFIX = "__lungs.png"
OVERLAY_SUFFIX = "__lungs_overlay.png"


def _code(reason: str) -> str:
    head = reason.split(":", 1)[0].strip().lower().replace(" ", "_").replace("-", "_")
    return head or "unreadable"


def segment_file(
    segmenter: Segmenter,
    path: str | Path,
    out: str | Path | None = None,
    rel: str | Path | None = None,
) -> dict[str, Any]:
    """Segment one file; with ``out``, write ``<rel stem>__lungs.png`` and the overlay there.

    Returns:
        ``{"image", "status", "code", "reason", "lungs": summary | None, "mask", "overlay"}``.
    """
    record: dict[str, Any] = {
        "image": str(path),
        "status": "ok",
        "code": None,
        "reason": None,
        "lungs": None,
        "mask": None,
        "overlay": None,
    }
    try:
        img = read_film(path)
    except CxradError as e:
        reason = str(e)
        logger.warning("%s: %s", path, reason)
        code = getattr(e, "code", None) or _code(reason)
        return {**record, "status": "error", "code": code, "reason": reason}
    lungs = segmenter.segment(img)
    record["lungs"] = lungs.summary()
    if not lungs.mask.any():
        record.update(status="ok", code="no_lungs", reason="no lung field found")
    if out is not None:
        stem = Path(rel if rel is not None else Path(path).name)
        base = Path(out) / stem.parent / stem.stem
        mpath = save_png(lungs.mask.astype(np.uint8) * 255, f"{base}{MASK_SUFFIX}")
        opath = save_png(
            overlay(img, lungs.sides.image_left, lungs.sides.image_right), f"{base}{OVERLAY_SUFFIX}"
        )
        record.update(mask=str(mpath), overlay=str(opath))
    return record


def segment_files(
    paths: Iterable[str | Path | tuple[str | Path, str | Path]],
    out: str | Path | None = None,
    segmenter: Segmenter | None = None,
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one record per input, in order (see :func:`segment_file`).

    Args:
        paths: files, or ``(file, name to mirror under out)`` pairs.
        out: folder for masks and overlays; None writes nothing.
        segmenter: default the shipped one.
        progress: ``progress(done, total)`` callback.
    """
    items = list(paths)
    seg = segmenter or Segmenter()
    for i, item in enumerate(items):
        path, rel = item if isinstance(item, tuple) else (item, None)
        yield segment_file(seg, path, out, rel)
        if progress is not None:
            progress(i + 1, len(items))
