"""Stage 8, evaluate: run a trained model over a split's cached images and write the report.

``evaluate_run`` is the one entry point the CLI calls: it loads the run, reads the work
folder's manifest and cache, runs the model in batches, computes every metric, and writes
``metrics.json``, ``report.html`` and the PNG plots into one folder.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

import cxrad
from cxrad.data.holdout import fit_rows
from cxrad.environment import environment
from cxrad.errors import CacheError, EvaluateError
from cxrad.evaluate.bootstrap import cluster_ids, resample_counts
from cxrad.evaluate.calibration import calibration_table
from cxrad.evaluate.decisions import decision_section
from cxrad.evaluate.evaluator import evaluate_predictions
from cxrad.evaluate.films import film_table
from cxrad.evaluate.metrics import MIN_COUNT
from cxrad.evaluate.outputs import write_outputs
from cxrad.evaluate.sites import site_section
from cxrad.evaluate.subgroups import subgroup_section
from cxrad.labels import SPLITS
from cxrad.manifest import STATUS_OK, manifest_hash, read_manifest
from cxrad.models import (
    DEFAULT_RULE,
    Classifier,
    DecisionStep,
    RunConfig,
    load_run,
    recalibrate,
    resolve_run,
)
from cxrad.models.config import CONFIG
from cxrad.progress import Progress

logger = logging.getLogger(__name__)


SPLIT_ROLES = {
    "test": "the held-out test split of the manifest the run was trained on",
    "val": "the validation split this run chose its checkpoint, temperatures and cut-offs on: "
    "optimistic, not a test",
    "train": "the films this run trained on: not a test",
    "all": "every usable film of the manifest the run was trained on, its training films "
    "included: not a test",
}


def split_role(split: str, same_manifest: bool) -> dict[str, Any]:
    """What ``split`` is to the run: ``role`` in words and ``is_test`` (may it be quoted as one)."""
    if not same_manifest:
        return {
            "role": f"split {split!r} of a manifest the run was not trained on",
            "is_test": True,
        }
    return {"role": SPLIT_ROLES.get(split, split), "is_test": split == "test"}


def select_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The ``ok`` rows of one split (``"all"``: every ``ok`` row, e.g. an external test set).

    Raises:
        EvaluateError: the manifest has no split column or the split is empty.
    """
    ok = df[df["status"] == STATUS_OK]
    if split == "all":
        rows = ok
    elif "split" not in df.columns:
        raise EvaluateError(
            f"the manifest has no 'split' column, so split {split!r} does not exist; run "
            "`cxrad split WORK` first, or pass `--split all` to evaluate every usable image "
            "(e.g. an external test set)"
        )
    else:
        rows = ok[ok["split"] == split]
    if rows.empty:
        have = sorted(ok["split"].dropna().unique()) if "split" in ok.columns else []
        raise EvaluateError(
            f"no usable ('ok') images in split {split!r}; splits present: {have or 'none'}; "
            f"choose one of {[*SPLITS, 'all']}"
        )
    return rows.reset_index(drop=True)


def open_dataset(work: str | Path, rows: pd.DataFrame, config: RunConfig) -> Any:
    """A :class:`cxrad.data.CachedDataset` over ``rows`` from the cache the run was trained on.

    Raises:
        EvaluateError: no cache for the run's preprocessing; says which command builds it.
    """
    from cxrad.data import CachedDataset
    from cxrad.preprocess import open_cache

    pre = config.preprocess.cache_config()
    try:
        cache = open_cache(work, pre)
    except (CacheError, FileNotFoundError) as e:
        raise EvaluateError(
            f"{work} has no preprocessed cache for size {pre.size}, mode {pre.mode} (what this "
            f"model expects); run `{pre.command(work)}` first ({e})"
        ) from e
    return CachedDataset(rows, cache, list(config.classes))


PROBE_MAX = 1000
"""The source probe uses features of at most this many images (a seeded random subset)."""


