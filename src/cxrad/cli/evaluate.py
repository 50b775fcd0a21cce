"""Stage 10, cli: ``cxrad evaluate RUN --data WORK``."""

from __future__ import annotations
