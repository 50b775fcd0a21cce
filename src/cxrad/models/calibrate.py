"""Stage 6, models: fit what the decision step applies: temperatures, operating points, triage.

Fitted on labelled films the model did not train on (val, or a site's own films in
``cxrad adapt``), never on test. Only annotated labels count: a class's negatives are the
films whose source marks it 0, not every film without a 1.

- Temperature: per class, the T > 0 that minimises the NLL of ``sigmoid(logit / T)`` on the
  class's annotated rows (softmax runs: one T for all classes).
- Operating point: per class, by :class:`Rule`: ``spec=0.95`` (the default) keeps 95% of
  negatives below the cut-off, so a film from a source where the class is rare is not flagged
  for it by default; ``sens=0.90`` catches 90% of positives; ``youden`` maximises
  sensitivity + specificity. The cut-off sits in the middle (logit scale) of the gap between
  the two scores that bound it, for the largest margin either side. ``spec=0.95@source`` holds
  the target on *each* source's negatives (the strictest source's cut-off wins), so a class
  whose negatives come mostly from one source is not cut where only that source is clean.
- Triage: which score and policy keep healthy films clean while flagging sick ones, measured on
  the same films (:func:`fit_decision`).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score

from cxrad.errors import ModelError
from cxrad.labels import NORMAL
from cxrad.models.config import UNFITTED, Decision, OperatingPoint, RunConfig
from cxrad.models.decision import calibrated, finding_mask, triage_score
from cxrad.options import suggest

logger = logging.getLogger(__name__)

RULE_KINDS = ("spec", "sens", "youden")
DEFAULT_RULE = "spec=0.95"
PER_SOURCE = "@source"
MIN_SOURCE_ROWS = 20
"""A source counts on its own under ``@source`` with at least this many annotated rows on the
rule's side (20 negatives let one in 20 lie above a 0.95 cut); smaller ones are pooled."""


@dataclass(frozen=True)
class Rule:
    """How to choose a cut-off: ``spec=0.95``, ``sens=0.90``, ``youden``; ``@source``: per source."""

    kind: str = "spec"
    target: float | None = 0.95
    per_source: bool = False

    def __str__(self) -> str:
        text = self.kind if self.target is None else f"{self.kind}={self.target:g}"
        return text + (PER_SOURCE if self.per_source else "")


def parse_rule(text: str | Rule) -> Rule:
    """``"spec=0.95"`` -> ``Rule("spec", 0.95)``; ``"spec=0.95@source"`` holds it per source.

    Raises:
        ModelError: an unknown kind, a target outside (0, 1), or ``youden@source``.
    """
    if isinstance(text, Rule):
        return text
    body = str(text).strip()
    per_source = body.lower().endswith(PER_SOURCE)
    if per_source:
        body = body[: -len(PER_SOURCE)]
    elif "@" in body:
        raise ModelError(f"operating point {text!r}: the only scope after @ is {PER_SOURCE}")
    rule = _parse_plain(body, str(text))
    if per_source and rule.kind == "youden":
        raise ModelError("youden has no per-source form; use spec=0.95@source or sens=0.90@source")
    return Rule(rule.kind, rule.target, per_source)


def _parse_plain(body: str, text: str) -> Rule:
    kind, _, value = body.partition("=")
    kind = kind.strip().lower()
    if kind not in RULE_KINDS:
        raise ModelError(
            f"unknown operating point {text!r}; expected spec=0.95, sens=0.90 or youden"
            f" (optionally @source).{suggest(kind, RULE_KINDS)}"
        )
    if kind == "youden":
        return Rule("youden", None)
    try:
        target = float(value)
    except ValueError:
        raise ModelError(f"operating point {text!r} needs a target, e.g. {kind}=0.95") from None
    if not 0.0 < target < 1.0:
        raise ModelError(f"operating point target must be in (0, 1), got {target}")
    return Rule(kind, target)


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


