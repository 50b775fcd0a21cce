"""Stage 10, cli: ``cxrad predict PATH... and cxrad export RUN``."""

from __future__ import annotations
