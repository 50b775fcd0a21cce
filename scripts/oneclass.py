"""One-class anomaly detection benchmarks: the ZhangLab protocol and NIH No Finding.

Both train ``cxrad train --task one-class`` (CutPaste + Gaussian density) on normal films only;
checkpoint and threshold are chosen on normal validation films with no abnormal label read.

- ``pediatric``: train on ``kaggle-pediatric`` ``train/NORMAL`` (a patient-grouped part of it is
  the normal val split), test on the official 624 (234 normal, 390 pneumonia).
- ``nih``: train on NIH ``No Finding`` films of the train split, test on held-out NIH patients
  (the test split of ``cxrad split``): any finding vs none.

AUROC (anomaly score vs "any finding") with 95% patient-bootstrap CIs, plus sensitivity and
specificity at the label-free threshold, go to ``OUT/results.jsonl``.

``--density auto --proxy blob`` lets the normal-val blob proxy choose between the pooled Gaussian
and the PaDiM patch density (layers, reduction, checkpoint). ``--compare pooled`` also scores the
pooled Gaussian refitted on the same trained encoder (its own best checkpoint by the same proxy),
written as a second row with ``"selected": false``: a measurement, not a choice.

Usage:
    python scripts/oneclass.py --data ../shared/data --out /tmp/oneclass --which pediatric,nih
    python scripts/oneclass.py --data ../shared/data --out OUT --work-pediatric WORK --epochs 15
    python scripts/oneclass.py --data ../shared/data --out OUT --density auto --proxy blob \
        --compare pooled --size 128 --epochs 12 --widths 16,32,64,128 --depths 1,1,1,1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

SOURCES = {"pediatric": "kaggle-pediatric-pneumonia", "nih": "nih-chestxray14"}


def prepare(data: Path, which: str, work: Path, size: int) -> Path:
    """Ingest, split (official split kept for pediatric) and preprocess, unless already done."""
    from cxrad.ingest import ingest
    from cxrad.manifest import write_manifest
    from cxrad.preprocess import PreprocessConfig, preprocess_work
    from cxrad.split import split_work

    if not (work / "split_summary.json").is_file():
        df, _ = ingest([data / SOURCES[which]], workers=1)
        write_manifest(df, work)
        split_work(work, keep_official=which == "pediatric", workers=1)
    preprocess_work(work, PreprocessConfig(size=size), workers=1)
    return work


def score_split(run: Path, work: Path, split: str) -> tuple[np.ndarray, np.ndarray, object]:
    """Anomaly distances, labels (1 = any finding) and rows of the annotated films of ``split``."""
    import torch

    from cxrad.labels import NORMAL
    from cxrad.manifest import STATUS_OK, read_manifest
    from cxrad.models import load_run
    from cxrad.train.ood import cached_batches
    from cxrad.train.setup import open_work_cache

    model, cfg = load_run(run)
    df = read_manifest(work)
    rows = df[(df["status"] == STATUS_OK) & (df["split"] == split) & df[NORMAL].notna()]
    cache = open_work_cache(work, cfg.preprocess.size, cfg.preprocess.mode)
    rows = rows[np.asarray(cache.rows_for(rows)) >= 0]
    with torch.no_grad():
        d = np.concatenate(
            [model.net.distance(model._norm(x)).numpy() for x in cached_batches(rows, cache)]
        )
    return d, 1.0 - rows[NORMAL].to_numpy(dtype=np.float64), rows


def refit(run: Path, work: Path, name: str, out: Path) -> Path:
    """A copy of ``run`` scored by candidate ``name`` on its own best checkpoint (same proxy)."""
    import torch
    from safetensors.torch import load_file

    from cxrad.models import read_config, save_run
    from cxrad.train.oneclass import _load, finish, normal_rows
    from cxrad.train.setup import open_work_cache

    cfg = read_config(run).to_dict()
    sel, tr = cfg["selection"], cfg["train"]
    best = sel["candidates"][name]["best_epoch"]
    if name == "pooled":
        cand: dict = {"density": "pooled"}
    else:
        _, layers, reduce = name.split(":")
        cand = {"density": "patch", "patch_layers": [int(v) for v in layers.split("+")],
                "patch_reduce": reduce}  # fmt: skip
    from cxrad.manifest import read_manifest

    df = read_manifest(work)
    cache = open_work_cache(work, tr["size"], tr["mode"])
    x_train, x_val = (_load(normal_rows(df, s), cache) for s in ("train", "val"))
    torch.set_num_threads(tr.get("threads") or 1)
    state = {f"net.{k}" if not k.startswith("net.") else k: v
             for k, v in load_file(str(run / "checkpoints" / f"epoch={best:02d}.safetensors")).items()}  # fmt: skip
    model, kwargs, fit = finish(
        state, cand, x_train, x_val, tr["quantile"], tr["widths"], tr["depths"], tr["size"]
    )
    cfg.pop("input", None)
    cfg["model"] = {"name": cfg["model"]["name"], "kwargs": kwargs}
    cfg["density"] = fit
    cfg["selection"] = {**sel, "candidate": name, "best_epoch": best,
                        "proxy_auroc": sel["candidates"][name][tr["proxy"]],
                        "refitted_from": str(run), "selected": False}  # fmt: skip
    save_run(out, model.eval(), cfg)
    return out


def test_row(which: str, run: Path, work: Path, n_boot: int) -> dict:
    """The test row of ``run``: AUROC [CI], sens/spec at its label-free threshold."""
    from cxrad.models import read_config

    cfg = read_config(run).to_dict()
    d, y, rows = score_split(run, work, "test")
    flagged = d > cfg["density"]["threshold_distance"]
    return {
        "protocol": which,
        "test": {"n": len(y), "abnormal": int(y.sum()), "normal": int((y == 0).sum())},
        **auroc_ci(d, y, rows, n_boot),
        "sensitivity": float(flagged[y == 1].mean()),
        "specificity": float((~flagged[y == 0]).mean()),
        "selection": cfg["selection"],
        "density": cfg["density"],
        "n_train_normal": cfg["data"]["n_train"],
        "n_val_normal": cfg["data"]["n_val"],
        "run": str(run),
    }


def auroc_ci(scores: np.ndarray, y: np.ndarray, rows: object, n_boot: int) -> dict:
    """AUROC with a 95% patient-bootstrap CI (:mod:`cxrad.evaluate.bootstrap`)."""
    from sklearn.metrics import roc_auc_score

    from cxrad.evaluate.bootstrap import (
        bootstrap_metric,
        cluster_ids,
        percentile_ci,
        resample_counts,
    )

    clusters = cluster_ids(rows)
    counts = resample_counts(int(clusters.max()) + 1, n_boot, seed=0)
    boot = bootstrap_metric("auroc", scores, y, clusters, counts)
    return {"auroc": float(roc_auc_score(y, scores)), "auroc_ci": percentile_ci(boot)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="the shared data folder")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--which", default="pediatric,nih")
    ap.add_argument("--work-pediatric", type=Path, default=None)
    ap.add_argument("--work-nih", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--widths", default="32,64,128,256", help="backbone stage widths")
    ap.add_argument("--depths", default="2,2,2,2", help="backbone blocks per stage")
    ap.add_argument("--density", default="pooled", help="pooled, patch or auto")
    ap.add_argument("--proxy", default="cutpaste", help="cutpaste or blob (normal val only)")
    ap.add_argument("--compare", default="", help="also score this candidate, e.g. pooled")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from cxrad.train.oneclass import train_one_class

    args.out.mkdir(parents=True, exist_ok=True)
    for which in [w for w in args.which.split(",") if w]:
        work = getattr(args, f"work_{which}") or args.out / f"work-{which}"
        prepare(args.data, which, work, args.size)
        t0 = time.perf_counter()
        run = train_one_class(
            work, args.out / f"oneclass-{which}", max_epochs=args.epochs, size=args.size,
            batch_size=args.batch_size, lr=args.lr, threads=args.threads,
            widths=tuple(int(v) for v in args.widths.split(",")),
            depths=tuple(int(v) for v in args.depths.split(",")),
            density=args.density, proxy=args.proxy,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        runs = [(run, True)]
        if args.compare and args.compare != read_config_selection(run):
            runs.append(
                (
                    refit(run, work, args.compare, run.with_name(run.name + "-" + args.compare)),
                    False,
                )
            )
        for r, selected in runs:
            row = {**test_row(which, r, work, args.n_boot), "selected": selected,
                   "epochs": args.epochs, "size": args.size, "train_seconds": round(seconds, 1)}  # fmt: skip
            with (args.out / "results.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            logging.info("%s: %s", which, row)


def read_config_selection(run: Path) -> str:
    """The candidate a run chose (``pooled`` for runs that had no choice)."""
    from cxrad.models import read_config

    return read_config(run).to_dict()["selection"].get("candidate", "pooled")


if __name__ == "__main__":
    main()
