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

Two densities (``density`` in the model's kwargs; absent = ``pooled``, every run before it):

- ``pooled``: one Gaussian on the globally pooled last-stage features (CutPaste's detector);
- ``patch``: PaDiM (Defard et al., ICPR 2021): the maps of the stages in ``patch_layers`` are
  average-pooled to the grid of the coarsest one (a fixed kernel, so ONNX exports it) and
  concatenated, and one Gaussian is fitted **per grid location**. The film's distance is the
  ``max`` (or ``mean``) over locations of the per-location Mahalanobis distance, and the map
  of those distances, upsampled, is the anomaly heatmap (:func:`anomaly_map`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrad.errors import ModelError
from cxrad.models.cxr_fast import CXRFast
from cxrad.models.registry import ONE_CLASS, Classifier, ModelSpec

SSL_CLASSES = ("as_is", "cutpaste", "scar")
"""The self-supervised head's classes, in order."""

POOLED, PATCH = "pooled", "patch"
DENSITIES = (POOLED, PATCH)
REDUCTIONS = ("max", "mean")
STEM_STRIDE = 4
"""``cxr-fast``'s stem halves the side twice; stage ``i`` then runs at ``side / (4 * 2**i)``."""


def patch_grid(size: int, layers: tuple[int, ...] | list[int]) -> int:
    """Side of the patch density's grid for ``size`` px input: the coarsest layer's map side."""
    return max(1, size // (STEM_STRIDE * 2 ** max(layers)))


class OneClassNet(nn.Module):
    """``cxr-fast`` body + self-supervised head + a Gaussian density on its features.

    Args:
        num_classes: must be 1 (the NORMAL logit).
        widths: stage widths of the body (its pooled feature dimension is the last).
        depths: blocks per stage.
        density: ``pooled`` (one Gaussian on pooled features) or ``patch`` (one per location).
        patch_layers: for ``patch``: the stages whose maps are concatenated (0 = the first).
        patch_grid: for ``patch``: the grid side (:func:`patch_grid` of the input size).
        patch_reduce: for ``patch``: ``max`` or ``mean`` of the per-location distances.
    """

    def __init__(
        self,
        num_classes: int = 1,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        density: str = POOLED,
        patch_layers: tuple[int, ...] = (1, 2),
        patch_grid: int = 8,
        patch_reduce: str = "max",
    ) -> None:
        super().__init__()
        if num_classes != 1:
            raise ValueError(f"a one-class model has one output (NORMAL), got {num_classes}")
        if density not in DENSITIES:
            raise ValueError(f"density must be one of {DENSITIES}, got {density!r}")
        if patch_reduce not in REDUCTIONS:
            raise ValueError(f"patch_reduce must be one of {REDUCTIONS}, got {patch_reduce!r}")
        self.backbone = CXRFast(num_classes=len(SSL_CLASSES), widths=widths, depths=depths)
        self.density = density
        self.patch_layers = tuple(sorted(int(i) for i in patch_layers))
        if not self.patch_layers or not all(0 <= i < len(widths) for i in self.patch_layers):
            raise ValueError(
                f"patch_layers must index the {len(widths)} stages, got {patch_layers}"
            )
        self.patch_grid = int(patch_grid)
        self.patch_reduce = patch_reduce
        if density == POOLED:
            f = self.backbone.num_features
            self.register_buffer("density_mean", torch.zeros(f))
            self.register_buffer("density_precision", torch.eye(f))
        else:
            c, n = sum(widths[i] for i in self.patch_layers), self.patch_grid**2
            self.register_buffer("patch_mean", torch.zeros(n, c))
            self.register_buffer("patch_precision", torch.eye(c).repeat(n, 1, 1))
        self.register_buffer("loc", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def ssl_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The self-supervised head's logits ``(B, 3)``: used in training only."""
        return self.backbone(x)

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output map, first to last."""
        h, maps = self.backbone.stem(x), []
        for stage in self.backbone.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def patch_features(
        self, x: torch.Tensor, layers: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """Maps of ``layers`` (default: the model's), pooled to the coarsest's grid: ``(B, C, g, g)``."""
        return pool_to_grid(self.stage_maps(x), layers or self.patch_layers)

    def patch_distances(self, x: torch.Tensor) -> torch.Tensor:
        """Per-location Mahalanobis distance ``(B, g, g)`` to the normal films' Gaussians."""
        if self.density != PATCH:
            raise ModelError("this one-class model has a pooled density: no per-location map")
        f = self.patch_features(x)
        b, _, g, _ = f.shape
        if g != self.patch_grid:
            raise ModelError(
                f"the patch density was fitted on a {self.patch_grid}x{self.patch_grid} grid, "
                f"this input gives {g}x{g}; feed images at the run's input size"
            )
        d = f.flatten(2).transpose(1, 2) - self.patch_mean  # (B, L, C)
        q = ((d[:, :, None, :] @ self.patch_precision)[:, :, 0, :] * d).sum(-1)
        return torch.sqrt(torch.clamp(q, min=0.0)).reshape(b, g, g)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """The film's anomaly distance ``(B,)`` (pooled: Mahalanobis; patch: max/mean over the grid)."""
        if self.density == PATCH:
            m = self.patch_distances(x).flatten(1)
            return m.amax(dim=1) if self.patch_reduce == "max" else m.mean(dim=1)
        d = self.forward_features(x) - self.density_mean
        return torch.sqrt(torch.clamp(((d @ self.density_precision) * d).sum(dim=1), min=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.loc - self.distance(x)) / self.scale)[:, None]

    def set_density(
        self, mean: np.ndarray, precision: np.ndarray, loc: float, scale: float
    ) -> None:
        """Store the fitted Gaussian(s) and the threshold (``loc``) with its spread (``scale``).

        ``mean``/``precision`` are ``(F,)``/``(F, F)`` for ``pooled`` and ``(L, C)``/``(L, C, C)``
        for ``patch``.
        """
        names = ("density_mean", "density_precision") if self.density == POOLED else (
            "patch_mean", "patch_precision"
        )  # fmt: skip
        for name, value in zip(names, (mean, precision), strict=True):
            buf = getattr(self, name)
            v = torch.as_tensor(np.asarray(value), dtype=torch.float32, device=buf.device)
            if v.shape != buf.shape:
                raise ModelError(f"{name} must have shape {tuple(buf.shape)}, got {tuple(v.shape)}")
            buf.copy_(v)
        self.loc.fill_(float(loc))
        self.scale.fill_(max(float(scale), 1e-6))


def pool_to_grid(maps: list[torch.Tensor], layers: tuple[int, ...]) -> torch.Tensor:
    """Concatenate ``maps[i]`` for ``i`` in ``layers``, each average-pooled to the coarsest's side."""
    side = maps[max(layers)].shape[-1]
    out = []
    for i in sorted(layers):
        m = maps[i]
        k = m.shape[-1] // side
        out.append(F.avg_pool2d(m, k) if k > 1 else m)
    return torch.cat(out, dim=1)


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


def anomaly_map(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """The patch density's anomaly heatmap ``(B, H, W)`` of ``[0, 1]`` films ``x`` ``(B, 1, H, W)``.

    The per-location Mahalanobis distances, bilinearly upsampled to the input size; its
    maximum is the film's distance when ``patch_reduce`` is ``max``. Higher = more abnormal.

    Raises:
        ModelError: the run's density is ``pooled`` (use Grad-CAM on :func:`anomaly_view`).

    Example:
        >>> heat = anomaly_map(model, x)  # doctest: +SKIP
    """
    net = model.net
    if getattr(net, "density", POOLED) != PATCH:
        raise ModelError(
            "anomaly_map needs a one-class run with the patch density "
            "(`--density patch` or `auto`); a pooled run's heatmap is Grad-CAM on anomaly_view"
        )
    m = net.patch_distances(model._norm(x))[:, None]  # type: ignore[operator]
    return F.interpolate(m, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


def is_one_class(config: Any) -> bool:
    """Whether a run config (a ``RunConfig`` or its dict) describes a one-class run."""
    task = config.get("task", "multilabel") if isinstance(config, dict) else config.task
    return task == "one-class"


__all__ = [
    "DENSITIES",
    "PATCH",
    "POOLED",
    "SPEC",
    "SSL_CLASSES",
    "OneClassNet",
    "anomaly_map",
    "anomaly_view",
    "build_one_class",
    "is_one_class",
    "patch_grid",
    "pool_to_grid",
]
