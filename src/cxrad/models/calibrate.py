"""Stage 6, models: fit what the decision step applies: temperatures, operating points, triage.

Fitted on labelled films the model did not train on (val, or a site's own films in
``cxrad adapt``), never on test. Only annotated labels count: a class's negatives are the
films whose source marks it 0, not every film without a 1.

- Temperature: per class, the T > 0 that minimises the NLL of ``sigmoid(logit / T)`` on the
  class's annotated rows (softmax runs: one T for all classes).
- Operating point: per class, by a :class:`Rule` (:mod:`cxrad.models.operating_points`).
- Triage: which score and policy keep healthy films clean while flagging sick ones, measured on
  the same films (:func:`fit_decision`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score

from cxrad.errors import ModelError
from cxrad.labels import NORMAL
from cxrad.models.config import Decision, OperatingPoint, RunConfig
from cxrad.models.decision import calibrated, finding_mask, triage_score
from cxrad.models.operating_points import (
    DEFAULT_RULE,
    MIN_SOURCE_ROWS,
    PER_SOURCE,
    Rule,
    fit_point,
    fit_points,
    measured_point,
    parse_rule,
)

logger = logging.getLogger(__name__)


def fit_temperatures(
    logits: np.ndarray, labels: np.ndarray, activation: str = "sigmoid"
) -> tuple[float, ...]:
    """One temperature per class (1.0 where there is nothing to fit on)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if activation == "softmax":
        pos = np.nan_to_num(y) == 1
        keep = pos.sum(axis=1) == 1
        if not keep.any():
            return (1.0,) * z.shape[1]
        zk, target = z[keep], pos[keep].argmax(axis=1)

        def nll(t: float) -> float:
            s = zk / t
            s = s - s.max(axis=1, keepdims=True)
            logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
            return float(-logp[np.arange(len(target)), target].mean())

        return (_minimise(nll),) * z.shape[1]
    out = []
    for j in range(z.shape[1]):
        m = ~np.isnan(y[:, j])
        zj, yj = z[m, j], y[m, j]
        if not ((yj == 1).any() and (yj == 0).any()):
            out.append(1.0)
            continue

        def nll(t: float, zj: np.ndarray = zj, yj: np.ndarray = yj) -> float:
            s = zj / t
            return float(np.mean(np.maximum(s, 0) - s * yj + np.log1p(np.exp(-np.abs(s)))))

        out.append(_minimise(nll))
    return tuple(out)


