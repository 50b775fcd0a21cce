"""Stage 6, models: load optional local pretrained weights into a network, never downloading.

Every builder takes ``weights: str | None``, a path to a ``state_dict`` saved as safetensors or a
``torch.save`` file (read with ``weights_only=True``, so no code is unpickled). Without it the
model starts from random initialisation: nothing here touches the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cxrad.errors import ModelError

logger = logging.getLogger(__name__)

# Prefixes other tools put in front of parameter names: a cxrad Classifier, DDP, Lightning.
_PREFIXES = ("net.", "module.", "model.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` from safetensors or a ``torch.save`` file, without unpickling code.

    Raises:
        ModelError: the file is missing or is not a tensor dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"weights file {path} does not exist; pass the path of a local .safetensors or .pt "
            "state_dict (nothing is downloaded), or leave weights unset to train from scratch"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and zip errors have no common base
        raise ModelError(
            f"cannot read weights from {path}: {e}; expected a safetensors file or a "
            "torch.save(state_dict) file"
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning checkpoints
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return state


def _strip_prefixes(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and state and not (set(state) & own):
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in state):
                state = {k[len(p) :]: v for k, v in state.items()}
                changed = True
    return state


def load_weights(
    net: nn.Module, path: str | Path, rename: Callable[[str], str] | None = None
) -> nn.Module:
    """Load a local ``state_dict`` into ``net`` and return it.

    Tolerates what fine-tuning needs and nothing more: name prefixes (``net.``, ``module.``,
    ``model.``) are stripped; an RGB first conv is summed to one channel (as timm does for grey
    inputs); tensors whose shape differs only because the class count differs (the last layer)
    are skipped and keep their random initialisation; BatchNorm's ``num_batches_tracked``
    counters, which older checkpoints lack, may be absent. Every skipped or adapted tensor is
    logged.

    Args:
        net: the freshly built network; changed in place.
        path: local ``.safetensors`` or ``.pt``/``.pth`` state_dict.
        rename: maps foreign parameter names to ``net``'s (e.g. torchvision DenseNet -> MONAI).

    Raises:
        ModelError: names are missing or unexpected, or a non-head shape differs.
    """
    own = net.state_dict()
    state = _strip_prefixes(read_state_dict(path), set(own))
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    for k in set(own) - set(state):
        if k.endswith("num_batches_tracked"):
            state[k] = own[k]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelError(
            f"weights in {path} do not fit {type(net).__name__}: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            "save the state_dict of the same architecture"
        )
    head = _head_names(net)
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        want = own[k].shape
        if v.shape == want:
            out[k] = v
        elif v.ndim == 4 and v.shape[1] == 3 and want[1] == 1 and v.shape[0] == want[0]:
            logger.info("weights: %s summed from 3 input channels to 1", k)
            out[k] = v.sum(dim=1, keepdim=True)
        elif k in head:
            logger.warning(
                "weights: %s skipped (%s in file, %s in model)", k, tuple(v.shape), tuple(want)
            )
            out[k] = own[k]
        else:
            raise ModelError(
                f"weights in {path}: {k} has shape {tuple(v.shape)}, the model needs {tuple(want)}"
            )
    net.load_state_dict(out)
    logger.info("loaded %d tensors from %s", len(out), path)
    return net


def _head_names(net: nn.Module) -> set[str]:
    """Parameter names of the last ``nn.Linear`` (the classification head)."""
    last = ""
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return {f"{last}.weight", f"{last}.bias"} if last else set()
