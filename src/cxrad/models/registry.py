"""Stage 6, models: a registry of pure ``nn.Module`` builders, each carrying its input contract.

After timm's registry: a name maps to a builder plus a :class:`ModelSpec` that says what input
the model expects (size, channels, normalisation) and which layer Grad-CAM should look at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from cxrad.errors import ModelError
from cxrad.labels import CLASSES
from cxrad.options import suggest


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model needs from its input, and how to explain it.

    Attributes:
        name: registry name, e.g. ``"seed-fcn"``.
        input_size: square side in pixels the model was designed for.
        in_channels: always 1 here: radiographs are grey.
        mean: subtracted from the [0, 1] input inside the model.
        std: divides the centred input inside the model.
        cam_layer: dotted module name (inside ``Classifier.net``) that Grad-CAM hooks.
        description: one line for ``cxrad info`` and the docs.
        defaults: keyword arguments passed to the builder unless overridden.
        min_input_size: the smallest square side the network accepts (its downsampling
            leaves nothing below it); checked by :func:`check_input_size` before training.
    """

    name: str
    input_size: int = 256
    in_channels: int = 1
    mean: float = 0.5
    std: float = 0.25
    cam_layer: str = ""
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    min_input_size: int = 8

    def contract(self) -> dict[str, Any]:
        """The input contract as plain JSON-able data (stored in each run's config)."""
        d = asdict(self)
        d.pop("defaults")
        d.pop("min_input_size")  # a property of the code, not of a trained run
        return d


ENSEMBLE = "ensemble"
"""The model name an ensemble run's config carries (see :mod:`cxrad.models.ensemble`)."""
ONE_CLASS = "one-class"
"""The model name a one-class run's config carries (see :mod:`cxrad.models.oneclass`)."""

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[Builder, ModelSpec]] = {}


def register_model(spec: ModelSpec) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(num_classes, **kwargs) -> nn.Module`` under ``spec.name``.

    The builder's module must map a ``(B, 1, S, S)`` float tensor to ``(B, num_classes)``
    logits and provide ``forward_features(x) -> (B, F)`` (used by the shortcut audit).
    """

    def deco(builder: Builder) -> Builder:
        if spec.name in _REGISTRY:
            raise ValueError(f"model {spec.name!r} registered twice")
        _REGISTRY[spec.name] = (builder, spec)
        return builder

    return deco


def list_models() -> list[str]:
    """Registered model names, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; unknown names raise with "did you mean"."""
    _ensure_loaded()
    if name == ENSEMBLE:
        raise ModelError(
            "'ensemble' is not trained; train members with `cxrad train`, then build one with "
            "`cxrad ensemble RUN RUN ... --data WORK --out RUN`"
        )
    if name not in _REGISTRY:
        raise ModelError(
            f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}.{suggest(name, _REGISTRY)}"
        )
    return _REGISTRY[name][1]


def check_input_size(model: str | ModelSpec, size: int) -> None:
    """Raise :class:`ModelError` unless ``model`` (a name or spec) takes ``size`` x ``size`` inputs.

    Example:
        >>> check_input_size("seed-fcn", 64)  # doctest: +SKIP
        ModelError: seed-fcn needs inputs of at least 128 px ...
    """
    spec = get_spec(model) if isinstance(model, str) else model
    name = spec.name
    if size < spec.min_input_size:
        usable = sorted(n for n, (_, s) in _REGISTRY.items() if s.min_input_size <= size)
        others = f"; at {size} px use {', '.join(usable)}" if usable else ""
        raise ModelError(
            f"{name} needs inputs of at least {spec.min_input_size} px (its downsampling leaves "
            f"nothing of a smaller film), got --size {size}; use --size {spec.min_input_size} "
            f"or more{others}"
        )


class Classifier(nn.Module):
    """A registered network plus its input normalisation, so callers feed plain [0, 1] images.

    Keeping the normalisation inside the module means training, prediction and the exported
    ONNX graph can never disagree about it.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.register_buffer("mean", torch.tensor(float(spec.mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(spec.std)), persistent=False)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` for images ``(B, 1, S, S)`` scaled to [0, 1]."""
        return self.net(self._norm(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, F)``, for linear probes."""
        return self.net.forward_features(self._norm(x))


def create_model(name: str, num_classes: int = len(CLASSES), **kwargs: Any) -> Classifier:
    """Build a registered model, randomly initialised (nothing is downloaded).

    Example:
        >>> model = create_model("seed-fcn")
        >>> model(torch.rand(2, 1, 256, 256)).shape
        torch.Size([2, 17])

    ``name="ensemble"`` with ``members=[...]`` builds an ensemble's shape
    (see :mod:`cxrad.models.ensemble`); ensembles are assembled from runs, never trained.
    """
    if name == ENSEMBLE:
        from cxrad.models.ensemble import build_ensemble

        return build_ensemble(num_classes, **kwargs)
    if name == ONE_CLASS:
        from cxrad.models.oneclass import build_one_class

        return build_one_class(num_classes, **kwargs)
    spec = get_spec(name)
    builder = _REGISTRY[name][0]
    net = builder(num_classes=num_classes, **{**spec.defaults, **kwargs})
    return Classifier(net, spec)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, as Keras' summary counts them without buffers."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _ensure_loaded() -> None:
    # Importing the zoo registers every model; done lazily to avoid import cycles.
    import cxrad.models.zoo  # noqa: F401
