"""Stage 7, train: assemble trained runs into one ensemble run, with thresholds picked on val.

The ensemble run is an ordinary run directory (see :mod:`cxrad.models.ensemble`), so
``cxrad evaluate``, ``cxrad predict`` and ``cxrad export`` take it like any other. Its
thresholds are picked on the same val split the members were selected on, never on test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import cxrad
from cxrad.data import CachedDataset
from cxrad.errors import TrainError
from cxrad.manifest import STATUS_OK, manifest_hash, read_manifest
from cxrad.models import load_run, resolve_run, save_run
from cxrad.models.ensemble import ENSEMBLE, ensemble_of
from cxrad.train.fit import git_commit, predict_probs
from cxrad.train.metrics import (
    THRESHOLD_METHOD,
    macro_auroc,
    per_class_auroc,
    youden_thresholds,
)
from cxrad.train.setup import open_work_cache

logger = logging.getLogger(__name__)

MUST_AGREE = ("classes", "activation", "preprocess", "manifest_hash")
"""Config keys every member must share: same outputs, same input, same training data."""


def ensemble_runs(
    runs: Sequence[str | Path], work: str | Path, out: str | Path, batch_size: int = 64
) -> Path:
    """Average the probabilities of ``runs`` in one model; pick its thresholds on WORK's val split.

    Args:
        runs: two or more trained run directories with the same classes, activation,
            preprocessing and training manifest.
        work: the work folder the members were trained on (its manifest hash must match theirs,
            so val is the split they were selected on, not data they trained on).
        out: the ensemble run directory to write.
        batch_size: images per inference batch on val.

    Raises:
        TrainError: fewer than two runs, members that disagree, or a different work folder.

    Example:
        >>> ensemble_runs(["runs/s0", "runs/s1", "runs/s2"], "work", "runs/ens")
    """
    t0 = time.perf_counter()
    if len(runs) < 2:
        raise TrainError(f"an ensemble needs at least two runs, got {len(runs)}")
    paths = [resolve_run(r) for r in runs]
    if len({p.resolve() for p in paths}) < len(paths):
        raise TrainError("the same run is listed twice; an ensemble member counts once")
    loaded = [load_run(p) for p in paths]
    cfgs = [cfg for _, cfg in loaded]
    for cfg, path in zip(cfgs, paths, strict=True):
        if cfg["model"]["name"] == ENSEMBLE:
            raise TrainError(f"{path} is already an ensemble; list its members instead")
    first = cfgs[0]
    for key in MUST_AGREE:
        for cfg, path in zip(cfgs[1:], paths[1:], strict=True):
            if _setting(cfg, key) != _setting(first, key):
                raise TrainError(
                    f"{path} and {paths[0]} differ in {key!r} ({_setting(cfg, key)!r} vs "
                    f"{_setting(first, key)!r}); ensemble runs trained on the same data and classes"
                )
    df = read_manifest(work)
    work_hash = manifest_hash(df)
    if first.get("manifest_hash") != work_hash:
        raise TrainError(
            f"the members were trained on manifest {first.get('manifest_hash')}, but {work} holds "
            f"{work_hash}; pick thresholds on the work folder they were trained on"
        )
    classes: list[str] = list(first["classes"])
    activation = str(first.get("activation", "sigmoid"))
    members = [{"name": c["model"]["name"], "kwargs": c["model"].get("kwargs", {})} for c in cfgs]
    model = ensemble_of([m for m, _ in loaded], activation).eval()

    pre = first.get("preprocess") or {}
    size, mode = int(pre.get("size") or first["input"]["input_size"]), str(pre.get("mode"))
    val = df[(df["status"] == STATUS_OK) & (df["split"] == "val")].reset_index(drop=True)
    ds = CachedDataset(val, open_work_cache(work, size, mode), classes, uint8=True)
    if len(ds) == 0:
        raise TrainError(f"no cached val images in {work}; run `cxrad preprocess {work}` first")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    probs = predict_probs(model, loader, activation, gpu=False)
    per_class = per_class_auroc(probs, ds.labels, classes)
    config: dict[str, Any] = {
        "model": {"name": ENSEMBLE, "kwargs": {"members": members, "activation": activation}},
        "members": [
            {
                "run": str(p),
                "model": c["model"]["name"],
                "seed": (c.get("train") or {}).get("seed"),
                "val_macro_auroc": (c.get("val_metrics") or {}).get("macro_auroc"),
            }
            for p, c in zip(paths, cfgs, strict=True)
        ],
        "classes": classes,
        "preprocess": {"size": size, "mode": mode},
        "activation": activation,
        "thresholds": youden_thresholds(probs, ds.labels, classes),
        "threshold_method": THRESHOLD_METHOD,
        "manifest_hash": work_hash,
        "git_commit": git_commit(),
        "val_metrics": {"macro_auroc": macro_auroc(per_class), "auroc": per_class, "n": len(ds)},
        "data": {"n_val": len(ds)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cxrad_version": cxrad.__version__,
    }
    out = save_run(out, model, config)
    logger.info(
        "wrote %s: %d members, val macro AUROC %.4f (members: %s) in %.0fs",
        out,
        len(paths),
        config["val_metrics"]["macro_auroc"],
        ", ".join(str(m["val_macro_auroc"]) for m in config["members"]),
        time.perf_counter() - t0,
    )
    return out


def _setting(cfg: dict[str, Any], key: str) -> Any:
    # Runs written before "activation" was recorded were all sigmoid.
    return cfg.get(key, "sigmoid") if key == "activation" else cfg.get(key)


__all__ = ["ensemble_runs"]
