"""Stage 3, split: duplicate groups across sources and leak-free, stratified, seeded splits."""

from __future__ import annotations

from cxrad.split.dedup import FINE_DISTANCE, MAX_DISTANCE, assign_dup_groups, label_conflicts
from cxrad.split.splitter import RATIOS, assign_splits, check_ratios
from cxrad.split.work import leak_checks, split_work

__all__ = [
    "FINE_DISTANCE",
    "MAX_DISTANCE",
    "RATIOS",
    "assign_dup_groups",
    "assign_splits",
    "check_ratios",
    "label_conflicts",
    "leak_checks",
    "split_work",
]
