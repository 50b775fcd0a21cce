"""Stage 7, train: one-class runs, trained and selected on normal films only (``--task one-class``).

Why this method (CutPaste, Li et al., CVPR 2021, with a Gaussian density on its features):

- nothing downloads here, so the usual recipe for anomaly detection (PaDiM, PatchCore, student-
  teacher on ImageNet features) has no pretrained network to start from; CutPaste learns its
  features from scratch, by telling untouched films from films with a piece of themselves pasted
  elsewhere;
- it is cheap: one small CNN (``cxr-fast``'s body) and a cross-entropy loss, so a model trains in
  minutes on a CPU; reconstruction methods (autoencoders, SQUID's inpainting GAN) cost far more;
- the Gaussian on its pooled features (Mahalanobis distance, Ledoit-Wolf shrinkage) is the
  paper's own detector and gives a score with no labels;
- its synthetic anomalies give a **label-free model-selection proxy**: the AUROC between normal
  *validation* films and CutPaste copies of them. SQUID and SimSID pick their checkpoints on
  labelled abnormal validation films; here no abnormal label and no abnormal film is read.

``density`` adds PaDiM (Defard et al., ICPR 2021): a Gaussian per location of an intermediate
stage map (``patch``), or a choice between it and the pooled Gaussian (``auto``), with the
checkpoint, the layers and the reduction chosen together by a proxy on normal val films
(:mod:`cxrad.train.oneclass_density`). ``proxy="blob"`` (a smooth local brightening, an anomaly
the encoder was never trained on) is the one to choose with: the CutPaste proxy scores the
encoder on its own training task, so it rewards features that find paste seams.

Only rows with ``NORMAL == 1`` in the train and val splits are ever loaded. The threshold is the
``quantile`` of the normal val films' distances (by construction ``1 - quantile`` of normal films
fall above it).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import cxrad
from cxrad.data import AugmentConfig
from cxrad.data.augment import RadiographAugment
from cxrad.data.dataset import mix_seed
from cxrad.errors import TrainError
from cxrad.labels import NORMAL
from cxrad.manifest import STATUS_OK, manifest_hash, read_manifest
from cxrad.models import check_input_size, save_run
from cxrad.models.oneclass import ONE_CLASS, PATCH, POOLED, SPEC, build_one_class, patch_grid
from cxrad.models.ood import GaussianOOD
from cxrad.options import suggest
from cxrad.train.cutpaste import synthetic_anomalies
from cxrad.train.oneclass_density import (
    PATCH_LAYER_SETS,
    PROXIES,
    Density,
    best_per_candidate,
    candidate_features,
    candidate_name,
    candidates,
    encode,
    proxy_sets,
    proxy_table,
    save_checkpoints,
)
from cxrad.train.ood import cached_batches
from cxrad.train.setup import cpu_threads, open_work_cache

logger = logging.getLogger(__name__)

TASK = "one-class"
THRESHOLD_METHOD = "quantile_of_normal_val_distances"
SELECTION = "cutpaste_auroc_on_normal_val"
DENSITY_OPTIONS = (POOLED, PATCH, "auto")


def normal_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The ``ok`` rows of ``split`` labelled NORMAL: the only rows one-class training reads."""
    return df[(df["status"] == STATUS_OK) & (df["split"] == split) & (df[NORMAL] == 1)]


