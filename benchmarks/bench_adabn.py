"""Stage 8b benchmark: does re-estimating BatchNorm statistics on a new site's films (AdaBN) shrink the site gap?

For each finished leave-one-source-out run of ``bench_sites.py``, the held-out source's films
(as ``bench_sites`` scores them) are split in two by patient (seeded): the **adapt** half gives
its images, never its labels, to :func:`restat_batchnorm` (AdaBN: Li et al., "Revisiting
Batch Normalization for Practical Domain Adaptation", 2016; the pass is PyTorch's
:func:`torch.optim.swa_utils.update_bn`); the **eval** half is scored by the run as trained
and by the adapted copy, at the run's own temperatures and val operating points. ``--n-adapt`` says how many adapt films are used (a site has 100-500).

Per task (each class and triage where the eval half has positives and negatives): held-out
AUROC before and after, and the paired difference (same patient resamples), with 95% CIs; and
specificity on the eval half's normal films at the run's operating points.

Usage:
    PYTHONPATH=src python benchmarks/bench_adabn.py --work work/full \\
        --runs work/bench_sites/strong --n-adapt 64,256,all --out work/adabn.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

N_BOOT = 500
"""Patient-bootstrap resamples behind each 95% CI."""

MIN_FILMS = 32
"""Fewest films whose statistics replace the training ones (one batch's worth)."""


def has_batchnorm(model: torch.nn.Module) -> bool:
    """Whether ``model`` has BatchNorm statistics to re-estimate."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def restat_batchnorm(
    model: torch.nn.Module,
    dataset: Any,
    rows: np.ndarray | None = None,
    batch_size: int = 32,
) -> torch.nn.Module:
    """A copy of ``model`` in eval mode whose BatchNorm statistics are those of ``rows`` of ``dataset``.

    Every BatchNorm layer's running mean and variance are reset and re-estimated as the average
    over full batches of ``rows`` (all rows by default; a last, smaller batch is dropped so that
    it does not weigh as much as a full one); weights are untouched. ``dataset`` yields
    ``(image, label)``; the labels are never read.

    Raises:
        ValueError: the model has no BatchNorm layer, or fewer than :data:`MIN_FILMS` films.
    """
    if not has_batchnorm(model):
        raise ValueError("the model has no BatchNorm layer, so there are no statistics to adapt")
    idx = np.arange(len(dataset)) if rows is None else np.asarray(rows)
    if len(idx) < MIN_FILMS:
        raise ValueError(
            f"{len(idx)} films are too few to re-estimate BatchNorm statistics; "
            f"give at least {MIN_FILMS}"
        )
    out = copy.deepcopy(model)
    loader = DataLoader(
        dataset,
        batch_size=min(batch_size, len(idx)),
        sampler=idx.tolist(),
        num_workers=0,
        drop_last=True,
    )
    device = next(out.parameters()).device
    update_bn(loader, out, device=device)
    return out.eval()


def halves(clusters: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(adapt, eval)`` row indices: every cluster (patient or duplicate group) in one half."""
    ids = np.unique(clusters)
    coin = np.random.default_rng(seed).random(len(ids)) < 0.5
    adapt = np.isin(clusters, ids[coin])
    return np.flatnonzero(adapt), np.flatnonzero(~adapt)


def scored(model: Any, cfg: Any, ds: Any, rows: np.ndarray) -> Any:
    """The run's decisions on ``rows`` of ``ds``."""
    from cxrad.evaluate.run import infer
    from cxrad.models import DecisionStep

    return DecisionStep(cfg)(infer(model, ds, 128, rows=rows))


def compare(df: pd.DataFrame, before: Any, after: Any, seed: int) -> dict[str, Any]:
    """Per task AUROC before / after / paired difference, and specificity on normals, with CIs."""
    from cxrad.evaluate.bootstrap import cluster_ids
    from cxrad.evaluate.rates import auroc_ci, difference, public
    from cxrad.evaluate.sites import normal_specificity, task_columns

    cl = cluster_ids(df)
    a, b = task_columns(df, before), task_columns(df, after)
    tasks = {}
    for name, (y, s0) in a.items():
        r0 = auroc_ci(y, s0, cl, N_BOOT, seed)
        if r0["status"] != "ok":
            continue
        r1 = auroc_ci(y, b[name][1], cl, N_BOOT, seed)  # same seed and clusters: paired
        tasks[name] = {"before": public(r0), "after": public(r1), "change": difference(r1, r0)}
    spec = {
        k: normal_specificity(df, d, N_BOOT, seed).get("triage")
        for k, d in (("before", before), ("after", after))
    }
    return {"tasks": tasks, "triage_specificity_on_normals": spec}


def one_run(run: Path, work: Path, manifest: pd.DataFrame, sizes: list[str], seed: int) -> dict:
    """AdaBN on one LOSO run's held-out source, at each adapt size."""
    from cxrad.evaluate.bootstrap import cluster_ids
    from cxrad.evaluate.run import open_dataset
    from cxrad.evaluate.sites import held_out_sources, site_rows
    from cxrad.models import load_run

    model, cfg = load_run(run)
    held = held_out_sources(cfg)
    _, out = site_rows(manifest, held, "test", "test" if held == ["kaggle-pediatric"] else "all")
    ds = open_dataset(work, out, cfg)
    adapt, evl = halves(cluster_ids(ds.df), seed)
    df = ds.df.iloc[evl].reset_index(drop=True)
    before = scored(model, cfg, ds, evl)
    res: dict[str, Any] = {"held_out": held, "n_adapt_pool": len(adapt), "n_eval": len(evl)}
    order = np.random.default_rng(seed + 1).permutation(adapt)
    for size in sizes:
        n = len(order) if size == "all" else min(int(size), len(order))
        adapted = restat_batchnorm(model, ds, order[:n])
        res[f"n_adapt={n}"] = compare(df, before, scored(adapted, cfg, ds, evl), seed)
    return res


def fmt(r: dict[str, Any], key: str) -> str:
    v, ci = r.get(key), r.get("ci")
    if v is None:
        return "n/a"
    return (
        f"{v:+.3f}"
        if key == "value"
        else f"{v:.3f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")
    )


