"""Stage 1, ingest: one adapter per public dataset layout, merged into one manifest.

Example:
    >>> from cxrad.ingest import ingest
    >>> manifest, summary = ingest(["../shared/data/kaggle-pediatric-pneumonia"])
"""

from __future__ import annotations

from cxrad.ingest.base import Adapter
from cxrad.ingest.registry import ADAPTERS, detect_format, get_adapter, known_layouts
from cxrad.ingest.run import ingest, summarize

__all__ = [
    "ADAPTERS",
    "Adapter",
    "detect_format",
    "get_adapter",
    "ingest",
    "known_layouts",
    "summarize",
]