@torch.inference_mode()
def infer(
    model: Classifier,
    dataset: Any,
    batch_size: int = 64,
    features: bool = False,
    rows: np.ndarray | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Logits ``(N, C)``, or features ``(N, F)`` if ``features``, for ``rows`` of the dataset (all by default)."""
    device = next(model.parameters()).device
    idx = np.arange(len(dataset)) if rows is None else np.asarray(rows)
    n = len(idx)
    out = []
    fn = model.forward_features if features else model
    loader = DataLoader(dataset, batch_size=batch_size, sampler=idx.tolist(), num_workers=0)
    done = 0
    for x, _ in loader:
        out.append(fn(x.to(device)).float().cpu().numpy())
        done += len(x)
        if progress is not None:
            progress(done, n)
    if out:
        return np.concatenate(out)
    return np.zeros((0, len(dataset.classes)), dtype=np.float32)


def probe_rows(n: int, seed: int, limit: int = PROBE_MAX) -> np.ndarray:
    """Which rows feed the source probe: all, or a sorted seeded subset of ``limit``."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _scorer(model: Classifier, work: str | Path, config: RunConfig, batch_size: int) -> Any:
    """``rows -> (rows in the cache, the run's decisions)`` for the site-gap section."""
    step = DecisionStep(config)

    def score(rows: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        ds = open_dataset(work, rows, config)
        return ds.df, step(infer(model, ds, batch_size))

    return score


def _temperature(
    model: Classifier,
    run: str | Path,
    run_dir: Path,
    work: str | Path,
    df: pd.DataFrame,
    config: RunConfig,
    logits: np.ndarray,
    y: np.ndarray,
    batch_size: int,
) -> tuple[RunConfig, dict[str, Any]]:
    """Refit temperatures (per class) and operating points on val, save them, report ECE/Brier.

    Operating points are cut-offs on calibrated probabilities, so a new temperature needs them
    refitted too (with the run's recorded rule), or the run's decisions would silently move.
    """
    if str(run) == "default":
        raise EvaluateError(
            "--fit-temperature would modify the shipped default model; copy "
            f"{run_dir} to a folder of your own and evaluate that instead"
        )
    previous = config.temperature
    select_rows(df, "val")  # says what to run when there is no val split
    val_ds = open_dataset(work, fit_rows(df, config, "val"), config)  # never a held-out source
    val_logits = infer(model, val_ds, batch_size)
    rule = str(config.extra.get("operating_point_rule") or DEFAULT_RULE)
    sources = val_ds.df["source"].to_numpy()
    fitted = recalibrate(config, val_logits, val_ds.labels, rule, groups=sources)
    classes = list(config.classes)
    before = calibration_table(y, DecisionStep(config).probabilities(logits), classes)
    after = calibration_table(y, DecisionStep(fitted).probabilities(logits), classes)
    fitted = fitted.evolve(extra={**fitted.extra, "operating_point_rule": rule})
    fitted.save(run_dir)
    return fitted, {
        "fitted": list(fitted.temperatures()),
        "previous": None if previous is None else list(previous),
        "operating_points_refitted": rule,
        "n_val": len(val_ds),
        "mean_ece_before": before["mean_ece"],
        "mean_ece_after": after["mean_ece"],
        "mean_brier_before": before["mean_brier"],
        "mean_brier_after": after["mean_brier"],
        "saved_to": str(run_dir / CONFIG),
    }


def evaluate_run(
    run: str | Path,
    work: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    progress: Progress | None = None,
    fit_temperature: bool = False,
    min_count: int = MIN_COUNT,
    command: str | None = None,
    where: bool = False,
    held_out_split: str = "all",
) -> dict[str, Any]:
    """Evaluate a run on one split of a work folder and write the report.

    Args:
        run: run folder, or ``"default"`` for the shipped model.
        work: work folder with ``manifest.parquet`` and the preprocessed cache.
        split: ``"test"``, ``"val"``, ``"train"`` or ``"all"`` (every ``ok`` row).
        out: output folder; default ``RUN/eval``.
        n_boot: bootstrap resamples for the 95% CIs.
        seed: seeds the bootstrap and the source probe.
        batch_size: images per forward pass.
        progress: ``progress(done, total)`` while the model runs.
        fit_temperature: refit per-class temperatures and the operating points on the val
            split and save them in ``config.json``.
        min_count: fewest positives / negatives for a class to be scored.
        command: the command line to record in the header (default: an equivalent one).
        where: add the localisation (Grad-CAM vs boxes and lungs) and shortcut-counterfactual
            sections (:func:`cxrad.evaluate.where.where_sections`; runs the lung segmenter and
            Grad-CAM on every film).
        held_out_split: for a run trained with ``--hold-out``: which of the held-out sources'
            films the site-gap section scores (``"all"``, none was trained on, or a split).

    Returns:
        The metrics (as written to ``metrics.json``) plus ``"paths"`` of the written files.

    Example:
        >>> m = evaluate_run("runs/seed", "work", n_boot=1000)
        >>> m["classification"]["macro"]["auroc"]
    """
    run_dir = resolve_run(run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config = load_run(run_dir, device=device)
    classes = list(config.classes)
    df = read_manifest(work)
    rows = select_rows(df, split)
    dataset = open_dataset(work, rows, config)
    if len(dataset) == 0:
        raise EvaluateError(f"none of the {len(rows)} images of split {split!r} are in the cache")
    rows = dataset.df
    n_sources = rows["source"].nunique(dropna=False)
    logger.info("evaluating %s on %d %s images of %s", run_dir, len(rows), split, work)
    logits = infer(model, dataset, batch_size, progress=progress)
    feats, feat_rows = None, None
    if n_sources > 1:
        feat_rows = probe_rows(len(rows), seed)
        feats = infer(model, dataset, batch_size, features=True, rows=feat_rows)
    temperature = None
    if fit_temperature:
        config, temperature = _temperature(
            model, run, run_dir, work, df, config, logits, dataset.labels, batch_size
        )
    decided = DecisionStep(config)(logits)
    probs = decided.probabilities
    y_train = None
    if "split" in df.columns:
        tr = fit_rows(df, config, "train")  # the films the run trained on
        y_train = tr[classes].to_numpy(dtype=np.float64) if len(tr) else None
    metrics = evaluate_predictions(
        rows,
        probs,
        classes,
        thresholds=dict(zip(classes, decided.thresholds.tolist(), strict=True)),
        y_train=y_train,
        features=feats,
        feature_rows=feat_rows,
        n_boot=n_boot,
        seed=seed,
        min_count=min_count,
    )
    if temperature is not None:
        metrics["calibration"]["temperature"] = temperature
    clusters = cluster_ids(rows)
    metrics["decisions"] = decision_section(
        config,
        dataset.labels.astype(np.float64),
        decided,
        rows["source"].astype("string").fillna("<unknown>").to_numpy(dtype=object),
        clusters,
        resample_counts(int(clusters.max()) + 1 if len(clusters) else 0, n_boot, seed + 2),
    )
    if where:
        from cxrad.evaluate.where import where_sections
        from cxrad.segment import Segmenter

        images = np.asarray(dataset.images[dataset.rows])
        metrics.update(
            where_sections(model, images, rows, config, Segmenter(), probs, n_boot, seed,
                           batch_size, min_count, progress)
        )  # fmt: skip
    metrics["subgroups"] = subgroup_section(
        rows, decided, n_boot=n_boot, seed=seed, min_count=min_count
    )
    metrics["sites"] = site_section(
        df, config, _scorer(model, work, config, batch_size), split=split,
        held_out_split=held_out_split, n_boot=n_boot, seed=seed, min_count=min_count,
    )  # fmt: skip
    data_hash = manifest_hash(df)
    equivalent = shlex.join(
        ["cxrad", "evaluate", str(run), "--data", str(work), "--split", split]
        + (["--out", str(out)] if out else [])
        + ["--n-boot", str(n_boot), "--seed", str(seed)]
        + (["--fit-temperature"] if fit_temperature else [])
        + (["--where"] if where else [])
    )
    metrics["header"] = {
        "model": {
            "name": config.name,
            "task": config.task,
            "run": str(run),
            "run_path": str(run_dir.resolve()),
            "classes": classes,
            "activation": config.activation,
            "preprocess": asdict(config.preprocess),
            "temperature": None if config.temperature is None else list(config.temperature),
            "decision": {"policy": config.decision.policy, "score": config.decision.score},
            "git_commit": config.git_commit,
            "trained": config.created,
            "trained_on": config.extra.get("environment"),
        },
        "data": {
            "work": str(Path(work).resolve()),
            "split": split,
            "n_images": len(rows),
            "n_not_in_cache": int(dataset.dropped),
            "manifest_hash": data_hash,
            "run_manifest_hash": config.manifest_hash,
            "same_manifest_as_training": config.manifest_hash == data_hash,
            **split_role(split, config.manifest_hash == data_hash),
            "sources": {str(k): int(v) for k, v in rows["source"].value_counts().items()},
        },
        "command": command or equivalent,
        "equivalent_command": equivalent,
        "cxrad_version": cxrad.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "environment": environment(),
    }
    out_dir = Path(out) if out else run_dir / "eval"
    films = film_table(rows, decided)
    metrics["paths"] = write_outputs(metrics, rows, probs, out_dir, films)
    return metrics
