"""Stage 8b, adapt: refit temperatures, operating points and triage on a site's films; measure honestly.

What is refitted, per class, needs enough of the site's own films: a temperature needs
:data:`MIN_POSITIVES` positives and :data:`MIN_NEGATIVES` negatives; a ``spec=`` operating
point needs the negatives, a ``sens=`` one the positives, ``youden`` both. Otherwise the run's
value is kept, and said so. The "after" numbers are **cross-fitted**: the films are split in
two by patient, each half is decided by what was fitted on the other half, so the reported
sensitivity and specificity are not measured on the films that set the thresholds. The run
written to ``out`` is fitted on all the films.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cxrad.adapt.site import load_site
from cxrad.errors import AdaptError
from cxrad.evaluate.bootstrap import percentile_ci, resample_counts
from cxrad.folderlock import writes_folder
from cxrad.models import DEFAULT_RULE, DecisionStep, Rule, RunConfig, load_run, parse_rule, save_run
from cxrad.models.calibrate import (
    fit_decision,
    fit_point,
    fit_temperatures,
    triage_labels,
)
from cxrad.models.config import json_safe
from cxrad.models.decision import calibrated
from cxrad.models.shift import score_shift

logger = logging.getLogger(__name__)

MIN_POSITIVES = 10
MIN_NEGATIVES = 20


@dataclass
class AdaptReport:
    """Before/after per class and for triage (with 95% CIs), the score shift, the warnings."""

    rule: str
    n_films: int
    per_class: list[dict[str, Any]] = field(default_factory=list)
    triage: dict[str, Any] = field(default_factory=dict)
    shift: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    out: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Paths under the site folder not used, each with its reason (nothing is left out unsaid)."""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _counts(y: np.ndarray) -> tuple[int, int]:
    return int(np.sum(y == 1)), int(np.sum(y == 0))


def _refit(
    config: RunConfig, logits: np.ndarray, labels: np.ndarray, rule: Rule
) -> tuple[RunConfig, dict[str, str]]:
    """``config`` refitted on these films where they are enough; what happened per class."""
    classes = list(config.classes)
    old_t = list(config.temperatures())
    new_t = fit_temperatures(logits, labels, config.activation)
    temps, ops, what = [], dict(config.operating_points), {}
    for j, c in enumerate(classes):
        n_pos, n_neg = _counts(labels[:, j])
        both = n_pos >= MIN_POSITIVES and n_neg >= MIN_NEGATIVES
        temps.append(new_t[j] if both else old_t[j])
        enough = {"spec": n_neg >= MIN_NEGATIVES, "sens": n_pos >= MIN_POSITIVES}.get(
            rule.kind, both
        )
        what[c] = "refitted" if enough else f"kept the run's ({n_pos} positives, {n_neg} negatives)"
    probs = calibrated(logits, config.activation, temps)
    for j, c in enumerate(classes):
        if what[c] == "refitted":
            ops[c] = fit_point(probs[:, j], labels[:, j], rule)
    fitted = config.evolve(temperature=tuple(temps), operating_points=ops)
    y_abn = triage_labels(labels, classes)
    n_sick, n_normal = _counts(y_abn)
    if n_sick >= 1 and n_normal >= MIN_NEGATIVES:
        thr = np.array([fitted.threshold(c) for c in classes])
        fitted = fitted.evolve(decision=fit_decision(probs, labels, classes, thr, rule))
        what["triage"] = "refitted"
    else:
        what["triage"] = f"kept the run's ({n_sick} abnormal, {n_normal} normal films)"
    return fitted, what


