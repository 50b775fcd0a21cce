"""Stage 7, train: finalise a run: val logits -> temperatures, operating points, triage -> saved run.

Shared by :func:`cxrad.train.train` and :func:`cxrad.train.ensemble_runs` (and, through
:func:`refit_run`, by anyone refitting an existing run's decisions on a work folder's val
split), so every run's decisions are fitted the same way, on val, never on test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrad.data import CachedDataset
from cxrad.data.holdout import fit_rows
from cxrad.errors import TrainError
from cxrad.manifest import read_manifest
from cxrad.models import (
    DEFAULT_RULE,
    Classifier,
    DecisionStep,
    Rule,
    RunConfig,
    load_run,
    parse_rule,
    probabilities,
    recalibrate,
    save_run,
)
from cxrad.models.calibrate import film_stats, triage_labels
from cxrad.models.shift import score_reference
from cxrad.train.metrics import macro_auroc, per_class_auroc
from cxrad.train.module import to_unit_float
from cxrad.train.setup import open_work_cache

logger = logging.getLogger(__name__)


@torch.no_grad()
def predict_logits(
    model: Classifier, loader: torch.utils.data.DataLoader, gpu: bool = False
) -> np.ndarray:
    """Logits ``(N, C)`` float32 for every image of ``loader``, in order."""
    device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    out = []
    for x, _ in loader:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            logits = model(to_unit_float(x.to(device, non_blocking=True)))
        out.append(logits.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def predict_probs(
    model: Classifier, loader: torch.utils.data.DataLoader, activation: str, gpu: bool
) -> np.ndarray:
    """Uncalibrated probabilities ``(N, C)`` for every image of ``loader``, in order."""
    logits = predict_logits(model, loader, gpu)
    return probabilities(torch.from_numpy(logits), {"activation": activation}).numpy()


def decision_metrics(config: RunConfig, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Val numbers of the run's decision step: AUROC per class and film-level triage stats."""
    step = DecisionStep(config)
    d = step(logits)
    per_class = per_class_auroc(d.probabilities, labels, list(config.classes))
    y_abn = triage_labels(labels, config.classes)
    return {
        "macro_auroc": macro_auroc(per_class),
        "auroc": per_class,
        "n": len(labels),
        "films": film_stats(d.findings, d.abnormal, y_abn),
    }


def finalise(
    model: Classifier,
    config: RunConfig,
    logits: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    rule: Rule | str = DEFAULT_RULE,
    sources: np.ndarray | None = None,
) -> Path:
    """Fit the decision step on val (``logits``, ``labels``), record val metrics, save the run.

    ``sources`` (each val film's source) is what an ``@source`` rule holds its target on.

    Returns:
        ``out``, holding ``model.safetensors`` and ``config.json``.
    """
    rule = parse_rule(rule)
    fitted = recalibrate(config, logits, labels, rule, groups=sources)
    fitted = fitted.evolve(
        val_metrics=decision_metrics(fitted, logits, labels),
        extra={
            **fitted.extra,
            "operating_point_rule": str(rule),
            "val_scores": score_reference(logits, config.classes),
        },
    )
    return save_run(out, model.cpu().eval(), fitted)


def val_logits(
    model: Classifier, config: RunConfig, work: str | Path, batch_size: int = 64, gpu: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels and sources of WORK's cached val split, prepared as ``config`` records."""
    df = read_manifest(work)
    if "split" not in df.columns:
        raise TrainError(f"the manifest in {work} has no split; run `cxrad split {work}` first")
    val = fit_rows(df, config, "val").reset_index(drop=True)  # never a held-out source
    pre = config.preprocess
    ds = CachedDataset(
        val,
        open_work_cache(work, pre.size, pre.mode, pre.normalise, pre.crop),
        list(config.classes),
        uint8=True,
    )
    if len(ds) == 0:
        raise TrainError(
            f"no cached val images in {work}; run `{pre.cache_config().command(work)}` first"
        )
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    return predict_logits(model, loader, gpu), ds.labels, ds.df["source"].to_numpy()


def refit_run(
    run: str | Path, work: str | Path, out: str | Path, rule: Rule | str = DEFAULT_RULE
) -> Path:
    """Refit an existing run's temperatures, operating points and triage on WORK's val split.

    No weights change. WORK must be a work folder the run did not train on the val split of
    (normally the one it was trained on); nothing is fitted on test.

    Example:
        >>> refit_run("default", "work", "runs/default-refit", "spec=0.95")  # doctest: +SKIP
    """
    model, config = load_run(run)
    logits, labels, sources = val_logits(model, config, work)
    logger.info("refitting %s on %d val images of %s (%s)", run, len(labels), work, rule)
    return finalise(model, config, logits, labels, out, rule, sources)


__all__ = ["decision_metrics", "finalise", "predict_logits", "refit_run", "val_logits"]
