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
from cxrad.environment import environment
from cxrad.errors import TrainError
from cxrad.folderlock import writes_folder
from cxrad.labels import NORMAL
from cxrad.manifest import STATUS_OK, manifest_hash, read_manifest
from cxrad.models import check_input_size, save_run
from cxrad.models.oneclass import ONE_CLASS, PATCH, POOLED, SPEC, build_one_class
from cxrad.options import suggest
from cxrad.train.cutpaste import synthetic_anomalies
from cxrad.train.oneclass_density import (
    PATCH_LAYER_SETS,
    PROXIES,
    best_per_candidate,
    candidate_name,
    candidates,
    finish,
    fit_density,
    proxy_sets,
    proxy_table,
    recalibrate_bn,
    save_checkpoints,
)
from cxrad.train.ood import cached_batches
from cxrad.train.setup import cpu_threads, open_work_cache

logger = logging.getLogger(__name__)

TASK = "one-class"
THRESHOLD_METHOD = "quantile_of_normal_val_distances"
DENSITY_OPTIONS = (POOLED, PATCH, "auto")


def normal_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The ``ok`` rows of ``split`` labelled NORMAL: the only rows one-class training reads."""
    return df[(df["status"] == STATUS_OK) & (df["split"] == split) & (df[NORMAL] == 1)]


@writes_folder("out", "cxrad train --task one-class", TrainError)
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
    _check_choices(density=density, proxy=proxy)
    args = {k: v for k, v in locals().items() if k not in ("progress", "t0", "augment")}
    args.update(work=str(work), out=str(out))
    torch.set_num_threads(threads or cpu_threads())
    augment = augment if augment is not None else AugmentConfig()
    args["augment"] = augment.to_dict()
    check_input_size(SPEC, size)  # before any data is read
    df, x_train, x_val = _normal_films(work, size, mode, limit_train, seed)
    torch.manual_seed(seed)
    model = build_one_class(widths=list(widths), depths=list(depths))
    cands = candidates(density, len(widths), patch_layer_sets)
    sets = proxy_sets(x_train, x_val, proxy_fit, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, len(x_train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max_epochs * steps)
    aug = RadiographAugment(augment, seed=seed)
    history: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    states: list[dict[str, torch.Tensor]] = []
    best: tuple[float, int, dict[str, Any]] = (-1.0, -1, cands[0])
    for epoch in range(max_epochs):
        loss = _epoch(model, x_train, opt, sched, aug, epoch, steps, batch_size, seed)
        best = _score_epoch(model, sets, cands, proxy, epoch, loss, best, history, table)
        states.append(copy.deepcopy(model.state_dict()))
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
    config = _run_config(best, best_per_candidate(table, proxy), density, proxy, fit)
    config.update(
        model={"name": ONE_CLASS, "kwargs": kwargs},
        preprocess={"size": size, "mode": mode},
        manifest_hash=manifest_hash(df),
        train=args,
        epochs_run=max_epochs,
        data={"n_train": len(x_train), "n_val": len(x_val), "abnormal_films_read": 0},
        train_seconds=round(time.perf_counter() - t0, 1),
    )
    config["val_metrics"]["n"] = len(x_val)
    save_run(out, model.eval(), config)
    logger.info(
        "wrote one-class run %s (%s, best epoch %d, %s proxy AUROC %.4f)",
        out, candidate_name(best[2]), best[1], proxy, best[0],
    )  # fmt: skip
    return out


def _check_choices(**given: str) -> None:
    options = {"density": DENSITY_OPTIONS, "proxy": tuple(PROXIES)}
    for name, value in given.items():
        if value not in options[name]:
            raise TrainError(
                f"{name} must be one of {', '.join(options[name])}, got {value!r}."
                f"{suggest(value, options[name])}"
            )


def _normal_films(
    work: str | Path, size: int, mode: str, limit_train: int | None, seed: int
) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """The manifest and the cached NORMAL train and val films (uint8): all one-class reads."""
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
    return df, x_train, x_val


def _score_epoch(
    model: torch.nn.Module,
    sets: dict[str, torch.Tensor],
    cands: list[dict[str, Any]],
    proxy: str,
    epoch: int,
    loss: float,
    best: tuple[float, int, dict[str, Any]],
    history: list[dict[str, Any]],
    table: list[dict[str, Any]],
) -> tuple[float, int, dict[str, Any]]:
    """Both proxies of every candidate after ``epoch``, logged; the best (proxy, epoch, candidate)."""
    recalibrate_bn(model, sets["fit"])
    scores = proxy_table(model, sets, cands)
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
    return best


def _run_config(
    best: tuple[float, int, dict[str, Any]],
    per_candidate: dict[str, dict[str, Any]],
    density: str,
    proxy: str,
    fit: dict[str, Any],
) -> dict[str, Any]:
    """The run config's task, decision, selection and density sections (no abnormal label)."""
    chosen = candidate_name(best[2])
    return {
        "task": TASK,
        "classes": [NORMAL],
        "activation": "sigmoid",
        "thresholds": {NORMAL: 0.5},
        "threshold_method": THRESHOLD_METHOD,
        "selection": {
            "method": PROXIES[proxy],
            "best_epoch": best[1],
            "proxy_auroc": best[0],
            **({} if density == POOLED else {"candidate": chosen, "candidates": per_candidate}),
        },
        "density": fit,
        "val_metrics": {
            "proxy_auroc": best[0],
            **{f"{k}_proxy_auroc": v for k, v in per_candidate[chosen].items() if k in PROXIES},
            "labels_used": [NORMAL],
        },
        "best_epoch": best[1],
        "environment": environment(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cxrad_version": cxrad.__version__,
    }


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


__all__ = [
    "TASK",
    "finish",
    "fit_density",
    "normal_rows",
    "train_one_class",
]
