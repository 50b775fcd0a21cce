"""Stage 6, models: the one decision step, logits -> calibrated probabilities -> decisions -> record.

After anomalib's post-processor: every consumer of a model's outputs (train's val metrics,
evaluate, predict, the ensemble builder, the ONNX backend, adapt) calls :class:`DecisionStep`,
built from the run's :class:`~cxrad.models.config.RunConfig`. Nothing else applies a threshold.

1. calibrated probabilities: logits divided by each class's temperature (fitted on val), then
   the run's activation (sigmoid per class, or softmax);
2. candidate findings: each finding (every class but NORMAL) at its own operating point;
3. triage: one score per film (higher = more abnormal) at its own operating point;
4. policy ``triage_gate``: a film triage calls normal lists no finding, so a healthy film stays
   clean; ``independent`` (runs written before the decision step) keeps both as they are.

Example:
    >>> step = DecisionStep(RunConfig.load(run_dir))  # doctest: +SKIP
    >>> step.records(step(logits))[0]["normal"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, logit, softmax

from cxrad.labels import NORMAL
from cxrad.models.config import RunConfig

_EPS = 1e-7


def calibrated(
    logits: np.ndarray, activation: str, temperatures: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Probabilities ``(N, C)`` float64: ``activation(logits / T)`` with one T per class."""
    z = np.asarray(logits, dtype=np.float64) / np.asarray(temperatures, dtype=np.float64)
    return softmax(z, axis=-1) if activation == "softmax" else expit(z)


def finding_mask(classes: Sequence[str]) -> np.ndarray:
    """``(C,)`` True for the abnormal findings (every class but NORMAL)."""
    return np.array([c != NORMAL for c in classes], dtype=bool)


def triage_score(
    probs: np.ndarray, classes: Sequence[str], kind: str, thresholds: np.ndarray
) -> np.ndarray:
    """One score per film, higher = more abnormal (see :class:`~cxrad.models.config.Decision`)."""
    p = np.asarray(probs, dtype=np.float64)
    mask = finding_mask(classes)
    if kind == "not_normal" or not mask.any():
        if NORMAL not in classes:
            raise ValueError("triage score 'not_normal' needs a NORMAL output")
        return 1.0 - p[:, list(classes).index(NORMAL)]
    if kind == "max_finding":
        return p[:, mask].max(axis=1)
    if kind == "finding_margin":
        z = logit(np.clip(p[:, mask], _EPS, 1 - _EPS))
        zt = logit(np.clip(thresholds[mask], _EPS, 1 - _EPS))
        return (z - zt).max(axis=1)
    raise ValueError(f"unknown triage score {kind!r}")


@dataclass(frozen=True)
class Decisions:
    """What the step decided for a batch of films (arrays aligned with ``classes``)."""

    classes: tuple[str, ...]
    probabilities: np.ndarray
    """``(N, C)`` calibrated probabilities."""
    over: np.ndarray
    """``(N, C)`` findings over their own threshold, before the policy (NORMAL always False)."""
    findings: np.ndarray
    """``(N, C)`` the findings reported, after the policy."""
    triage_score: np.ndarray
    abnormal: np.ndarray
    thresholds: np.ndarray
    triage_threshold: float


class DecisionStep:
    """Turn logits into decisions and prediction records the way the run says.

    Args:
        config: the run's config.
        thresholds: override every class's cut-off (``cxrad predict --threshold-mode fixed``).
    """

    def __init__(self, config: RunConfig, thresholds: Sequence[float] | None = None) -> None:
        self.config = config
        self.classes = tuple(config.classes)
        self.temperatures = np.asarray(config.temperatures(), dtype=np.float64)
        self.thresholds = np.asarray(
            thresholds if thresholds is not None else [config.threshold(c) for c in self.classes],
            dtype=np.float64,
        )
        assert config.decision is not None  # filled in by RunConfig.__post_init__
        self.decision = config.decision
        self.mask = finding_mask(self.classes)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``(N, C)``."""
        return calibrated(logits, self.config.activation, self.temperatures)

    def __call__(self, logits: np.ndarray) -> Decisions:
        return self.decide(self.probabilities(logits))

    def decide(self, probs: np.ndarray) -> Decisions:
        """Decisions from calibrated probabilities (for callers that already hold them)."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1, len(self.classes))
        over = (p >= self.thresholds) & self.mask
        score = triage_score(p, self.classes, self.decision.score, self.thresholds)
        t = float(self.decision.triage.threshold)
        abnormal = score >= t
        gated = self.decision.policy == "triage_gate"
        findings = over & abnormal[:, None] if gated else over
        return Decisions(self.classes, p, over, findings, score, abnormal, self.thresholds, t)

    def records(self, d: Decisions) -> list[dict[str, Any]]:
        """The decision part of each film's prediction record (JSON-safe)."""
        return [self._record(d, i) for i in range(len(d.probabilities))]

    def _record(self, d: Decisions, i: int) -> dict[str, Any]:
        p = d.probabilities[i]
        idx = np.flatnonzero(d.findings[i])
        idx = idx[np.argsort(-p[idx], kind="stable")]
        findings = [
            {
                "class": self.classes[j],
                "probability": _num(p[j]),
                "threshold": _num(d.thresholds[j]),
            }
            for j in idx
        ]
        score = _num(d.triage_score[i])
        return {
            "normal": not bool(d.abnormal[i]),
            "triage": {"score": score, "threshold": _num(d.triage_threshold)},
            "findings": findings,
            "probabilities": {c: _num(v) for c, v in zip(self.classes, p, strict=True)},
            "positive": [f["class"] for f in findings],
            "abnormal_score": score,
        }


def _num(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None
