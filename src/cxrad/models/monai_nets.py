"""Stage 6, models: MONAI's DenseNet-121, EfficientNet-B0 and ResNet-18/34, for one-channel 2D input.

Each network subclasses the MONAI class, so its parameter names stay MONAI's (and so close to
torchvision's that its ImageNet ``state_dict`` loads through ``weights=``), and adds
``forward_features``: the pooled penultimate vector. Nothing is downloaded: ``pretrained`` is
always off and weights come only from a local file.

Input size: all are fully convolutional with global pooling, so they accept any size; the
registry declares 256 px for all, the size the preprocessing cache holds. CheXNet resized to
256 and random-cropped 224; we train on the whole 256 image instead, so no crop cuts off the
costophrenic angles, at (256/224)² ≈ 1.3× the compute.
"""

from __future__ import annotations

import re

import torch
from monai.networks.nets import DenseNet121, EfficientNetBN
from monai.networks.nets.resnet import ResNet, ResNetBlock, get_inplanes
from torch import nn

from cxrad.models.registry import ModelSpec, register_model
from cxrad.models.weights import load_weights


class DenseNet121Net(DenseNet121):
    """CheXNet's architecture (Rajpurkar et al. 2017): DenseNet-121, one input channel."""

    def __init__(
        self, num_classes: int = 17, in_channels: int = 1, dropout_prob: float = 0.0
    ) -> None:
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            dropout_prob=dropout_prob,
            pretrained=False,
        )
        # Not in place: Grad-CAM hooks ``features.norm5``, whose output this ReLU would overwrite.
        self.class_layers.relu = nn.ReLU(inplace=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, 1024)``."""
        x = self.class_layers.relu(self.features(x))
        return torch.flatten(self.class_layers.pool(x), 1)


class EfficientNetB0Net(EfficientNetBN):
    """EfficientNet-B0 (Tan & Le 2019) with batch norm, one input channel, random init.

    MONAI's memory-efficient Swish is a custom autograd function that ONNX cannot export; it is
    swapped for ``nn.SiLU``, the same function, which has no parameters to change in the
    ``state_dict``.
    """

    def __init__(self, num_classes: int = 17, in_channels: int = 1) -> None:
        super().__init__(
            "efficientnet-b0",
            pretrained=False,
            spatial_dims=2,
            in_channels=in_channels,
            num_classes=num_classes,
        )
        for m in list(self.modules()):
            if hasattr(m, "_swish"):
                m._swish = nn.SiLU()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, 1280)``."""
        x = self._swish(self._bn0(self._conv_stem(self._conv_stem_padding(x))))
        x = self._blocks(x)
        x = self._swish(self._bn1(self._conv_head(self._conv_head_padding(x))))
        return torch.flatten(self._avg_pooling(x), 1)


class ResNetNet(ResNet):
    """ResNet (He et al. 2016) with basic blocks, laid out like torchvision's ImageNet ResNets.

    MONAI's default first conv has stride 1, a 3D-volume habit that quadruples the cost of every
    later layer at 256 px; here it has stride 2 as in the paper, and the downsampling shortcut has
    no bias, as in torchvision, so torchvision weights load by name.
    """

    def __init__(self, layers: list[int], num_classes: int = 17, in_channels: int = 1) -> None:
        super().__init__(
            block=ResNetBlock,
            layers=layers,
            block_inplanes=get_inplanes(),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            num_classes=num_classes,
            bias_downsample=False,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, 512)``."""
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


# torchvision's DenseNet names: ``denselayer1.norm1`` (or older ``norm.1``) and ``classifier``.
_TV_DENSE = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(\w+)$")


def torchvision_densenet_names(key: str) -> str:
    """Map a torchvision DenseNet parameter name to MONAI's; other names pass unchanged."""
    key = _TV_DENSE.sub(r"\1.layers.\2\3.\4", key)
    return (
        key.replace("classifier.", "class_layers.out.", 1) if key.startswith("classifier.") else key
    )


_MEAN, _STD = 0.5, 0.25  # [0, 1] radiographs: roughly centred, unit-ish variance after scaling


@register_model(
    ModelSpec(
        name="densenet121",
        min_input_size=32,  # 29 px is the last that leaves 1 px before the final pooling
        mean=_MEAN,
        std=_STD,
        cam_layer="features.norm5",
        description="MONAI DenseNet-121, the CheXNet architecture (7.0M parameters)",
    )
)
def densenet121(num_classes: int = 17, weights: str | None = None, **kwargs: object) -> nn.Module:
    net = DenseNet121Net(num_classes=num_classes, **kwargs)  # type: ignore[arg-type]
    return load_weights(net, weights, rename=torchvision_densenet_names) if weights else net


@register_model(
    ModelSpec(
        name="efficientnet-b0",
        min_input_size=32,
        mean=_MEAN,
        std=_STD,
        cam_layer="_bn1",
        description="MONAI EfficientNet-B0 with batch norm (4.0M parameters)",
    )
)
def efficientnet_b0(
    num_classes: int = 17, weights: str | None = None, **kwargs: object
) -> nn.Module:
    net = EfficientNetB0Net(num_classes=num_classes, **kwargs)  # type: ignore[arg-type]
    return load_weights(net, weights) if weights else net


@register_model(
    ModelSpec(
        name="resnet18",
        mean=_MEAN,
        std=_STD,
        cam_layer="layer4",
        description="MONAI ResNet-18, torchvision layout (11.2M parameters)",
    )
)
def resnet18(num_classes: int = 17, weights: str | None = None, **kwargs: object) -> nn.Module:
    net = ResNetNet([2, 2, 2, 2], num_classes=num_classes, **kwargs)  # type: ignore[arg-type]
    return load_weights(net, weights) if weights else net


@register_model(
    ModelSpec(
        name="resnet34",
        mean=_MEAN,
        std=_STD,
        cam_layer="layer4",
        description="MONAI ResNet-34, torchvision layout (21.3M parameters)",
    )
)
def resnet34(num_classes: int = 17, weights: str | None = None, **kwargs: object) -> nn.Module:
    net = ResNetNet([3, 4, 6, 3], num_classes=num_classes, **kwargs)  # type: ignore[arg-type]
    return load_weights(net, weights) if weights else net
