"""Train and evaluate models on the Kaggle pediatric official split, on whatever device is present.

This is the script behind the pediatric benchmark in BENCHMARKS.md and the GPU rows of the
training-throughput table. It calls the same library functions as the CLI commands::

    cxrad ingest DATA --out WORK
    cxrad split WORK --keep-official
    cxrad preprocess WORK --size 256
    cxrad train WORK --model NAME --out RUNS/NAME --epochs E ...
    cxrad evaluate RUNS/NAME --data WORK --split test

It writes one JSON line per finished model to ``OUT/results.jsonl`` as soon as it is done, so a
run cut short still reports what it finished.

Usage:
    python scripts/gpu_pediatric.py --data DIR --out OUT --models densenet121,cxr-fast --epochs 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder holding the pediatric chest_xray/ layout")
    ap.add_argument("--out", required=True, help="where results.jsonl and runs go")
    ap.add_argument("--work", default=None, help="work folder (default OUT/work)")
    ap.add_argument("--models", default="densenet121,cxr-fast,resnet18")
    ap.add_argument(
        "--softmax-seed-fcn", action="store_true", help="also train seed-fcn the original way"
    )
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument(
        "--export", default=None, help="copy results and each metrics.json here as they finish"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from cxrad.evaluate import evaluate_run
    from cxrad.ingest import ingest
    from cxrad.manifest import write_manifest
    from cxrad.preprocess import PreprocessConfig, preprocess_work
    from cxrad.split import split_work
    from cxrad.train import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or out / "work")
    results = out / "results.jsonl"

    t0 = time.perf_counter()
    df, _ = ingest([Path(args.data)], workers=args.workers)
    write_manifest(df, work)
    split_summary = split_work(work, keep_official=True)
    preprocess_work(work, PreprocessConfig(size=args.size), workers=args.workers)
    prep_s = time.perf_counter() - t0
    with results.open("a") as f:
        f.write(
            json.dumps({"stage": "prepare", "seconds": prep_s, "split": split_summary}, default=str)
            + "\n"
        )

    jobs = [(m, "bce") for m in args.models.split(",") if m]
    if args.softmax_seed_fcn:
        jobs.append(("seed-fcn", "softmax"))
    for name, loss in jobs:
        run = out / "runs" / f"{name}-{loss}"
        t1 = time.perf_counter()
        train(
            work,
            model=name,
            out=run,
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            loss=loss,
            size=args.size,
            limit_train=args.limit_train,
            workers=min(8, args.workers or 1),
            progress=False,
        )
        train_s = time.perf_counter() - t1
        metrics = evaluate_run(run, work, split="test", n_boot=args.n_boot)
        row = {
            "model": name,
            "loss": loss,
            "train_seconds": round(train_s, 1),
            "headline": headline(metrics),
            "metrics_path": str(run / "eval" / "metrics.json"),
        }
        with results.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        logging.info("done %s: %s", name, row["headline"])
        if args.export:
            dest = Path(args.export)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(results, dest / "results.jsonl")
            shutil.copy(run / "eval" / "metrics.json", dest / f"{name}-{loss}.metrics.json")
            shutil.copy(run / "config.json", dest / f"{name}-{loss}.config.json")


def headline(metrics: dict) -> dict:
    """The numbers the pediatric benchmark quotes: top-1 accuracy and per-class AUROC with CIs."""
    top1 = metrics.get("top1", {})
    per_class = metrics.get("classification", {}).get("per_class", [])
    return {
        "n": metrics.get("n"),
        "top1_accuracy": top1.get("accuracy"),
        "balanced_accuracy": top1.get("balanced_accuracy"),
        "majority_accuracy": (top1.get("majority") or {}).get("accuracy"),
        "confusion": top1.get("confusion"),
        "auroc": {c["class"]: [c.get("auroc"), c.get("auroc_ci")] for c in per_class},
        "at_val_threshold": {
            c["class"]: {k: c.get(k) for k in ("threshold", "sensitivity", "specificity")}
            for c in per_class
        },
    }


if __name__ == "__main__":
    main()
