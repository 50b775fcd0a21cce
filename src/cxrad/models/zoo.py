"""Stage 6, models: importing this module registers every built-in model."""

from __future__ import annotations

from cxrad.models import cxr_fast, monai_nets, seed_fcn  # noqa: F401
