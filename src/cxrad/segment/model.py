"""Stage 3, segment: the lung U-Net, its config, and loading/saving it as safetensors + JSON.

The segmenter is a small MONAI U-Net that maps a ``(B, 1, S, S)`` grey image in [0, 1] to
``(B, 1, S, S)`` lung logits. Its ``config.json`` says how to build it and how images were
sized for it, so inference prepares pixels exactly as training did.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

from cxrad.errors import SegmentError

logger = logging.getLogger(__name__)

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "segmenter"
"""The shipped lung segmenter (``model.safetensors`` + ``config.json``)."""

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class SegmenterConfig:
    """How the U-Net is built and fed.

    Attributes:
        size: square input side; images are stretched to it (the whole film, aspect ignored).
        channels, strides, num_res_units: the MONAI ``UNet`` arguments.
        threshold: lung probability above which a pixel is lung.
        train: how it was trained (command, seed, data); informational.
        metrics: held-out results; informational.
    """

    size: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    threshold: float = 0.5
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmenterConfig:
        """Build from ``config.json``'s dict; unknown keys are an error, so typos do not pass."""
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise SegmentError(
                f"segmenter config has unknown keys {sorted(extra)}; expected {sorted(known)}"
            )
        d = dict(d)
        for k in ("channels", "strides"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict."""
        d = asdict(self)
        d["channels"], d["strides"] = list(self.channels), list(self.strides)
        return d


def build_unet(config: SegmenterConfig) -> nn.Module:
    """A fresh 2-D MONAI U-Net, one grey channel in, one lung-logit channel out."""
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
    )


def save_segmenter(net: nn.Module, config: SegmenterConfig, out: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return out


def load_segmenter(path: str | Path | None = None) -> tuple[nn.Module, SegmenterConfig]:
    """Load a segmenter folder (default: the shipped one) in eval mode.

    Raises:
        SegmentError: the folder lacks ``model.safetensors``/``config.json`` or they do not fit.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path) if path is not None else ASSET_DIR
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        raise SegmentError(
            f"{folder} is not a segmenter folder; expected {WEIGHTS} and {CONFIG} "
            "(as written by scripts/train_segmenter.py)"
        )
    try:
        config = SegmenterConfig.from_dict(json.loads((folder / CONFIG).read_text()))
        net = build_unet(config)
        net.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as e:
        raise SegmentError(f"cannot load the segmenter in {folder}: {e}") from e
    net.eval()
    logger.debug("loaded segmenter from %s (size %d)", folder, config.size)
    return net, config


def count_parameters(net: nn.Module) -> int:
    """Number of parameters, for the card."""
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def _smoke(config: SegmenterConfig) -> torch.Size:  # pragma: no cover - debugging aid
    return build_unet(config)(torch.zeros(1, 1, config.size, config.size)).shape
