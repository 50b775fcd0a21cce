"""Stage 5, gate: the verdict on one input (:class:`GateResult`) and the stable reason codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NOT_XRAY_MODALITY = "not_xray_modality"
NOT_CHEST = "not_chest"
LATERAL_VIEW = "lateral_view"
NOT_RADIOGRAPH = "not_radiograph"
BLANK = "blank"
TOO_SMALL = "too_small"
INVERTED = "inverted"
ROTATED = "rotated"

CODES = (
    NOT_XRAY_MODALITY,
    NOT_CHEST,
    LATERAL_VIEW,
    NOT_RADIOGRAPH,
    BLANK,
    TOO_SMALL,
    INVERTED,
    ROTATED,
)
"""Every reason the gate can give, stable across versions (records and exit codes use them)."""

BY = ("dicom_tags", "rules", "classifier")


@dataclass(frozen=True)
class GateResult:
    """Whether an image may go on to the model, and why not when it may not.

    Attributes:
        passed: True when the image looks like a frontal chest radiograph.
        code: one of :data:`CODES` when rejected, else None.
        score: how strongly the gate doubts the input, in [0, 1] (higher = more likely not a
            frontal chest X-ray; the classifier's ``1 - p(frontal chest)``), or None when a
            tag or rule decided without the classifier.
        by: what decided: ``"dicom_tags"``, ``"rules"`` or ``"classifier"``.
        reason: one human sentence (None when passed).
    """

    passed: bool
    code: str | None
    score: float | None
    by: str
    reason: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON-safe ``gate`` field of a prediction record."""
        score = None if self.score is None else round(float(self.score), 6)
        return {"passed": self.passed, "code": self.code, "score": score, "by": self.by}


def reject(code: str, by: str, reason: str, score: float | None = None) -> GateResult:
    """A rejection; ``code`` must be one of :data:`CODES`."""
    assert code in CODES, code
    return GateResult(False, code, score, by, reason)
