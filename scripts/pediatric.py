"""Train and evaluate models on the Kaggle pediatric official split, on whatever device is present.

This is the script behind the pediatric benchmark in BENCHMARKS.md (on a GPU and on this
machine's CPU). It calls the same library functions as the CLI commands::

    cxrad ingest DATA --out WORK
    cxrad split WORK --keep-official
    cxrad preprocess WORK --size S
    cxrad train WORK --model NAME --out RUNS/NAME-LOSS-seedN --epochs E --augment A --seed N ...
    cxrad ensemble RUNS/NAME-LOSS-seed* --data WORK --out RUNS/NAME-LOSS-ensemble   (--ensemble)
    cxrad evaluate RUN --data WORK --split test

Each training run resumes from its last checkpoint, so rerunning the same command after an
interruption continues where it stopped. It writes one JSON line per evaluated model to
``OUT/results.jsonl`` as soon as it is done, so a run cut short still reports what it finished.
The val split picks checkpoints and thresholds; the official test folder is only evaluated.

Usage:
    python scripts/pediatric.py --data DIR --out OUT --models densenet121,cxr-fast --epochs 30
    python scripts/pediatric.py --data DIR --out OUT --models cxr-fast --size 192 \
        --augment strong --seeds 0,1,2 --ensemble --epochs 20 --patience 0
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
        "--augment", default="default", help="augmentation preset (cxrad train --augment)"
    )
    ap.add_argument(
        "--seeds", default="0", help="comma-separated seeds: one run per model and seed"
    )
    ap.add_argument("--patience", type=int, default=8, help="early-stopping patience (0 = off)")
    ap.add_argument(
        "--ensemble", action="store_true", help="also evaluate each model's seeds as one ensemble"
    )
    ap.add_argument(
        "--train-workers",
        type=int,
        default=None,
        help="data-loader processes (default: min(8, --workers))",
    )
    ap.add_argument(
        "--export", default=None, help="copy results and each metrics.json here as they finish"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from cxrad.data import augment_preset
    from cxrad.ingest import ingest
    from cxrad.manifest import write_manifest
    from cxrad.preprocess import PreprocessConfig, preprocess_work
    from cxrad.split import split_work
    from cxrad.train import ensemble_runs, train

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

    seeds = [int(t) for t in args.seeds.split(",") if t.strip()]
    augment = augment_preset(args.augment)
    jobs = [(m, "bce") for m in args.models.split(",") if m]
    if args.softmax_seed_fcn:
        jobs.append(("seed-fcn", "softmax"))
    for name, loss in jobs:
        runs = []
        for seed in seeds:
            # One seed keeps the old run name, so earlier results directories stay comparable.
            run = (
                out
                / "runs"
                / (f"{name}-{loss}" if len(seeds) == 1 else f"{name}-{loss}-seed{seed}")
            )
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
                seed=seed,
                patience=args.patience,
                augment=augment,
                limit_train=args.limit_train,
                workers=args.train_workers
                if args.train_workers is not None
                else min(8, args.workers or 1),
                progress=False,
            )
            runs.append(run)
            report(run, name, loss, time.perf_counter() - t1, work, results, args, seed=seed)
        if args.ensemble and len(runs) > 1:
            t1 = time.perf_counter()
            ens = ensemble_runs(runs, work, out / "runs" / f"{name}-{loss}-ensemble")
            report(ens, f"{name} x{len(runs)}", loss, time.perf_counter() - t1, work, results, args)


def report(
    run: Path,
    name: str,
    loss: str,
    seconds: float,
    work: Path,
    results: Path,
    args: argparse.Namespace,
    seed: int | None = None,
) -> None:
    """Evaluate ``run`` on the official test folder and append its headline to results.jsonl."""
    from cxrad.evaluate import evaluate_run

    metrics = evaluate_run(run, work, split="test", n_boot=args.n_boot)
    row = {
        "model": name,
        "loss": loss,
        "seed": seed,
        "size": args.size,
        "augment": args.augment,
        "train_seconds": round(seconds, 1),
        "headline": headline(metrics),
        "metrics_path": str(run / "eval" / "metrics.json"),
    }
    with results.open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    logging.info("done %s: %s", run.name, row["headline"])
    if args.export:
        dest = Path(args.export)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(results, dest / "results.jsonl")
        shutil.copy(run / "eval" / "metrics.json", dest / f"{run.name}.metrics.json")
        shutil.copy(run / "config.json", dest / f"{run.name}.config.json")


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
