"""Stage 6, models: pure ``nn.Module`` networks, a registry, and run-directory I/O.

Nothing here imports the training stack, so prediction can load a model without Lightning.
"""

from __future__ import annotations

from cxrad.models.calibrate import DEFAULT_RULE, Rule, parse_rule, recalibrate
from cxrad.models.config import (
    CONFIG_VERSION,
    Decision,
    InputContract,
    ModelRef,
    OperatingPoint,
    Preprocess,
    RunConfig,
)
from cxrad.models.decision import Decisions, DecisionStep, calibrated
from cxrad.models.registry import (
    Classifier,
    ModelSpec,
    check_input_size,
    count_parameters,
    create_model,
    get_spec,
    list_models,
    register_model,
)
from cxrad.models.run import (
    build_model,
    load_run,
    probabilities,
    read_config,
    resolve_run,
    save_run,
)

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_RULE",
    "Classifier",
    "Decision",
    "DecisionStep",
    "Decisions",
    "InputContract",
    "ModelRef",
    "ModelSpec",
    "OperatingPoint",
    "Preprocess",
    "Rule",
    "RunConfig",
    "build_model",
    "calibrated",
    "check_input_size",
    "count_parameters",
    "create_model",
    "get_spec",
    "list_models",
    "load_run",
    "parse_rule",
    "probabilities",
    "read_config",
    "recalibrate",
    "register_model",
    "resolve_run",
    "save_run",
]
