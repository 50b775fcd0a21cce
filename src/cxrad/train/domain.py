"""Stage 7, train: a source-adversarial head with gradient reversal (DANN, Ganin & Lempitsky 2015).

In these collections the source is predictable from a film's features, and a model that has
learned "which hospital" fails at the next one. ``--dg adversarial`` adds, for training only, a
small head that predicts each train film's source from the pooled features the classifier
reads. Between the features and that head sits a gradient-reversal layer: the head learns to
tell sources apart, while the network below it receives the negated, scaled gradient and so
learns features the head cannot use. The reversal factor is ramped up as in the paper,
``lambda(p) = 2 / (1 + exp(-10 p)) - 1`` over training progress ``p``, times ``dg_weight``.

The head lives on the LightningModule, beside the :class:`~cxrad.models.Classifier`, never in
it: the saved ``state_dict``, the ONNX graph and the decision contract are those of a plain run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrad.errors import TrainError
from cxrad.models import Classifier
from cxrad.options import suggest

DG_METHODS = ("none", "adversarial")
"""``cxrad train --dg`` choices."""
DOMAIN_COLUMN = "source"
"""The manifest column the adversary predicts."""


def check_dg(dg: str, weight: float) -> str:
    """``dg`` if it is a known method and ``weight`` a usable factor.

    Raises:
        TrainError: unknown method (with "did you mean") or a weight that is not finite and > 0.
    """
    if dg not in DG_METHODS:
        raise TrainError(
            f"unknown domain-generalisation method {dg!r}; expected one of {DG_METHODS}."
            f"{suggest(dg, DG_METHODS)}"
        )
    if not (math.isfinite(weight) and weight > 0):
        raise TrainError(f"--dg-weight must be a finite number > 0 (e.g. 0.1), got {weight!r}")
    return dg


class _GradReverse(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-coeff``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; the gradient flowing back through it is negated and scaled by ``coeff``.

    Example:
        >>> y = grad_reverse(features, 0.1)  # d loss / d features = -0.1 * d loss / d y
    """
    return _GradReverse.apply(x, float(coeff))


def dann_lambda(progress: float) -> float:
    """DANN's ramp ``2 / (1 + exp(-10 p)) - 1``: 0 at the start, ~1 by the end of training.

    Early features are noise; reversing the domain gradient at full strength then would only
    disturb the classifier, so the adversary's pull grows as training progresses.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def last_linear(model: Classifier) -> str | None:
    """Name (in ``model.net``) of its last ``nn.Linear``, whose input is the pooled features."""
    last = None
    for name, m in model.net.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return last


def logits_and_features(
    model: Classifier, x: torch.Tensor, tap: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the features the classifier reads, in one forward pass where possible.

    With ``tap`` (a linear head's name) the features are that layer's input, caught by a hook
    that lives for this call only, so the model itself never carries one. A net without a
    linear head (``seed-fcn``) pays a second pass through ``forward_features``.
    """
    if tap is None:
        return model(x), model.forward_features(x)
    box: list[torch.Tensor] = []
    hook = model.net.get_submodule(tap).register_forward_pre_hook(
        lambda _m, args: box.append(args[0])
    )
    try:
        logits = model(x)
    finally:
        hook.remove()
    return logits, box[-1]


class DomainAdversary(nn.Module):
    """The training-only source head: features -> gradient reversal -> MLP -> source logits.

    Its cross-entropy is weighted by inverse source frequency, so a large source cannot be
    "predicted" by always naming it: the head, and hence the reversal, targets balanced
    accuracy, the number the shortcut audit reports.

    Args:
        in_features: width of the pooled features.
        domains: source names, in code order.
        counts: train films (or expected draws) per source, same order.
        weight: ``dg_weight``, the reversal factor at the end of the ramp.
        tap: the classifier's linear head (see :func:`last_linear`), or None.
        hidden: the head's hidden width.
    """

    def __init__(
        self,
        in_features: int,
        domains: Sequence[str],
        counts: Sequence[float],
        weight: float = 0.1,
        tap: str | None = None,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        if len(domains) < 2:
            raise TrainError(
                f"--dg adversarial needs films from at least two sources in the train rows, "
                f"found {list(domains)}; drop --dg or train on more sources"
            )
        self.domains = list(domains)
        self.weight = float(weight)
        self.tap = tap
        self.head = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, len(domains))
        )
        n = np.asarray(counts, dtype=np.float64)
        cw = torch.as_tensor(n.sum() / (len(n) * np.maximum(n, 1)), dtype=torch.float32)
        self.register_buffer("class_weight", cw, persistent=False)

    def forward(self, features: torch.Tensor, coeff: float) -> torch.Tensor:
        """Source logits ``(B, K)``; gradients reach ``features`` reversed and scaled by ``coeff``."""
        return self.head(grad_reverse(features.float(), coeff))

    def loss(self, features: torch.Tensor, domains: torch.Tensor, progress: float) -> torch.Tensor:
        """Weighted cross-entropy of the source head at training ``progress`` in [0, 1]."""
        coeff = self.weight * dann_lambda(progress)
        return F.cross_entropy(self(features, coeff), domains.long(), weight=self.class_weight)


def build_adversary(model: Classifier, loader: Any, weight: float, size: int) -> DomainAdversary:
    """The adversary for ``model`` over the sources of ``loader``'s train rows.

    ``loader.dataset`` carries ``domains`` and ``domain_codes``; when ``loader.sampler`` draws
    rows by ``weights`` (``--sampler balanced``), sources are weighted by how often they are
    drawn, not by how many rows they have, so the two levers do not correct twice.
    """
    tap = last_linear(model)
    if tap is not None:
        width = int(model.net.get_submodule(tap).in_features)
    else:
        was = model.training
        model.eval()
        with torch.no_grad():
            width = int(model.forward_features(torch.zeros(2, 1, size, size)).shape[1])
        model.train(was)
    ds = loader.dataset
    draws = getattr(loader.sampler, "weights", None)
    draws = None if draws is None else np.asarray(draws, dtype=np.float64) * len(ds.domain_codes)
    counts = np.bincount(ds.domain_codes, weights=draws, minlength=len(ds.domains))
    return DomainAdversary(width, ds.domains, counts.tolist(), weight, tap)


__all__ = [
    "DG_METHODS",
    "DOMAIN_COLUMN",
    "DomainAdversary",
    "build_adversary",
    "check_dg",
    "dann_lambda",
    "grad_reverse",
    "last_linear",
    "logits_and_features",
]
