"""Stage 6, models: Grad-CAM maps of a Classifier, batched over images and classes.

Grad-CAM (Selvaraju et al. 2017) weighs each channel of a convolutional layer by the spatial
mean of the class logit's gradient, sums, and keeps the positive part. This is the same
computation as :class:`monai.visualize.GradCAM` (a test checks that they agree), but one
forward pass serves every positive class of every image in a batch: each backward pass takes
one (image, class) pair per image, and images do not interact in eval mode.

It lives in ``models`` so that both ``evaluate`` (localisation scores) and ``predict``
(overlays) can use it.

Thread safety: several threads (REST requests) may explain with one shared model at once.
Every call registers its own hooks and keeps its own captures, and a hook records only the
forward pass of the thread that registered it, so calls never see each other's activations.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cxrad.errors import PredictError
from cxrad.models.registry import Classifier


def cam_layer_name(model: Classifier) -> str:
    """The module(s) Grad-CAM hooks: ``"net." + spec.cam_layer``, as named inside the Classifier.

    An ensemble names one layer per member, comma-separated; their maps are averaged.

    Raises:
        PredictError: the model does not name a Grad-CAM layer, or names one it lacks.
    """
    layer = model.spec.cam_layer
    if not layer:
        raise PredictError(
            f"model {model.spec.name!r} names no Grad-CAM layer (ModelSpec.cam_layer); "
            "run predict without --heatmaps"
        )
    names = [f"net.{part}" for part in layer.split(",")]
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError as e:
            raise PredictError(
                f"model {model.spec.name!r} has no layer {name!r} for Grad-CAM"
            ) from e
    return ",".join(names)


def grad_cam(
    model: Classifier,
    x: torch.Tensor,
    targets: Sequence[Sequence[int]],
    layer: str | None = None,
) -> list[dict[int, np.ndarray]]:
    """Grad-CAM maps at the input's size for chosen classes of each image.

    Args:
        model: the classifier, in eval mode.
        x: images ``(B, 1, S, S)`` in [0, 1].
        targets: for each image, the class indices to explain (may be empty).
        layer: module name inside ``model``, or several comma-separated (their maps are
            averaged, as for an ensemble); default :func:`cam_layer_name`.

    Returns:
        For each image, ``{class index: (S, S) float32 map}``: non-negative, not normalised
        (the raw Grad-CAM values, upsampled bilinearly), so maps of one model compare.
    """
    if len(targets) != x.shape[0]:
        raise ValueError(f"{len(targets)} target lists for a batch of {x.shape[0]}")
    out: list[dict[int, np.ndarray]] = [{} for _ in targets]
    rounds = max((len(t) for t in targets), default=0)
    if rounds == 0:
        return out
    modules = [model.get_submodule(n) for n in (layer or cam_layer_name(model)).split(",")]
    captured: list[torch.Tensor] = []
    owner = threading.get_ident()

    def hook(_m: torch.nn.Module, _i: object, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != owner:  # another thread's call: not ours to record
            return None
        captured.append(output)
        # Hand a copy downstream so an in-place op after the layer (ReLU(inplace=True)) cannot
        # overwrite the activations whose gradient we ask for.
        return output.clone()

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.enable_grad():
            logits = model(x.detach())
            acts = list(captured)
            for r in range(rounds):
                pairs = [(i, int(t[r])) for i, t in enumerate(targets) if len(t) > r]
                rows = torch.tensor([i for i, _ in pairs])
                cols = torch.tensor([c for _, c in pairs])
                score = logits[rows, cols].sum()
                grads = torch.autograd.grad(score, acts, retain_graph=r < rounds - 1)
                cam = sum(
                    F.interpolate(
                        F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)),
                        size=x.shape[-2:],
                        mode="bilinear",
                        align_corners=False,
                    )
                    for g, a in zip(grads, acts, strict=True)
                ) / len(acts)
                maps = cam[:, 0].detach().cpu().numpy().astype(np.float32)
                for i, c in pairs:
                    out[i][c] = maps[i]
    finally:
        for h in handles:
            h.remove()
    return out
