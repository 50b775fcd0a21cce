"""Stage 5, gate: load the shipped gate classifier and turn its probabilities into a verdict.

The weights live in ``cxrad/assets/gate/`` (``model.safetensors`` + ``config.json``), written by
``scripts/train_gate.py``. ``config.json`` holds the classes, the input size, the resize mode and
``reject_threshold``: a film is rejected when ``1 - p(frontal)`` reaches it (picked on the
validation parts only; see the card in ``docs/gate.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrad.errors import GateError
from cxrad.gate.net import GATE_CLASSES, GateNet
from cxrad.gate.result import (
    INVERTED,
    LATERAL_VIEW,
    NOT_CHEST,
    NOT_RADIOGRAPH,
    NOT_XRAY_MODALITY,
    ROTATED,
    GateResult,
    reject,
)
from cxrad.preprocess.transform import resize

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "gate"

CLASS_CODES = {
    "lateral": LATERAL_VIEW,
    "not_chest": NOT_CHEST,
    "not_radiograph": NOT_RADIOGRAPH,
    "other_modality": NOT_XRAY_MODALITY,
    "inverted": INVERTED,
    "rotated": ROTATED,
}
"""Classifier class -> reason code (``frontal`` passes)."""

_REASONS = {
    LATERAL_VIEW: "looks like a lateral chest view",
    NOT_CHEST: "looks like a radiograph of another body part",
    NOT_RADIOGRAPH: "looks like a photo, screenshot or document, not a radiograph",
    NOT_XRAY_MODALITY: "looks like a CT, MR or ultrasound image, not a radiograph",
    INVERTED: "looks inverted (MONOCHROME1/2 mix-up?)",
    ROTATED: "looks rotated by 90° or 180°",
}


@dataclass
class GateClassifier:
    """The gate network plus its input contract and threshold.

    Attributes:
        net: the trained :class:`~cxrad.gate.net.GateNet`, in eval mode.
        classes: output names, ``classes[0] == "frontal"``.
        size: input side in pixels.
        mode: resize mode (``"letterbox"``).
        reject_threshold: reject when ``1 - p(frontal)`` is at least this.
        config: the whole ``config.json``.
    """

    net: GateNet
    classes: tuple[str, ...]
    size: int
    mode: str
    reject_threshold: float
    config: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path = ASSET_DIR) -> GateClassifier:
        """Read ``config.json`` + ``model.safetensors`` from ``folder``.

        Raises:
            GateError: the folder does not hold a gate model.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
            state = load_file(str(folder / "model.safetensors"))
        except (OSError, ValueError, SafetensorError) as e:
            raise GateError(
                f"{folder} does not hold a gate model (config.json + model.safetensors); "
                "reinstall cxrad or retrain it with scripts/train_gate.py"
            ) from e
        classes = tuple(config["classes"])
        if classes[0] != "frontal" or not set(classes) <= set(GATE_CLASSES):
            raise GateError(f"{folder}/config.json has unknown gate classes {classes}")
        net = GateNet(len(classes), widths=config.get("widths", (16, 32, 64, 128)))
        net.load_state_dict(state)
        return cls(
            net.eval(),
            classes,
            int(config["size"]),
            str(config.get("mode", "letterbox")),
            float(config["reject_threshold"]),
            config,
        )

    def inputs(self, pixels: np.ndarray) -> np.ndarray:
        """The ``(S, S)`` uint8 image the network sees."""
        return resize(pixels, self.size, self.mode)

    @torch.no_grad()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over :attr:`classes` for a ``(B, S, S)`` uint8 batch from :meth:`inputs`."""
        x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)[:, None]
        return torch.softmax(self.net(x), dim=1).numpy().astype(np.float64)

    def decide(self, probs: np.ndarray) -> GateResult:
        """The verdict for one image's probabilities."""
        score = float(1.0 - probs[0])
        if score < self.reject_threshold:
            return GateResult(True, None, score, "classifier")
        worst = self.classes[1 + int(np.argmax(probs[1:]))]
        code = CLASS_CODES[worst]
        return reject(code, "classifier", f"{_REASONS[code]} (p = {probs[1:].max():.2f})", score)

    def __call__(self, pixels: np.ndarray) -> GateResult:
        """Classify one decoded grey image (``uint8`` or float in [0, 1])."""
        return self.decide(self.probabilities(self.inputs(pixels)[None])[0])
