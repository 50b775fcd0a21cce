"""Stage 3, segment: run the lung U-Net on one film and describe the lungs it finds.

:class:`Segmenter` is safe to share between threads: it holds no per-call state, and the
network runs in eval mode under ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrad.segment.geometry import LungSides, bounding_box, clean_mask, split_sides
from cxrad.segment.model import SegmenterConfig, load_segmenter

logger = logging.getLogger(__name__)


def model_input(img: np.ndarray, size: int) -> torch.Tensor:
    """The ``(1, 1, size, size)`` tensor the U-Net sees: the whole film stretched, anti-aliased.

    Training and inference both call this, so the pixels agree.
    """
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@dataclass(frozen=True)
class Lungs:
    """The lungs found on one film, at the film's own resolution.

    Attributes:
        mask: ``(H, W)`` boolean, both lungs.
        sides: the image-left / image-right split.
        probability: ``(H, W)`` float32 lung probability before thresholding and clean-up.
    """

    mask: np.ndarray
    sides: LungSides
    probability: np.ndarray

    @property
    def area_fraction(self) -> float:
        """Share of the film's pixels that are lung."""
        return float(self.mask.mean())

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """``(x0, y0, x1, y1)`` end-exclusive box around both lungs, or None when none found."""
        return bounding_box(self.mask)

    def summary(self) -> dict[str, Any]:
        """JSON-safe numbers: areas, the left/right split, and the box."""
        n = self.mask.size
        left, right = int(self.sides.image_left.sum()), int(self.sides.image_right.sum())
        total = left + right
        return {
            "height": int(self.mask.shape[0]),
            "width": int(self.mask.shape[1]),
            "lung_area_fraction": round(self.area_fraction, 6),
            "image_left_area_fraction": round(left / n, 6),
            "image_right_area_fraction": round(right / n, 6),
            "image_left_share": round(left / total, 6) if total else None,
            "split_by": self.sides.by,
            "box": list(self.box) if self.box is not None else None,
        }


class Segmenter:
    """The lung segmenter: a film in, :class:`Lungs` out.

    Args:
        path: a folder with ``model.safetensors`` + ``config.json``; default the shipped one.

    Example:
        >>> from cxrad.segment import Segmenter
        >>> lungs = Segmenter().segment(img)  # doctest: +SKIP
        >>> lungs.area_fraction, lungs.box  # doctest: +SKIP
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.net, self.config = load_segmenter(path)

    @classmethod
    def from_net(cls, net: torch.nn.Module, config: SegmenterConfig) -> Segmenter:
        """Wrap an in-memory network (training, tests)."""
        self = cls.__new__(cls)
        self.net, self.config = net.eval(), config
        return self

    def probability(self, img: np.ndarray) -> np.ndarray:
        """Lung probability ``(H, W)`` float32 for a 2-D grey film in [0, 1]."""
        if img.ndim != 2 or min(img.shape) < 2:
            raise ValueError(f"segment expects a 2-D grey image, got shape {img.shape}")
        with torch.inference_mode():
            logits = self.net(model_input(img, self.config.size))
            up = F.interpolate(logits, size=img.shape, mode="bilinear", align_corners=False)
        return torch.sigmoid(up)[0, 0].numpy()

    def segment(self, img: np.ndarray) -> Lungs:
        """Segment the lungs of one film (2-D float in [0, 1], any size)."""
        prob = self.probability(img)
        mask = clean_mask(prob > self.config.threshold)
        return Lungs(mask=mask, sides=split_sides(mask), probability=prob)
