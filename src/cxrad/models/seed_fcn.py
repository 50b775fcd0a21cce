"""Stage 6, models: a faithful PyTorch port of the original project's Keras network.

Seven groups of Conv2D(kernel 2, stride 2) -> Dropout(0.2) -> BatchNorm -> activation, with
32, 64, 128, 256, 512, 64 and 17 filters, so a 256 px input shrinks to 2×2 before a global
max pool. 835,091 trainable parameters; 837,237 counting BatchNorm's running statistics as
Keras does. The final softmax (or sigmoid) is applied by the loss or the predictor: the module
returns logits.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from cxrad.models.registry import ModelSpec, register_model

FILTERS = (32, 64, 128, 256, 512, 64)


def _group(cin: int, cout: int, act: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size=2, stride=2),
        nn.Dropout(0.2),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),  # Keras defaults
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SeedFCN(nn.Module):
    """The original fully convolutional network, trainable as softmax or multi-label."""

    def __init__(self, num_classes: int = 17, in_channels: int = 1) -> None:
        super().__init__()
        chans = (in_channels, *FILTERS)
        self.features = nn.Sequential(*[_group(a, b, True) for a, b in itertools.pairwise(chans)])
        self.head = _group(FILTERS[-1], num_classes, act=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(self.features(x), dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(self.head(self.features(x)), dim=(2, 3))


@register_model(
    ModelSpec(
        name="seed-fcn",
        input_size=256,
        min_input_size=128,  # seven 2x poolings
        mean=0.0,
        std=1.0,
        cam_layer="features.5",
        description="exact port of the original project's 837k-parameter Keras FCN (baseline)",
    )
)
def seed_fcn(num_classes: int = 17, **kwargs: object) -> nn.Module:
    return SeedFCN(num_classes=num_classes, **kwargs)  # type: ignore[arg-type]
