"""Benchmark: patient-clustered bootstrap of per-class AUROC + AUPRC, vectorised vs a sklearn loop.

Synthetic data shaped like the real test split (images, 17 classes with some unannotated
columns, several images per patient). The baseline is the obvious implementation: one
``roc_auc_score`` + ``average_precision_score`` call with ``sample_weight`` per resample and
class, timed on a few resamples and scaled to ``--n-boot`` in the same process.

    .venv/bin/python benchmarks/bench_evaluate.py --n 5000 --n-boot 1000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrad.evaluate.bootstrap import resample_counts
from cxrad.evaluate.metrics import classification_metrics


def make_data(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.02, 0.4, c)).astype(float)
    y[rng.random((n, c)) < 0.3] = np.nan  # some sources do not annotate some classes
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, (n, c)) + 1.2 * np.nan_to_num(y))))
    clusters = np.sort(rng.integers(0, int(n * 0.6), n))  # ~1.7 images per patient
    clusters = np.unique(clusters, return_inverse=True)[1]
    return y, p, clusters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="images")
    ap.add_argument("--classes", type=int, default=17)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-boot", type=int, default=10, help="resamples timed for sklearn")
    args = ap.parse_args()
    y, p, clusters = make_data(args.n, args.classes, 0)
    names = [f"c{i}" for i in range(args.classes)]

    fast = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        m = classification_metrics(y, p, names, clusters, n_boot=args.n_boot, seed=0)
        fast.append(time.perf_counter() - t)

    counts = resample_counts(int(clusters.max()) + 1, args.baseline_boot, 0)
    slow = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for b in range(args.baseline_boot):
            w = counts[b][clusters]
            for j in range(args.classes):
                ok = ~np.isnan(y[:, j])
                roc_auc_score(y[ok, j], p[ok, j], sample_weight=w[ok])
                average_precision_score(y[ok, j], p[ok, j], sample_weight=w[ok])
        slow.append((time.perf_counter() - t) * args.n_boot / args.baseline_boot)

    f, s = statistics.median(fast), statistics.median(slow)
    print(
        f"images={args.n} classes={args.classes} clusters={clusters.max() + 1} n_boot={args.n_boot}"
    )
    print(f"vectorised (classification_metrics, incl. macro+micro CIs): median {f:.2f} s")
    print(f"sklearn loop with sample_weight (scaled from {args.baseline_boot}): median {s:.1f} s")
    print(f"speed-up: {s / f:.0f}x")
    print(f"macro AUROC {m['macro']['auroc']:.3f} CI {m['macro']['auroc_ci']}")


if __name__ == "__main__":
    main()
