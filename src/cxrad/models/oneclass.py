"""Stage 6, models: ``one-class``, an anomaly detector trained on normal films only.

The network is ``cxr-fast``'s body with a 3-way self-supervised head (as is / CutPaste / scar,
Li et al., CVPR 2021) and, fitted after training, a Gaussian on the pooled features of normal
training films (Ledoit-Wolf shrinkage, as :mod:`cxrad.models.ood`). Its one output is the
**NORMAL logit** ``(loc - d) / scale``, where ``d`` is the Mahalanobis distance of the film's
features, ``loc`` the threshold picked on normal validation films and ``scale`` their spread:

- ``p(NORMAL) = sigmoid(logit)`` is 0.5 exactly at the threshold, so the run's threshold is
  ``{"NORMAL": 0.5}`` and ``abnormal_score = 1 - p(NORMAL)`` ranks films by ``d``;
- everything that takes a :class:`~cxrad.models.Classifier` (evaluate, predict, Grad-CAM,
  ONNX export) takes a one-class run unchanged: the Gaussian lives in buffers, so it travels
  in ``model.safetensors``;
- :func:`anomaly_view` turns the model around (output = ``-logit``) so that Grad-CAM explains
  the *anomaly* score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cxrad.models.cxr_fast import CXRFast
from cxrad.models.registry import ONE_CLASS, Classifier, ModelSpec

SSL_CLASSES = ("as_is", "cutpaste", "scar")
"""The self-supervised head's classes, in order."""


class OneClassNet(nn.Module):
    """``cxr-fast`` body + self-supervised head + a Gaussian density on its pooled features.

    Args:
        num_classes: must be 1 (the NORMAL logit).
        widths: stage widths of the body (its feature dimension is the last).
        depths: blocks per stage.
    """

    def __init__(
        self,
        num_classes: int = 1,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        depths: tuple[int, ...] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        if num_classes != 1:
            raise ValueError(f"a one-class model has one output (NORMAL), got {num_classes}")
        self.backbone = CXRFast(num_classes=len(SSL_CLASSES), widths=widths, depths=depths)
        f = self.backbone.num_features
        self.register_buffer("density_mean", torch.zeros(f))
        self.register_buffer("density_precision", torch.eye(f))
        self.register_buffer("loc", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def ssl_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The self-supervised head's logits ``(B, 3)``: used in training only."""
        return self.backbone(x)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance ``(B,)`` of the features to the normal films' Gaussian."""
        d = self.forward_features(x) - self.density_mean
        return torch.sqrt(torch.clamp(((d @ self.density_precision) * d).sum(dim=1), min=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.loc - self.distance(x)) / self.scale)[:, None]

    def set_density(
        self, mean: np.ndarray, precision: np.ndarray, loc: float, scale: float
    ) -> None:
        """Store the fitted Gaussian and the threshold (``loc``) with its spread (``scale``)."""
        dev = self.density_mean.device
        self.density_mean.copy_(torch.as_tensor(mean, dtype=torch.float32, device=dev))
        self.density_precision.copy_(torch.as_tensor(precision, dtype=torch.float32, device=dev))
        self.loc.fill_(float(loc))
        self.scale.fill_(max(float(scale), 1e-6))


SPEC = ModelSpec(
    name=ONE_CLASS,
    input_size=256,
    min_input_size=16,
    mean=0.5,
    std=0.25,
    cam_layer="backbone.stages.3",
    description="anomaly detector trained on normal films only (CutPaste + Gaussian density)",
)


def build_one_class(num_classes: int = 1, **kwargs: object) -> Classifier:
    """An untrained one-class model; ``load_run`` fills in its weights and Gaussian.

    Not in :func:`~cxrad.models.list_models`: it is trained by ``cxrad train --task one-class``,
    not by the multi-label recipe.
    """
    return Classifier(OneClassNet(num_classes=num_classes, **kwargs), SPEC)  # type: ignore[arg-type]


class _Negated(nn.Module):
    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


def anomaly_view(model: Classifier) -> tuple[nn.Module, str]:
    """A module whose output 0 is the anomaly score (``-NORMAL logit``) and its Grad-CAM layer.

    Example:
        >>> view, layer = anomaly_view(model)  # doctest: +SKIP
        >>> grad_cam(view, x, [[0]] * len(x), layer)  # doctest: +SKIP
    """
    return _Negated(model), f"inner.net.{model.spec.cam_layer}"


def is_one_class(config: Any) -> bool:
    """Whether a run config (a ``RunConfig`` or its dict) describes a one-class run."""
    task = config.get("task", "multilabel") if isinstance(config, dict) else config.task
    return task == "one-class"


__all__ = ["SPEC", "SSL_CLASSES", "OneClassNet", "anomaly_view", "build_one_class", "is_one_class"]
