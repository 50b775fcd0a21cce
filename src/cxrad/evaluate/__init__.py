"""Stage 8, evaluate: metrics with patient-bootstrap CIs, baselines, shortcut audit, calibration, report.

Entry point: :func:`evaluate_run` (what ``cxrad evaluate`` calls). The metric functions work on
plain arrays, so they can score any predictions on any labelled manifest.
"""

from __future__ import annotations

from cxrad.evaluate.bootstrap import Resamples, cluster_ids, percentile_ci, resample_counts
from cxrad.evaluate.calibration import (
    brier_score,
    calibration_table,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from cxrad.evaluate.evaluator import evaluate_predictions, per_source
from cxrad.evaluate.metrics import classification_metrics, eligibility, sens_spec
from cxrad.evaluate.report import headline
from cxrad.evaluate.run import evaluate_run
from cxrad.evaluate.shortcut import audit_verdict, source_probe, within_source_auroc
from cxrad.evaluate.single_label import single_label_targets, top1_view

__all__ = [
    "Resamples",
    "audit_verdict",
    "brier_score",
    "calibration_table",
    "classification_metrics",
    "cluster_ids",
    "eligibility",
    "evaluate_predictions",
    "evaluate_run",
    "expected_calibration_error",
    "fit_temperature",
    "headline",
    "per_source",
    "percentile_ci",
    "reliability_bins",
    "resample_counts",
    "sens_spec",
    "single_label_targets",
    "source_probe",
    "top1_view",
    "within_source_auroc",
]
