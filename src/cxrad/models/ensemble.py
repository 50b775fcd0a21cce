"""Stage 6, models: an ensemble of trained runs that is itself one ``nn.Module`` and one run.

Averaging the probabilities of a few networks trained with different seeds is the cheapest
reliable gain in ranking and in robustness to a shift between training and test data
(Lakshminarayanan et al. 2017). Here the average lives inside the module:
``forward`` returns the logits *of the averaged probabilities*, so everything that takes a
:class:`Classifier` (evaluation, prediction, Grad-CAM, ONNX export) works on an ensemble
unchanged, and its run directory is the usual ``model.safetensors`` + ``config.json``.

- Sigmoid members: ``logit(mean_i sigmoid(l_i))``, computed as
  ``logsumexp_i logsigmoid(l_i) - logsumexp_i logsigmoid(-l_i)``, so no probability is clamped.
- Softmax members: ``log(mean_i softmax(l_i))``; a softmax of that is the mean probability.
- Members' temperatures are not applied: the average is of the raw probabilities, and the
  ensemble can be calibrated as a whole (``cxrad evaluate --calibrate``).
- Grad-CAM hooks every member's ``cam_layer`` and averages the maps, so a heatmap explains the
  ensemble's own score, not one member's.

Members must agree on the class list, the activation and the preprocessing; the builder of an
ensemble run (:func:`cxrad.train.ensemble_runs`) checks that and picks thresholds on val.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrad.errors import ModelError
from cxrad.models.registry import ENSEMBLE, Classifier, ModelSpec, create_model


class EnsembleNet(nn.Module):
    """Members' probabilities, averaged, returned as logits (see the module docstring).

    Args:
        members: trained :class:`Classifier` modules with the same classes; each normalises its
            own input, so the ensemble takes plain [0, 1] images.
        activation: ``"sigmoid"`` (multi-label) or ``"softmax"``, as the members were trained.
    """

    def __init__(self, members: Sequence[Classifier], activation: str = "sigmoid") -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one member run")
        if activation not in ("sigmoid", "softmax"):
            raise ModelError(f"unknown activation {activation!r}; use 'sigmoid' or 'softmax'")
        self.members = nn.ModuleList(members)
        self.activation = activation
        self.log_n = math.log(len(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(x) for m in self.members])  # (M, B, C)
        if self.activation == "softmax":
            return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - self.log_n
        log_p = torch.logsumexp(F.logsigmoid(logits), dim=0)
        log_q = torch.logsumexp(F.logsigmoid(-logits), dim=0)
        return log_p - log_q

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's pooled features, concatenated ``(B, sum F_i)``."""
        return torch.cat([m.forward_features(x) for m in self.members], dim=1)


def build_ensemble(
    num_classes: int, members: Sequence[dict[str, Any]] = (), activation: str = "sigmoid"
) -> Classifier:
    """An untrained ensemble shaped like ``members`` (``[{"name": ..., "kwargs": {...}}, ...]``).

    ``load_run`` then fills in the weights of every member from the one safetensors file.

    Raises:
        ModelError: no members, or a nested ensemble (see also :func:`ensemble_of`).
    """
    if not members:
        raise ModelError(
            "an ensemble is not trained; build one from trained runs with "
            "`cxrad ensemble RUN RUN ... --data WORK --out RUN`"
        )
    if any(m.get("name") == ENSEMBLE for m in members):
        raise ModelError("an ensemble cannot contain another ensemble; list its members")
    nets = [
        create_model(m["name"], num_classes=num_classes, **m.get("kwargs", {})) for m in members
    ]
    return ensemble_of(nets, activation)


def ensemble_of(nets: Sequence[Classifier], activation: str = "sigmoid") -> Classifier:
    """Wrap ``nets`` (trained or not) in one :class:`Classifier` with the ensemble's contract.

    Raises:
        ModelError: members with different input sizes.
    """
    sizes = {n.spec.input_size for n in nets}
    if len(sizes) > 1:
        raise ModelError(f"ensemble members expect different input sizes {sorted(sizes)}")
    names = [n.spec.name for n in nets]
    cams = [f"members.{i}.net.{n.spec.cam_layer}" for i, n in enumerate(nets) if n.spec.cam_layer]
    spec = ModelSpec(
        name=ENSEMBLE,
        input_size=nets[0].spec.input_size,
        mean=0.0,  # identity: each member normalises its own input
        std=1.0,
        cam_layer=",".join(cams) if len(cams) == len(nets) else "",
        description=f"mean probability of {len(nets)} runs: {', '.join(names)}",
    )
    return Classifier(EnsembleNet(nets, activation), spec)
