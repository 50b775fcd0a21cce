"""Stage 6, models: a run directory is ``model.safetensors`` + ``config.json``, nothing pickled.

``config.json`` is read and written only through :class:`~cxrad.models.config.RunConfig`.
Loading a run rebuilds the model with the input contract the run recorded (size,
normalisation, Grad-CAM layer), not with whatever the registry says today.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cxrad.atomic import replacing
from cxrad.errors import ModelError
from cxrad.models.config import CONFIG, InputContract, RunConfig
from cxrad.models.registry import ENSEMBLE, Classifier, create_model

WEIGHTS = "model.safetensors"
DEFAULT_RUN = Path(__file__).resolve().parent.parent / "assets" / "default"


def resolve_run(run: str | Path) -> Path:
    """Turn ``"default"`` or a path into a run directory that holds a model.

    Raises:
        ModelError: the folder has no model; says how to train one.
    """
    path = DEFAULT_RUN if str(run) == "default" else Path(run)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        how = (
            "the shipped default model is missing from this install; reinstall cxrad, or train one "
            "with `cxrad train WORK --out RUN` and pass `--model RUN`"
            if str(run) == "default"
            else f"train one with `cxrad train WORK --out {path}`"
        )
        raise ModelError(f"{path} is not a cxrad run (needs {CONFIG} and {WEIGHTS}); {how}")
    return path


def save_run(run_dir: str | Path, model: Classifier, config: RunConfig | Mapping[str, Any]) -> Path:
    """Write weights and config atomically into ``run_dir``; the model's contract is recorded.

    ``config`` may still be an old-style dict (``model`` and ``classes`` at least).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict({**config, "input": model.spec.contract()})
    config = config.evolve(input=InputContract(**model.spec.contract()))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with replacing(run_dir / WEIGHTS) as tmp_w:
        save_file(state, str(tmp_w))
    config.save(run_dir)
    return run_dir


def read_config(run: str | Path) -> RunConfig:
    """The :class:`RunConfig` of a run (``"default"`` allowed)."""
    return RunConfig.load(resolve_run(run))


def build_model(config: RunConfig) -> Classifier:
    """An untrained model shaped as ``config`` records, with the recorded input contract."""
    m = config.model
    model = create_model(m.name, num_classes=len(config.classes), **m.kwargs)
    if m.name == ENSEMBLE:
        return model  # members normalise their own input; the wrapper is the identity
    c = config.input
    cam = c.cam_layer or model.spec.cam_layer
    model.spec = replace(model.spec, input_size=c.input_size, mean=c.mean, std=c.std, cam_layer=cam)
    model.mean.fill_(float(c.mean))
    model.std.fill_(float(c.std))
    return model


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, RunConfig]:
    """Rebuild the model of a run in eval mode, with its weights; return it and its config.

    Example:
        >>> model, cfg = load_run("default")
        >>> cfg.classes[:2]
        ('ATELECTASIS', 'CARDIOMEGALY')
    """
    path = resolve_run(run)
    cfg = RunConfig.load(path)
    model = build_model(cfg)
    try:
        state = load_file(str(path / WEIGHTS), device=str(device))
        model.load_state_dict(state)
    except SafetensorError as e:  # truncated or overwritten file
        raise ModelError(
            f"{path / WEIGHTS} is not a readable safetensors file ({e}); the run is damaged: "
            "copy it again or retrain"
        ) from e
    except (RuntimeError, OSError) as e:
        raise ModelError(
            f"weights in {path / WEIGHTS} do not fit model {cfg.model.name!r}: {e}"
        ) from e
    return model.to(device).eval(), cfg


def probabilities(
    logits: torch.Tensor, config: RunConfig | Mapping[str, Any] | None = None
) -> torch.Tensor:
    """Turn logits into calibrated probabilities the way the run decides (torch in, torch out).

    The torch twin of :func:`cxrad.models.decision.calibrated`: per-class temperature, then
    the activation. A plain ``{"activation": ...}`` mapping gives uncalibrated probabilities
    (training metrics, before any temperature is fitted).
    """
    if isinstance(config, RunConfig):
        activation, temps = config.activation, np.asarray(config.temperatures())
    else:
        activation = str((config or {}).get("activation") or "sigmoid")
        temps = np.ones(logits.shape[-1])
    t = torch.as_tensor(temps, dtype=logits.dtype, device=logits.device)
    z = logits / t
    return torch.softmax(z, dim=-1) if activation == "softmax" else torch.sigmoid(z)
