"""Stage 5, gate: :class:`InputGate`, run on every input before a model is asked about it.

Order: DICOM tags (Modality / SOP class, BodyPartExamined, ViewPosition), then pixel rules
(too small, blank, colour), then the shipped classifier (frontal chest vs lateral, other body
part, non-radiograph, other modality, inverted, rotated). The first that rejects decides.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxrad.gate.classifier import ASSET_DIR, GateClassifier
from cxrad.gate.result import GateResult
from cxrad.gate.rules import MIN_SIDE, check_pixels
from cxrad.gate.tags import COLOUR_FRACTION, check_tags, colour_fraction, read_info
from cxrad.preprocess.decode import decode_native, pil_to_array

logger = logging.getLogger(__name__)


class InputGate:
    """Decides whether an input is a frontal chest radiograph a model may read.

    Args:
        classifier: the shipped :class:`GateClassifier`, or None to use tags and rules only.
        min_side: shortest acceptable side in pixels.

    Example:
        >>> gate = InputGate.default()  # doctest: +SKIP
        >>> verdict, pixels = gate.check_file("knee.dcm")  # doctest: +SKIP
        >>> verdict.code
        'not_chest'
    """

    def __init__(self, classifier: GateClassifier | None = None, min_side: int = MIN_SIDE) -> None:
        self.classifier = classifier
        self.min_side = int(min_side)

    @classmethod
    def default(cls) -> InputGate:
        """The gate with the classifier shipped in ``cxrad/assets/gate`` (loaded once)."""
        return cls(_shipped_classifier(str(ASSET_DIR)))

    def check(self, pixels: np.ndarray, info: dict[str, Any] | None = None) -> GateResult:
        """The verdict on decoded grey pixels (``uint8`` or float in [0, 1]) and header facts."""
        info = info or {}
        verdict = check_tags(info) or check_pixels(pixels, info, self.min_side)
        if verdict is not None:
            return verdict
        if self.classifier is None:
            return GateResult(True, None, None, "rules")
        return self.classifier(pixels)

    def check_image(self, image: np.ndarray | Image.Image) -> tuple[GateResult, np.ndarray]:
        """The verdict on an in-memory image, and its grey pixels.

        Args:
            image: a PIL image, a 2-D grey array (``uint8`` or float in [0, 1]) or an
                ``H×W×3/4`` ``uint8`` colour array.
        """
        if isinstance(image, np.ndarray) and image.ndim == 3:
            image = Image.fromarray(image[..., :3])
        info: dict[str, Any] = {}
        if isinstance(image, Image.Image):
            info["colour"] = colour_fraction(image) > COLOUR_FRACTION
            image = pil_to_array(image)
        return self.check(image, info), image

    def check_file(self, path: str | Path) -> tuple[GateResult, np.ndarray | None]:
        """The verdict on a file, and its decoded pixels (None when its tags rejected it).

        Tags are read before any pixel is decoded, so a CT whose compression cannot be
        decoded is still rejected as ``not_xray_modality`` rather than failing.

        Raises:
            DecodeError: the tags pass but the pixels cannot be decoded.
        """
        info = read_info(path)
        verdict = check_tags(info)
        if verdict is not None:
            return verdict, None
        pixels = decode_native(path)
        return self.check(pixels, info), pixels


@functools.lru_cache(maxsize=4)
def _shipped_classifier(folder: str) -> GateClassifier:
    return GateClassifier.load(folder)