def train_one_class(
    work: str | Path,
    out: str | Path,
    *,
    max_epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    size: int = 128,
    mode: str = "letterbox",
    seed: int = 0,
    limit_train: int | None = None,
    quantile: float = 0.95,
    threads: int | None = None,
    augment: AugmentConfig | None = None,
    proxy_fit: int = 512,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    depths: tuple[int, ...] = (2, 2, 2, 2),
    density: str = POOLED,
    proxy: str = "cutpaste",
    patch_layer_sets: tuple[tuple[int, ...], ...] = PATCH_LAYER_SETS,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train a one-class anomaly run on ``work``'s normal train films; select and threshold on val.

    Args:
        work: a split, preprocessed work folder; only its NORMAL rows are read.
        out: the run directory to write.
        max_epochs: epochs of self-supervised training (the best by the proxy is kept).
        batch_size: images per step.
        lr: peak learning rate (one-cycle).
        weight_decay: AdamW weight decay.
        size: cache image side.
        mode: cache resize mode.
        seed: seeds weights, order, augmentation and synthetic anomalies.
        limit_train: cap on normal train films (seeded subset).
        quantile: the threshold's quantile of normal val distances.
        threads: torch CPU threads (default: every CPU available).
        augment: geometric/intensity augmentation before CutPaste (None: the defaults).
        proxy_fit: normal train films used for the per-epoch Gaussian of the proxy.
        widths: the body's stage widths (``cxr-fast``'s by default; narrower trains faster).
        depths: the body's blocks per stage.
        density: ``pooled`` (one Gaussian on pooled features), ``patch`` (PaDiM, one per
            location; layers and reduction chosen by the proxy) or ``auto`` (either, by the proxy).
        proxy: ``cutpaste`` or ``blob``: the normal-val proxy AUROC that picks the checkpoint
            and the candidate (both are recorded for every candidate and epoch).
        patch_layer_sets: the stage sets the patch density is tried with.
        progress: ``progress(epoch, max_epochs)`` after each epoch.

    Returns:
        ``out``, with ``model.safetensors`` and a ``config.json`` whose ``task`` is ``one-class``.

    Raises:
        TrainError: too few normal films in train or val, or no cache.

    Example:
        >>> train_one_class("work-ped", "runs/oneclass", max_epochs=20)  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    for name, value, choices in (("density", density, DENSITY_OPTIONS), ("proxy", proxy, PROXIES)):
        if value not in choices:
            raise TrainError(
                f"{name} must be one of {', '.join(choices)}, got {value!r}.{suggest(value, choices)}"
            )
    args = {k: v for k, v in locals().items() if k not in ("progress", "t0", "augment")}
    args.update(work=str(work), out=str(out))
    torch.set_num_threads(threads or cpu_threads())
    augment = augment if augment is not None else AugmentConfig()
    args["augment"] = augment.to_dict()
    check_input_size(SPEC, size)  # before any data is read
    df = read_manifest(work)
    if "split" not in df.columns:
        raise TrainError(f"the manifest in {work} has no split; run `cxrad split {work}` first")
    train_df, val_df = normal_rows(df, "train"), normal_rows(df, "val")
    if limit_train is not None and limit_train < len(train_df):
        train_df = train_df.sample(n=limit_train, random_state=seed).sort_index()
    cache = open_work_cache(work, size, mode)
    x_train, x_val = _load(train_df, cache), _load(val_df, cache)
    for name, x in (("train", x_train), ("val", x_val)):
        if len(x) < 2:
            raise TrainError(
                f"the {name} split of {work} has {len(x)} cached NORMAL films; one-class "
                "training needs at least 2 (re-split, or run `cxrad preprocess` at this size)"
            )
    logger.info("one-class training on %d normal films (%d normal val)", len(x_train), len(x_val))

    torch.manual_seed(seed)
    kwargs = {"widths": list(widths), "depths": list(depths)}
    model = build_one_class(**kwargs)
    steps = max(1, len(x_train) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max_epochs * steps)
    aug = RadiographAugment(augment, seed=seed)
    sets = proxy_sets(x_train, x_val, proxy_fit, seed)
    cands = candidates(density, len(widths), patch_layer_sets)
    history: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    states: list[dict[str, torch.Tensor]] = []
    best: tuple[float, int, dict[str, Any]] = (-1.0, -1, cands[0])
    for epoch in range(max_epochs):
        loss = _epoch(model, x_train, opt, sched, aug, epoch, steps, batch_size, seed)
        recalibrate_bn(model, sets["fit"])
        scores = proxy_table(model, sets, cands)
        states.append(copy.deepcopy(model.state_dict()))
        for c in cands:
            row = scores[candidate_name(c)]
            table.append({"epoch": epoch, "candidate": candidate_name(c), **row})
            if row[proxy] > best[0]:
                best = (row[proxy], epoch, c)
        first = scores[candidate_name(cands[0])]
        history.append({"epoch": epoch, "train_loss": loss, PROXIES[proxy]: first[proxy]})
        logger.info(
            "epoch %d: ssl loss %.4f, %s proxy AUROC %s", epoch, loss, proxy,
            ", ".join(f"{k} {v[proxy]:.4f}" for k, v in scores.items()),
        )  # fmt: skip
        if progress:
            progress(epoch + 1, max_epochs)
    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).to_csv(out / "logs" / "metrics.csv", index=False)
    pd.DataFrame(table).to_csv(out / "logs" / "proxy.csv", index=False)
    save_checkpoints(out, states)
    model, kwargs, fit = finish(
        states[best[1]], best[2], x_train, x_val, quantile, widths, depths, size
    )
    per_candidate = best_per_candidate(table, proxy)
    config = {
        "task": TASK,
        "model": {"name": ONE_CLASS, "kwargs": kwargs},
        "classes": [NORMAL],
        "preprocess": {"size": size, "mode": mode},
        "activation": "sigmoid",
        "thresholds": {NORMAL: 0.5},
        "threshold_method": THRESHOLD_METHOD,
        "selection": {
            "method": PROXIES[proxy],
            "best_epoch": best[1],
            "proxy_auroc": best[0],
            **({} if density == POOLED else {"candidate": candidate_name(best[2])}),
            **({} if density == POOLED else {"candidates": per_candidate}),
        },
        "density": fit,
        "manifest_hash": manifest_hash(df),
        "train": args,
        "val_metrics": {
            "proxy_auroc": best[0],
            **{
                f"{k}_proxy_auroc": v
                for k, v in per_candidate[candidate_name(best[2])].items()
                if k in PROXIES
            },
            "n": len(x_val),
            "labels_used": [NORMAL],
        },
        "best_epoch": best[1],
        "epochs_run": max_epochs,
        "data": {"n_train": len(x_train), "n_val": len(x_val), "abnormal_films_read": 0},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cxrad_version": cxrad.__version__,
    }
    save_run(out, model.eval(), config)
    logger.info(
        "wrote one-class run %s (%s, best epoch %d, %s proxy AUROC %.4f)",
        out, candidate_name(best[2]), best[1], proxy, best[0],
    )  # fmt: skip
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


