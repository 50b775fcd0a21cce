"""One-class anomaly detection benchmarks: the ZhangLab protocol and NIH No Finding.

Both train ``cxrad train --task one-class`` (CutPaste + Gaussian density) on normal films only;
checkpoint and threshold are chosen on normal validation films with no abnormal label read.

- ``pediatric``: train on ``kaggle-pediatric`` ``train/NORMAL`` (a patient-grouped part of it is
  the normal val split), test on the official 624 (234 normal, 390 pneumonia).
- ``nih``: train on NIH ``No Finding`` films of the train split, test on held-out NIH patients
  (the test split of ``cxrad split``): any finding vs none.

AUROC (anomaly score vs "any finding") with 95% patient-bootstrap CIs, plus sensitivity and
specificity at the label-free threshold, go to ``OUT/results.jsonl``.

Usage:
    python scripts/oneclass.py --data ../shared/data --out /tmp/oneclass --which pediatric,nih
    python scripts/oneclass.py --data ../shared/data --out OUT --work-pediatric WORK --epochs 15
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from cxrad.models import read_config
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
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        cfg = read_config(run).to_dict()
        d, y, rows = score_split(run, work, "test")
        flagged = d > cfg["density"]["threshold_distance"]
        row = {
            "protocol": which,
            "test": {"n": len(y), "abnormal": int(y.sum()), "normal": int((y == 0).sum())},
            **auroc_ci(d, y, rows, args.n_boot),
            "sensitivity": float(flagged[y == 1].mean()),
            "specificity": float((~flagged[y == 0]).mean()),
            "selection": cfg["selection"],
            "n_train_normal": cfg["data"]["n_train"],
            "n_val_normal": cfg["data"]["n_val"],
            "epochs": args.epochs,
            "size": args.size,
            "train_seconds": round(seconds, 1),
            "run": str(run),
        }
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        logging.info("%s: %s", which, row)


if __name__ == "__main__":
    main()
