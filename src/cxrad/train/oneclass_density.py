"""Stage 7, train: the densities of a one-class run and their label-free selection proxies.

A *candidate* is one way to score films with a trained encoder: ``pooled`` (one Ledoit-Wolf
Gaussian on the pooled last-stage features) or ``patch`` (PaDiM, one Gaussian per location of
a stage map, :class:`~cxrad.models.oneclass.OneClassNet`), with its layers and reduction.
Candidates and checkpoints are compared by a **proxy AUROC on normal validation films only**:

- ``cutpaste``: normal val vs CutPaste/scar copies of it (the encoder's own training task);
- ``blob``: normal val vs copies with a smooth Gaussian-blob brightening in the central region
  (:func:`~cxrad.train.cutpaste.local_opacity`), an anomaly the encoder never saw in training.

Both are computed and recorded for every candidate; one of them (``proxy`` of the run) chooses.
No abnormal film and no abnormal label is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrad.data.dataset import mix_seed
from cxrad.models.oneclass import (
    PATCH,
    POOLED,
    REDUCTIONS,
    build_one_class,
    patch_grid,
    pool_to_grid,
)
from cxrad.models.ood import GaussianOOD
from cxrad.train.cutpaste import CUTPASTE, SCAR, local_opacity, synthetic_anomalies

PROXIES = {"cutpaste": "cutpaste_auroc_on_normal_val", "blob": "blob_auroc_on_normal_val"}
"""Proxy name -> the selection method recorded in the run config."""

PATCH_LAYER_SETS: tuple[tuple[int, ...], ...] = ((1,), (2,), (1, 2), (2, 3))
"""The stage sets the ``patch`` density is tried with (``auto`` and ``patch``)."""


def candidate_name(c: dict[str, Any]) -> str:
    """``pooled`` or ``patch:1+2:max``."""
    if c["density"] == POOLED:
        return POOLED
    return f"{PATCH}:{'+'.join(str(i) for i in c['patch_layers'])}:{c['patch_reduce']}"


def candidates(
    density: str, n_stages: int, layer_sets: tuple[tuple[int, ...], ...] = PATCH_LAYER_SETS
) -> list[dict[str, Any]]:
    """The candidates a run of ``density`` (``pooled``, ``patch`` or ``auto``) chooses among."""
    out: list[dict[str, Any]] = []
    if density in (POOLED, "auto"):
        out.append({"density": POOLED})
    if density in (PATCH, "auto"):
        for layers in layer_sets:
            if max(layers) >= n_stages:
                continue
            for reduce in REDUCTIONS:
                out.append({"density": PATCH, "patch_layers": list(layers), "patch_reduce": reduce})
    if not out:
        raise ValueError(f"density must be pooled, patch or auto, got {density!r}")
    return out


def proxy_sets(
    x_train: torch.Tensor, x_val: torch.Tensor, n_fit: int, seed: int
) -> dict[str, torch.Tensor]:
    """Fixed uint8 films for the proxies: train films to fit on, normal val and its two copies.

    The CutPaste copies are drawn exactly as before this module existed (same generator, same
    order), so a ``pooled``/``cutpaste`` run selects as it always did.
    """
    g = torch.Generator().manual_seed(mix_seed(seed, 0xA11))
    fit = x_train[torch.randperm(len(x_train), generator=g)[:n_fit]]
    val = x_val.float() / 255.0
    kinds = torch.where(torch.rand(len(val), generator=g) < 0.5, CUTPASTE, SCAR)
    cut = synthetic_anomalies(val, kinds, g)
    gb = torch.Generator().manual_seed(mix_seed(seed, 0xB10B))
    blob = torch.stack([local_opacity(v, gb) for v in val]) if len(val) else val

    def u8(x: torch.Tensor) -> torch.Tensor:
        return (x * 255).round().to(torch.uint8)

    return {"fit": fit, "normal": x_val, "cutpaste": u8(cut), "blob": u8(blob)}


@torch.no_grad()
def encode(
    model: torch.nn.Module, x: torch.Tensor, layers: set[int], batch_size: int = 128
) -> dict[Any, np.ndarray]:
    """Pooled features ``"pooled": (N, F)`` and stage maps ``i: (N, C, h, w)`` of uint8 films."""
    model.eval()
    net = model.net  # type: ignore[attr-defined]
    pooled, maps = [], {i: [] for i in layers}
    for i in range(0, len(x), batch_size):
        h = model._norm(x[i : i + batch_size].float() / 255.0)  # type: ignore[attr-defined]
        stages = net.stage_maps(h)
        pooled.append(torch.flatten(net.backbone.pool(stages[-1]), 1).double().numpy())
        for j in layers:
            maps[j].append(stages[j].numpy())
    out: dict[Any, np.ndarray] = {POOLED: np.concatenate(pooled)}
    out.update({j: np.concatenate(v) for j, v in maps.items()})
    return out


def candidate_features(enc: dict[Any, np.ndarray], c: dict[str, Any]) -> np.ndarray:
    """``(N, F)`` for ``pooled``; ``(N, L, C)`` (locations row-major) for ``patch``."""
    if c["density"] == POOLED:
        return enc[POOLED]
    layers = tuple(c["patch_layers"])
    maps = [torch.from_numpy(enc[i]) if i in layers else None for i in range(max(layers) + 1)]
    f = pool_to_grid(maps, layers)  # type: ignore[arg-type]
    return f.flatten(2).transpose(1, 2).double().numpy()


def fit_patch(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-location Ledoit-Wolf Gaussians of ``(N, L, C)``: means ``(L, C)``, precisions ``(L, C, C)``."""
    fits = [GaussianOOD().fit(features[:, i]) for i in range(features.shape[1])]
    return np.stack([g.mean_ for g in fits]), np.stack([g.precision_ for g in fits])


