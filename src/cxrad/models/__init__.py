"""Stage 6, models: pure ``nn.Module`` networks, a registry, and run-directory I/O.

Nothing here imports the training stack, so prediction can load a model without Lightning.
"""

from __future__ import annotations

from cxrad.models.registry import (
    Classifier,
    ModelSpec,
    count_parameters,
    create_model,
    get_spec,
    list_models,
    register_model,
)
from cxrad.models.run import load_run, probabilities, read_config, resolve_run, save_run

__all__ = [
    "Classifier",
    "ModelSpec",
    "count_parameters",
    "create_model",
    "get_spec",
    "list_models",
    "load_run",
    "probabilities",
    "read_config",
    "register_model",
    "resolve_run",
    "save_run",
]
