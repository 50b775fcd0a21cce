"""Stage 8, evaluate: write an evaluation's files (plots, ``metrics.json``, ``report.html``).

Each file is written to a temporary name and renamed, so a failure never leaves half a report.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrad.evaluate.films import write_film_table
from cxrad.evaluate.plots import confusion_png, curves_png, reliability_png
from cxrad.evaluate.report import render_html
from cxrad.models.config import json_safe

logger = logging.getLogger(__name__)


def write_outputs(
    m: dict[str, Any],
    rows: pd.DataFrame,
    probs: np.ndarray,
    out_dir: str | Path,
    films: pd.DataFrame | None = None,
) -> dict[str, str]:
    """Write the PNGs, ``metrics.json``, ``report.html`` and (given ``films``) the per-film
    ``predictions.parquet`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = m["top1"]["classes"]
    y = rows[classes].to_numpy(dtype=np.float64)
    per_class = m["classification"]["per_class"]
    images: dict[str, str | None] = {
        "roc": curves_png(y, probs, per_class, classes, "roc", out / "roc.png"),
        "pr": curves_png(y, probs, per_class, classes, "pr", out / "pr.png"),
        "reliability": reliability_png(m["calibration"], out / "reliability.png"),
        "confusion": (
            confusion_png(m["top1"]["confusion"], classes, out / "confusion.png")
            if m["top1"].get("status") == "ok"
            else None
        ),
    }
    images = {k: (str(v) if v else None) for k, v in images.items()}
    paths = {
        "metrics": str(out / "metrics.json"),
        "report": str(out / "report.html"),
        **{k: v for k, v in images.items() if v},
    }
    if films is not None:
        paths["predictions"] = str(write_film_table(films, out / "predictions.parquet"))
    m["paths"] = paths
    for name, text in (
        ("metrics.json", json.dumps(json_safe(m), indent=2, allow_nan=False)),
        ("report.html", render_html(m, images)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
    logger.info("wrote %s", out / "report.html")
    return paths
