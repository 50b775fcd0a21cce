"""Stage 10, cli: ``cxrad split WORK``."""

from __future__ import annotations