def _load(rows: pd.DataFrame, cache: Any) -> torch.Tensor:
    xs = [(x * 255).round().to(torch.uint8) for x in cached_batches(rows, cache, 256)]
    return torch.cat(xs) if xs else torch.zeros((0, 1, 1, 1), dtype=torch.uint8)


def _epoch(
    model: torch.nn.Module,
    x_train: torch.Tensor,
    opt: torch.optim.Optimizer,
    sched: Any,
    aug: RadiographAugment,
    epoch: int,
    steps: int,
    batch_size: int,
    seed: int,
) -> float:
    model.train()
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0xC7))
    order = torch.randperm(len(x_train), generator=g)
    losses = []
    for step in range(steps):
        x = x_train[order[step * batch_size : (step + 1) * batch_size]].float() / 255.0
        x = aug(x, epoch=epoch, step=step)
        kinds = torch.randint(0, 3, (len(x),), generator=g)
        x = synthetic_anomalies(x, kinds, g)
        logits = model.net.ssl_logits(model._norm(x))
        loss = F.cross_entropy(logits, kinds)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


@torch.no_grad()
def features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Pooled features ``(N, F)`` of uint8 films ``(N, 1, S, S)``."""
    model.eval()
    out = [
        model.forward_features(x[i : i + batch_size].float() / 255.0).double().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out)


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


def proxy_auroc(
    model: torch.nn.Module, fit: torch.Tensor, normal: torch.Tensor, synthetic: torch.Tensor
) -> float:
    """AUROC of the Gaussian's distance, normal val films vs their synthetic anomalies (no labels)."""
    from sklearn.metrics import roc_auc_score

    g = GaussianOOD().fit(features(model, fit))
    s = np.r_[g.score(features(model, normal)), g.score(features(model, synthetic))]
    y = np.r_[np.zeros(len(normal)), np.ones(len(synthetic))]
    return float(roc_auc_score(y, s))


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
    "TASK",
    "features",
    "finish",
    "fit_density",
    "normal_rows",
    "proxy_auroc",
    "train_one_class",
]
