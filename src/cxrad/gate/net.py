"""Stage 5, gate: the tiny CNN that tells a frontal chest radiograph from everything else.

Six conv-BN-ReLU layers at 64 px (stride 2 four times, widths 16-32-64-128), global average
pooling and a linear head: about 0.11 M parameters (~440 KB as float32), a millisecond per
image on a CPU. Small on purpose: the question (is this a frontal chest film, the right way
round?) is about gross layout, which 64 px shows well, and the gate runs before every prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

GATE_CLASSES = (
    "frontal",
    "lateral",
    "not_chest",
    "not_radiograph",
    "other_modality",
    "inverted",
    "rotated",
)
"""The classifier's outputs. Only ``frontal`` passes; the others map to reason codes."""


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class GateNet(nn.Module):
    """Tiny CNN: ``(B, 1, S, S)`` float in [0, 1] -> ``(B, len(classes))`` logits.

    Args:
        num_classes: outputs (``len(GATE_CLASSES)``).
        widths: channels of the four stride-2 stages; the first two stages add a stride-1 conv.
        mean: input normalisation, kept as a buffer so it travels with the weights.
        std: input normalisation.
    """

    def __init__(
        self,
        num_classes: int = len(GATE_CLASSES),
        widths: Sequence[int] = (16, 32, 64, 128),
        mean: float = 0.5,
        std: float = 0.25,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, w in enumerate(widths):
            layers.append(_conv(cin, w, 2))
            if i < 2:
                layers.append(_conv(w, w, 1))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(cin, num_classes)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))