def fit_point(
    scores: np.ndarray, y: np.ndarray, rule: Rule | str, groups: np.ndarray | None = None
) -> OperatingPoint:
    """The cut-off on ``scores`` that ``rule`` picks on the annotated rows of ``y`` (1/0/NaN).

    ``groups`` (each row's source) matters only for an ``@source`` rule: the cut-off is then
    the strictest of the per-source ones (highest for spec, lowest for sens), so every source
    with :data:`MIN_SOURCE_ROWS` rows on the rule's side meets the target on its own.
    """
    rule = parse_rule(rule)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = ~np.isnan(y) & np.isfinite(s)
    if rule.per_source and groups is not None and rule.kind != "youden":
        return _fit_per_source(s[m], y[m], np.asarray(groups, dtype=object)[m], rule)
    s, y = s[m], y[m]
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    need_neg, need_pos = rule.kind in ("spec", "youden"), rule.kind in ("sens", "youden")
    if (need_neg and not len(neg)) or (need_pos and not len(pos)):
        what = "negatives" if need_neg and not len(neg) else "positives"
        return _measured(UNFITTED, f"unfitted: no val {what}", None, pos, neg)
    pooled = np.unique(s)
    if rule.kind == "spec":
        allowed = math.floor((1.0 - float(rule.target)) * len(neg) + 1e-9)
        lo = neg[len(neg) - allowed - 1]
        above = pooled[pooled > lo]
        t = _midpoint(lo, float(above[0]) if len(above) else None)
    elif rule.kind == "sens":
        k = max(1, math.ceil(float(rule.target) * len(pos) - 1e-9))
        hi = pos[len(pos) - k]
        below = pooled[pooled < hi]
        t = _midpoint(float(below[-1]), hi) if len(below) else hi
    else:
        cands = np.concatenate([pooled, [np.inf]])
        sens = (len(pos) - np.searchsorted(pos, cands, "left")) / len(pos)
        j = sens + np.searchsorted(neg, cands, "left") / len(neg)
        k = int(np.argmax(j))
        hi = float(cands[k])
        lo = float(pooled[k - 1]) if k > 0 else None
        t = hi if lo is None else _midpoint(lo, hi if np.isfinite(hi) else None)
    return _measured(t, rule.kind, rule.target, pos, neg)


def _fit_per_source(s: np.ndarray, y: np.ndarray, g: np.ndarray, rule: Rule) -> OperatingPoint:
    """The strictest of the per-source cut-offs, measured on all annotated rows.

    Sources too small to trust alone are pooled into one rest group (if that reaches the
    minimum), and the cut-off over all rows is always a candidate, so none is left out.
    """
    plain = Rule(rule.kind, rule.target)
    side = 0 if rule.kind == "spec" else 1
    counts = collections.Counter(g[y == side])
    big = [k for k, n in counts.items() if n >= MIN_SOURCE_ROWS]
    rest = ~np.isin(g, big)
    parts = [g == k for k in big] + [np.ones(len(g), dtype=bool)]
    if (y[rest] == side).sum() >= MIN_SOURCE_ROWS:
        parts.append(rest)
    points = [fit_point(s[p], y[p], plain) for p in parts]
    fitted = [p.threshold for p in points if not p.method.startswith("unfitted")]
    if not fitted:
        return points[len(big)]  # the cut over all rows, saying what it lacks
    t = max(fitted) if rule.kind == "spec" else min(fitted)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    return _measured(t, f"{rule.kind}{PER_SOURCE}", rule.target, pos, neg)


def _measured(
    t: float, method: str, target: float | None, pos: np.ndarray, neg: np.ndarray
) -> OperatingPoint:
    return OperatingPoint(
        threshold=float(t),
        method=method,
        target=target,
        val_sensitivity=float(np.mean(pos >= t)) if len(pos) else None,
        val_specificity=float(np.mean(neg < t)) if len(neg) else None,
        n_pos=len(pos),
        n_neg=len(neg),
    )


def _midpoint(lo: float, hi: float | None) -> float:
    """Half-way between ``lo`` and ``hi`` on the logit scale, strictly above ``lo``.

    Scores outside (0, 1) (a logit margin) use the plain middle. ``hi=None``: just above ``lo``.
    """
    if hi is None:
        hi = 1.0 if 0.0 <= lo < 1.0 else lo + 1.0
    if not 0.0 <= lo < hi <= 1.0:
        return float(max((lo + hi) / 2, np.nextafter(lo, np.inf)))
    a, b = np.clip([lo, hi], 1e-7, 1 - 1e-7)
    mid = (math.log(a / (1 - a)) + math.log(b / (1 - b))) / 2
    t = 1.0 / (1.0 + math.exp(-mid))
    return float(min(max(t, np.nextafter(lo, 1.0)), hi))


def fit_points(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    rule: Rule | str,
    groups: np.ndarray | None = None,
) -> dict[str, OperatingPoint]:
    """One :class:`OperatingPoint` per class (``groups``: each row's source, for ``@source``)."""
    return {c: fit_point(probs[:, j], labels[:, j], rule, groups) for j, c in enumerate(classes)}


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
            point = _measured(0.0, "any finding over its threshold", None, *_split(s, y_abn))
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
