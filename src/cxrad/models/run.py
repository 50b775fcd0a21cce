"""Stage 6, models: a run directory is ``model.safetensors`` + ``config.json``, nothing pickled.

``config.json`` holds everything needed to rebuild and use the model: its registry name and
builder arguments, the class list, the input contract, per-class thresholds picked on
validation, an optional temperature, the manifest hash of the training data and the git commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cxrad.errors import ModelError
from cxrad.models.registry import Classifier, create_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
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


def save_run(run_dir: str | Path, model: Classifier, config: dict[str, Any]) -> Path:
    """Write weights and config atomically into ``run_dir``.

    ``config`` must contain ``model`` (``{"name": ..., "kwargs": {...}}``) and ``classes``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for key in ("model", "classes"):
        if key not in config:
            raise ValueError(f"run config needs {key!r}")
    config = {**config, "input": model.spec.contract()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_w = run_dir / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp_w))
    tmp_c = run_dir / f".{CONFIG}.tmp"
    tmp_c.write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    os.replace(tmp_w, run_dir / WEIGHTS)
    os.replace(tmp_c, run_dir / CONFIG)
    return run_dir


def read_config(run: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run (``"default"`` allowed)."""
    return json.loads((resolve_run(run) / CONFIG).read_text())


def load_run(
    run: str | Path, device: str | torch.device = "cpu"
) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model of a run in eval mode, with its weights; return it and its config.

    Example:
        >>> model, cfg = load_run("default")
        >>> cfg["classes"][:2]
        ['ATELECTASIS', 'CARDIOMEGALY']
    """
    path = resolve_run(run)
    cfg = json.loads((path / CONFIG).read_text())
    m = cfg["model"]
    model = create_model(m["name"], num_classes=len(cfg["classes"]), **m.get("kwargs", {}))
    try:
        state = load_file(str(path / WEIGHTS), device=str(device))
        model.load_state_dict(state)
    except (RuntimeError, OSError) as e:
        raise ModelError(f"weights in {path / WEIGHTS} do not fit model {m['name']!r}: {e}") from e
    return model.to(device).eval(), cfg


def probabilities(logits: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    """Turn logits into probabilities the way the run was trained.

    Multi-label runs (the default) use a sigmoid per class; ``--loss softmax`` runs use a softmax.
    A ``temperature`` fitted on validation, if present in the config, divides the logits first.
    """
    logits = logits / float(config.get("temperature") or 1.0)
    if config.get("activation", "sigmoid") == "softmax":
        return torch.softmax(logits, dim=-1)
    return torch.sigmoid(logits)
