"""How far the pediatric official test's normal films lie from the train normals, against val's.

A diagnosis, not a method: a Ledoit-Wolf Gaussian on 4x4 pooled pixels of the ``kaggle-pediatric``
train NORMAL films, its Mahalanobis distance for the val and the official test films, and how
well that distance separates PNEUMONIA from NORMAL in each (AUROC, 95% patient-bootstrap CI).
If the test normals sit farther from the train normals than the val normals do, the official
test is shifted from its own train split, and every detector fitted on train normals (the
one-class runs, the operating points picked on val) loses on it for that reason alone. Nothing
here is chosen by these numbers; they only say why val and test disagree.

Usage (WORK is split with --keep-official and preprocessed at --size):
    PYTHONPATH=src python scripts/pediatric_shift.py --work work/full --size 128
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf

SOURCE = "kaggle-pediatric"


def pooled(work: Path, size: int, split: str) -> tuple[np.ndarray, np.ndarray, object]:
    """4x4 pooled pixels, labels (1 = pneumonia) and rows of the pediatric films of ``split``."""
    from cxrad.labels import NORMAL
    from cxrad.manifest import STATUS_OK, read_manifest
    from cxrad.train.ood import cached_batches
    from cxrad.train.setup import open_work_cache

    df = read_manifest(work)
    rows = df[(df["source"] == SOURCE) & (df["status"] == STATUS_OK) & (df["split"] == split)]
    rows = rows[rows[NORMAL].notna()]
    cache = open_work_cache(work, size, "letterbox")
    rows = rows[np.asarray(cache.rows_for(rows)) >= 0]
    x = torch.cat([F.adaptive_avg_pool2d(b, 4).flatten(1) for b in cached_batches(rows, cache)])
    return x.double().numpy(), 1.0 - rows[NORMAL].to_numpy(dtype=np.float64), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    from oneclass import auroc_ci

    x, y, _ = pooled(args.work, args.size, "train")
    lw = LedoitWolf().fit(x[y == 0])
    out = {"fit": {"split": "train", "normal_films": int((y == 0).sum())}}
    for split in ("val", "test"):
        x, y, rows = pooled(args.work, args.size, split)
        d = x - lw.location_
        dist = np.sqrt(np.einsum("ij,jk,ik->i", d, lw.precision_, d))
        out[split] = {
            "normal": int((y == 0).sum()),
            "pneumonia": int(y.sum()),
            "median_distance_normal": float(np.median(dist[y == 0])),
            "median_distance_pneumonia": float(np.median(dist[y == 1])),
            **auroc_ci(dist, y, rows, args.n_boot),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
