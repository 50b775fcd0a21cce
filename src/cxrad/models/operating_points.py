"""Stage 6, models: operating points: the rule that picks a class's cut-off, and the fitting.

- :class:`Rule`: ``spec=0.95`` (the default) keeps 95% of a class's annotated val negatives
  below the cut-off, so a film from a source where the class is rare is not flagged for it by
  default; ``sens=0.90`` catches 90% of positives; ``youden`` maximises sensitivity +
  specificity. ``@source`` (``spec=0.95@source``) holds the target on *each* source's rows (the
  strictest source's cut-off wins), so a class whose negatives come mostly from one source is
  not cut where only that source is clean.
- :func:`fit_point`: the cut-off sits in the middle (logit scale) of the gap between the two
  scores that bound it, for the largest margin either side.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrad.errors import ModelError
from cxrad.models.config import UNFITTED, OperatingPoint
from cxrad.options import suggest

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
        return measured_point(UNFITTED, f"unfitted: no val {what}", None, pos, neg)
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
    return measured_point(t, rule.kind, rule.target, pos, neg)


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
    if big and (y[rest] == side).sum() >= MIN_SOURCE_ROWS:
        parts.append(rest)  # without a big source the rest is all rows, already a part
    points = [fit_point(s[p], y[p], plain) for p in parts]
    fitted = [p.threshold for p in points if not p.method.startswith("unfitted")]
    if not fitted:
        return points[len(big)]  # the cut over all rows, saying what it lacks
    t = max(fitted) if rule.kind == "spec" else min(fitted)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    return measured_point(t, f"{rule.kind}{PER_SOURCE}", rule.target, pos, neg)


def measured_point(
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


__all__ = [
    "DEFAULT_RULE",
    "MIN_SOURCE_ROWS",
    "PER_SOURCE",
    "Rule",
    "fit_point",
    "fit_points",
    "measured_point",
    "parse_rule",
]