def table(results: dict[str, Any]) -> str:
    """Markdown: per run, task and adapt size, AUROC before → after and the paired change."""
    lines = [
        "| held out | task | adapt films | AUROC before | AUROC after | change [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for res in results.values():
        held = "+".join(res["held_out"])
        for key in (k for k in res if k.startswith("n_adapt=")):
            part = res[key]
            for task, t in part["tasks"].items():
                ch = t["change"]
                ci = f" [{ch['ci'][0]:+.2f}, {ch['ci'][1]:+.2f}]" if ch["ci"] else ""
                lines.append(
                    f"| {held} | {task} | {key[8:]} | {fmt(t['before'], 'auroc')} | "
                    f"{fmt(t['after'], 'auroc')} | {fmt(ch, 'value')}{ci} |"
                )
            s = part["triage_specificity_on_normals"]
            if s["before"] is not None:
                lines.append(
                    f"| {held} | specificity on normals (triage) | {key[8:]} | "
                    f"{fmt(s['before'], 'rate')} | {fmt(s['after'], 'rate')} | |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--runs", type=Path, required=True, help="a bench_sites lever folder")
    ap.add_argument(
        "--n-adapt", default="64,256,all", help="adapt-half films used, comma-separated"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = ap.parse_args()
    from cxrad.manifest import read_manifest

    manifest = read_manifest(args.work)
    runs = sorted(p.parent for p in args.runs.glob("*/model.safetensors"))
    sizes = args.n_adapt.split(",")
    results = {}
    for run in runs:
        results[run.name] = one_run(run, args.work, manifest, sizes, args.seed)
        print(f"{run.name}: done", flush=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
