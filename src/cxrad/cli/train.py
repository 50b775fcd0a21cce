"""Stage 10, cli: ``cxrad train WORK --model NAME --out RUN``."""

from __future__ import annotations