def _minimise(nll: Any) -> float:
    res = minimize_scalar(
        lambda log_t: nll(float(np.exp(log_t))),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return round(float(np.exp(res.x)), 6)


def triage_labels(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """``(N,)`` 1 = abnormal film, 0 = normal film, NaN = unknown.

    From the NORMAL label where a source gives it, else 1 where any finding is present.
    """
    y = np.asarray(labels, dtype=np.float64)
    out = np.full(len(y), np.nan)
    if NORMAL in classes:
        out = 1.0 - y[:, list(classes).index(NORMAL)]
    mask = finding_mask(classes)
    if mask.any():
        any_pos = (np.nan_to_num(y[:, mask]) == 1).any(axis=1)
        out = np.where(np.isnan(out) & any_pos, 1.0, out)
    return out


def film_stats(findings: np.ndarray, abnormal: np.ndarray, y_abn: np.ndarray) -> dict[str, Any]:
    """Film-level numbers of one policy: clean normal films, findings per normal, flagged sick.

    ``j`` counts a normal film as right only when it is *cleared*: called normal by triage and
    listing no finding. Counting films with no finding alone would reward a policy that calls
    healthy films abnormal but lists nothing on them.
    """
    normal, sick = y_abn == 0, y_abn == 1
    n_find = findings.sum(axis=1)
    out: dict[str, Any] = {"n_normal": int(normal.sum()), "n_abnormal": int(sick.sum())}
    out["normal_clean"] = float(np.mean(n_find[normal] == 0)) if normal.any() else None
    out["findings_per_normal"] = float(np.mean(n_find[normal])) if normal.any() else None
    out["normal_called_normal"] = float(np.mean(~abnormal[normal])) if normal.any() else None
    out["abnormal_flagged"] = float(np.mean(abnormal[sick])) if sick.any() else None
    cleared = ~abnormal & (n_find == 0)
    out["normal_cleared"] = float(np.mean(cleared[normal])) if normal.any() else None
    vals = (out["normal_cleared"], out["abnormal_flagged"])
    out["j"] = None if None in vals else float(vals[0] + vals[1] - 1.0)
    return out


def fit_decision(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    thresholds: np.ndarray,
    rule: Rule | str = DEFAULT_RULE,
    groups: np.ndarray | None = None,
) -> Decision:
    """Pick the triage score, its operating point and the policy on labelled (val) films.

    Candidates, all under the ``triage_gate`` policy (a film called normal lists no finding):
    1 - p(NORMAL) and the largest finding probability, each cut at ``rule`` on normal films, and
    "any finding over its threshold" (``finding_margin`` at 0). The one with the highest
    film-level J = share of normal films cleared (called normal, no finding) + share of abnormal
    films flagged - 1 wins (ties: in that order). The ``independent`` policy (no gate) is
    measured with the winner, for the record.

    Not a candidate: a triage score at its own val Youden cut. It won on val J, but in all four
    leave-one-source-out settings it called more of the unseen source's normal films abnormal
    (triage specificity 0.53 -> 0.32, 0.55 -> 0.27, 0.79 -> 0.53, 0.14 -> 0.04), buying
    sensitivity there (held-out J better in two settings, worse in two); a healthy film called
    sick at a new site is the failure cxrad is fixing first (``benchmarks/bench_triage_cut.py``).
    """
    rule = parse_rule(rule)
    y_abn = triage_labels(labels, classes)
    over = (probs >= thresholds) & finding_mask(classes)
    cands = _triage_candidates(probs, classes, thresholds, y_abn, over, rule, groups)
    if not cands:
        raise ModelError("a run needs a NORMAL output or at least one finding to triage")
    best = max(cands, key=lambda k: cands[k][1]["j"] if cands[k][1]["j"] is not None else -2)
    point, _, over_b, abnormal_b = cands[best]
    alternatives = {f"triage_gate/{k}": v[1] for k, v in cands.items()}
    alternatives[f"independent/{best}"] = film_stats(over_b, abnormal_b, y_abn)
    return Decision(
        policy="triage_gate",
        score=best,
        triage=point,
        chosen_by="highest val film-level J (normal films cleared + abnormal films flagged - 1)",
        alternatives=alternatives,
    )


def _triage_candidates(
    probs: np.ndarray,
    classes: Sequence[str],
    thresholds: np.ndarray,
    y_abn: np.ndarray,
    over: np.ndarray,
    rule: Rule,
    groups: np.ndarray | None = None,
) -> dict[str, tuple[OperatingPoint, dict[str, Any], np.ndarray, np.ndarray]]:
    """``{score: (point, film stats, over, abnormal)}`` for every triage score."""
    kinds = [k for k in ("not_normal", "max_finding") if k != "not_normal" or NORMAL in classes]
    if finding_mask(classes).any():
        kinds.append("finding_margin")
    cands: dict[str, Any] = {}
    for kind in kinds:
        s = triage_score(probs, classes, kind, thresholds)
        if kind == "finding_margin":
            point = measured_point(0.0, "any finding over its threshold", None, *_split(s, y_abn))
        else:
            point = fit_point(s, y_abn, rule, groups)
        abnormal = s >= point.threshold
        stats = film_stats(over & abnormal[:, None], abnormal, y_abn)
        stats["triage_auroc"] = _auroc(s, y_abn)
        cands[kind] = (point, stats, over, abnormal)
    return cands


def _split(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return s[y == 1], s[y == 0]


def _auroc(s: np.ndarray, y: np.ndarray) -> float | None:
    m = ~np.isnan(y)
    if not ((y[m] == 1).any() and (y[m] == 0).any()):
        return None
    return float(roc_auc_score(y[m], s[m]))


def recalibrate(
    config: RunConfig,
    logits: np.ndarray,
    labels: np.ndarray,
    rule: Rule | str = DEFAULT_RULE,
    fit_temperature: bool = True,
    groups: np.ndarray | None = None,
) -> RunConfig:
    """``config`` with temperatures, operating points and the decision refitted on these films.

    The one finalising step shared by ``cxrad train``, ``cxrad ensemble``, ``cxrad adapt`` and
    :func:`refit`-style tools: give it the logits and labels of films the model did not train on,
    and for an ``@source`` rule each film's source (``groups``).
    """
    rule = parse_rule(rule)
    classes = list(config.classes)
    temps = (
        fit_temperatures(logits, labels, config.activation)
        if fit_temperature
        else config.temperatures()
    )
    probs = calibrated(logits, config.activation, temps)
    ops = fit_points(probs, labels, classes, rule, groups)
    thr = np.array([ops[c].threshold for c in classes])
    decision = fit_decision(probs, labels, classes, thr, rule, groups)
    out = config.evolve(temperature=temps, operating_points=ops, decision=decision)
    logger.info(
        "decision: %s on %s at %.4g (val spec %s, sens %s); operating points %s",
        decision.policy,
        decision.score,
        decision.triage.threshold,
        decision.triage.val_specificity,
        decision.triage.val_sensitivity,
        rule,
    )
    return out


__all__ = [
    "DEFAULT_RULE",
    "MIN_SOURCE_ROWS",
    "PER_SOURCE",
    "Rule",
    "film_stats",
    "fit_decision",
    "fit_point",
    "fit_points",
    "fit_temperatures",
    "parse_rule",
    "recalibrate",
    "triage_labels",
]
