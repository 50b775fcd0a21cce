"""Stage 10, cli: ``cxrad preprocess WORK``."""

from __future__ import annotations