def _rate(hit: np.ndarray, rows: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    n = int(rows.sum())
    if n == 0:
        return {"value": None, "ci": None, "n": 0}
    wr = w[:, rows]
    tot = wr.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (wr * hit[rows]).sum(axis=1) / tot
    return {"value": float(hit[rows].mean()), "ci": percentile_ci(boot[tot > 0]), "n": n}


def _cross_fit(
    config: RunConfig,
    logits: np.ndarray,
    labels: np.ndarray,
    clusters: np.ndarray,
    rule: Rule,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class calls and triage calls for every film, each decided by the other half's fit."""
    k = int(clusters.max()) + 1
    fold = np.random.default_rng(seed).permutation(k)[clusters] % 2
    over = np.zeros(labels.shape, bool)
    abnormal = np.zeros(len(labels), bool)
    for f in (0, 1):
        fit_rows, test_rows = fold != f, fold == f
        if not test_rows.any():
            continue
        fitted, _ = _refit(config, logits[fit_rows], labels[fit_rows], rule)
        d = DecisionStep(fitted)(logits[test_rows])
        over[test_rows], abnormal[test_rows] = d.probabilities >= d.thresholds, d.abnormal
    return over, abnormal


def adapt_logits(
    config: RunConfig,
    logits: np.ndarray,
    labels: np.ndarray,
    clusters: np.ndarray,
    rule: Rule | str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[RunConfig, AdaptReport]:
    """Refit ``config`` on a site's films (logits, labels 1/0/NaN, patient clusters).

    Raises:
        AdaptError: no positive film (nothing to measure sensitivity on) or no negative one.
    """
    rule = parse_rule(rule or config.extra.get("operating_point_rule") or DEFAULT_RULE)
    classes = list(config.classes)
    labels = np.asarray(labels, dtype=np.float64)
    y_abn = triage_labels(labels, classes)
    n_sick, _ = _counts(y_abn)
    if n_sick == 0 and not (labels == 1).any(axis=0)[[c != "NORMAL" for c in classes]].any():
        raise AdaptError(
            f"the site's {len(labels)} films have no positive finding, so sensitivity cannot be "
            "measured and operating points would only move blindly; add labelled abnormal films"
        )
    if not (labels == 0).any():
        raise AdaptError(f"the site's {len(labels)} films have no negative label; add normal films")
    fitted, what = _refit(config, logits, labels, rule)
    over_x, abn_x = _cross_fit(config, logits, labels, clusters, rule, seed)
    before = DecisionStep(config)(logits)
    w = resample_counts(int(clusters.max()) + 1, n_boot, seed)[:, clusters]
    report = AdaptReport(
        str(rule), len(labels), shift=score_shift(config.extra.get("val_scores"), logits, classes)
    )
    for j, c in enumerate(classes):
        pos, neg = labels[:, j] == 1, labels[:, j] == 0
        b = before.probabilities[:, j] >= before.thresholds[j]
        report.per_class.append(
            {
                "class": c,
                "n_pos": int(pos.sum()),
                "n_neg": int(neg.sum()),
                "what": what[c],
                "threshold_before": config.threshold(c),
                "threshold_after": fitted.threshold(c),
                "before": {"sensitivity": _rate(b, pos, w), "specificity": _rate(~b, neg, w)},
                "after": {
                    "sensitivity": _rate(over_x[:, j], pos, w),
                    "specificity": _rate(~over_x[:, j], neg, w),
                },
            }
        )
        if pos.sum() < MIN_POSITIVES:
            report.warnings.append(
                f"{c}: only {int(pos.sum())} positive film(s) (want {MIN_POSITIVES}); its "
                "sensitivity is barely measured here"
            )
    sick, normal = y_abn == 1, y_abn == 0
    report.triage = {
        "what": what["triage"],
        "before": {
            "sensitivity": _rate(before.abnormal, sick, w),
            "specificity": _rate(~before.abnormal, normal, w),
        },
        "after": {"sensitivity": _rate(abn_x, sick, w), "specificity": _rate(~abn_x, normal, w)},
    }
    for m in report.warnings:
        logger.warning("adapt: %s", m)
    return fitted, report


@writes_folder("out", "cxrad adapt", AdaptError)
def adapt_run(
    run: str | Path,
    data: str | Path,
    out: str | Path,
    rule: Rule | str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    split: str = "all",
) -> AdaptReport:
    """Adapt ``run`` to a site's labelled films in ``data`` and write the new run to ``out``.

    Example:
        >>> report = adapt_run("default", "site_films/", "runs/site")  # doctest: +SKIP
    """
    model, config = load_run(run)
    site = load_site(model, config, data, split)
    fitted, report = adapt_logits(
        config, site.logits, site.labels, site.clusters, rule, n_boot, seed
    )
    fitted = fitted.evolve(
        extra={
            **fitted.extra,
            "adapted": {
                "from_run": str(run),
                "data": str(data),
                "n_films": len(site.labels),
                "n_skipped": len(site.skipped),
                "split": split,
                "rule": report.rule,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        }
    )
    save_run(out, model, fitted)
    report.out = str(out)
    report.skipped = [{"path": path, "reason": why} for path, why in site.skipped]
    (Path(out) / "adapt.json").write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    return report