def patch_scores(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Per-location Mahalanobis distances ``(N, L)``."""
    d = features - mean
    return np.sqrt(np.maximum(np.einsum("nlc,lcd,nld->nl", d, precision, d), 0.0))


class Density:
    """A fitted candidate: ``fit(train features)``, then ``score(features) -> (N,)``."""

    def __init__(self, candidate: dict[str, Any]) -> None:
        self.candidate = candidate
        self.mean_: np.ndarray | None = None
        self.precision_: np.ndarray | None = None

    def fit(self, features: np.ndarray) -> Density:
        if self.candidate["density"] == POOLED:
            g = GaussianOOD().fit(features)
            self.mean_, self.precision_ = g.mean_, g.precision_
        else:
            self.mean_, self.precision_ = fit_patch(features)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None and self.precision_ is not None
        if self.candidate["density"] == POOLED:
            d = features - self.mean_
            return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", d, self.precision_, d), 0.0))
        m = patch_scores(features, self.mean_, self.precision_)
        return m.max(axis=1) if self.candidate["patch_reduce"] == "max" else m.mean(axis=1)


def proxy_table(
    model: torch.nn.Module, sets: dict[str, torch.Tensor], cands: list[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Both proxy AUROCs of every candidate: ``{name: {"cutpaste": auc, "blob": auc}}``."""
    from sklearn.metrics import roc_auc_score

    layers = {i for c in cands if c["density"] == PATCH for i in c["patch_layers"]}
    enc = {k: encode(model, sets[k], layers) for k in ("fit", "normal", *PROXIES)}
    out: dict[str, dict[str, float]] = {}
    for c in cands:
        f = {k: candidate_features(e, c) for k, e in enc.items()}
        dens = Density(c).fit(f["fit"])
        normal = dens.score(f["normal"])
        row = {}
        for proxy in PROXIES:
            s = np.r_[normal, dens.score(f[proxy])]
            y = np.r_[np.zeros(len(normal)), np.ones(len(f[proxy]))]
            row[proxy] = float(roc_auc_score(y, s))
        out[candidate_name(c)] = row
    return out


def save_checkpoints(out: Path, states: list[dict[str, torch.Tensor]]) -> None:
    """Every epoch's body (``checkpoints/epoch=NN.safetensors``), to refit another candidate."""
    from safetensors.torch import save_file

    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for epoch, state in enumerate(states):
        body = {k: v.contiguous() for k, v in state.items() if k.startswith("net.backbone.")}
        save_file(body, str(out / "checkpoints" / f"epoch={epoch:02d}.safetensors"))


def best_per_candidate(table: list[dict[str, Any]], proxy: str) -> dict[str, dict[str, Any]]:
    """Each candidate's best epoch by ``proxy``, with both proxies at that epoch."""
    out: dict[str, dict[str, Any]] = {}
    for row in table:
        name = row["candidate"]
        if name not in out or row[proxy] > out[name][proxy]:
            out[name] = {"best_epoch": row["epoch"], **{k: row[k] for k in PROXIES}}
    return out


def finish(
    state: dict[str, torch.Tensor],
    candidate: dict[str, Any],
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    quantile: float,
    widths: tuple[int, ...] | list[int],
    depths: tuple[int, ...] | list[int],
    size: int,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Build ``candidate``'s model on a trained body ``state``, refit BN and its density.

    Returns the model, its builder kwargs and the run config's ``density`` section.
    """
    kwargs: dict[str, Any] = {"widths": list(widths), "depths": list(depths)}
    if candidate["density"] == PATCH:
        layers = list(candidate["patch_layers"])
        kwargs.update(
            density=PATCH, patch_layers=layers, patch_grid=patch_grid(size, layers),
            patch_reduce=candidate["patch_reduce"],
        )  # fmt: skip
    model = build_one_class(**kwargs)
    body = {k: v for k, v in state.items() if k.startswith("net.backbone.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    assert not unexpected and all(not k.startswith("net.backbone.") for k in missing), missing
    recalibrate_bn(model, x_train)
    fit = fit_density(model, x_train, x_val, quantile)
    return model, kwargs, fit


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 128) -> None:
    """Recompute every BatchNorm's running statistics as exact averages over films ``x`` (uint8).

    A few hundred steps leave the running estimates far from the true statistics, and the
    Gaussian is fitted on eval-mode features; re-estimating them first ("precise BN") makes
    those features the ones the network actually computes on normal films.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for i in range(0, len(x), batch_size):
        model.forward_features(x[i : i + batch_size].float() / 255.0)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


def fit_density(
    model: torch.nn.Module, x_train: torch.Tensor, x_val: torch.Tensor, quantile: float
) -> dict[str, Any]:
    """Fit the model's density on every normal train film; put the threshold at the val ``quantile``."""
    net = model.net  # type: ignore[attr-defined]
    kind = getattr(net, "density", POOLED)
    c: dict[str, Any] = {"density": kind}
    if kind == PATCH:
        c.update(patch_layers=list(net.patch_layers), patch_reduce=net.patch_reduce)
    layers = set(c.get("patch_layers", []))
    f_train = candidate_features(encode(model, x_train, layers), c)
    dens = Density(c).fit(f_train)
    d_val = dens.score(candidate_features(encode(model, x_val, layers), c))
    loc = float(np.quantile(d_val, quantile))
    scale = float(np.std(d_val)) or 1.0
    net.set_density(dens.mean_, dens.precision_, loc, scale)
    section: dict[str, Any] = {
        "method": "mahalanobis_ledoit_wolf",
        "kind": kind,
        "threshold_distance": loc,
        "scale": scale,
        "quantile": quantile,
        "n_fit": len(x_train),
        "n_threshold": len(x_val),
    }
    if kind == PATCH:
        section.update(
            layers=list(net.patch_layers), grid=net.patch_grid, reduce=net.patch_reduce
        )  # fmt: skip
    return section


__all__ = [
    "PATCH_LAYER_SETS",
    "PROXIES",
    "Density",
    "best_per_candidate",
    "candidate_features",
    "candidate_name",
    "candidates",
    "encode",
    "finish",
    "fit_density",
    "fit_patch",
    "patch_scores",
    "proxy_sets",
    "proxy_table",
    "recalibrate_bn",
    "save_checkpoints",
]
