"""Stage 10, cli: ``cxrad ingest DIR... --out WORK``."""

from __future__ import annotations
