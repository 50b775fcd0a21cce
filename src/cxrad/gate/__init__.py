"""Stage 5, gate: refuse what is not a frontal chest X-ray, with a reason, before any model runs.

``InputGate.default().check_file(path)`` returns a :class:`GateResult` (``passed``, ``code``,
``score``, ``by``, ``reason``) and the decoded pixels. Codes: :data:`CODES`.
"""

from __future__ import annotations

from cxrad.gate.classifier import GateClassifier
from cxrad.gate.gate import InputGate
from cxrad.gate.net import GATE_CLASSES, GateNet
from cxrad.gate.result import CODES, GateResult
from cxrad.gate.rules import check_pixels
from cxrad.gate.tags import check_tags, read_info

__all__ = [
    "CODES",
    "GATE_CLASSES",
    "GateClassifier",
    "GateNet",
    "GateResult",
    "InputGate",
    "check_pixels",
    "check_tags",
    "read_info",
]
