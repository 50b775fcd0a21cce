"""Stage 7, train: Lightning around the pure models: masked losses, checkpoints, resume, runs.

``cxrad.models`` never imports this package, so prediction loads a run without Lightning.
"""

from __future__ import annotations

from cxrad.train.ensemble import ensemble_runs
from cxrad.train.finalise import finalise, predict_logits, refit_run, val_logits
from cxrad.train.fit import fit, git_commit, parse_devices, predict_probs, prepare, train
from cxrad.train.losses import (
    masked_bce_with_logits,
    pos_weight_from_labels,
    single_label_cross_entropy,
)
from cxrad.train.metrics import macro_auroc, per_class_auroc, youden_thresholds
from cxrad.train.module import CxrModule
from cxrad.train.setup import Hardware, cpu_threads, hardware

__all__ = [
    "CxrModule",
    "Hardware",
    "cpu_threads",
    "ensemble_runs",
    "finalise",
    "fit",
    "git_commit",
    "hardware",
    "macro_auroc",
    "masked_bce_with_logits",
    "parse_devices",
    "per_class_auroc",
    "pos_weight_from_labels",
    "predict_logits",
    "predict_probs",
    "prepare",
    "refit_run",
    "single_label_cross_entropy",
    "train",
    "val_logits",
    "youden_thresholds",
]
