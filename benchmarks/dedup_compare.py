"""Split benchmark: the faiss near-duplicate search against the exhaustive one it replaced.

Runs both on one ``WORK/manifest.parquet`` (ingested with ``phash256``) and reports the share
of the reference's pairs that the new search puts in one duplicate group, the pairs only the
new search links, the time of each, and a CSV that lists every duplicate group side by side.

Example:
    PYTHONPATH=src .venv/bin/python benchmarks/dedup_compare.py work/full --csv out.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_reference import reference_pairs

from cxrad.manifest import read_manifest
from cxrad.split import assign_dup_groups
from cxrad.split.graph import components


def compare(work: str | Path, csv: str | Path | None = None) -> dict[str, float]:
    """Recall of the reference pairs and counts; writes the side-by-side group table to ``csv``."""
    df = read_manifest(work).reset_index(drop=True)
    t = time.process_time()
    ref = reference_pairs(df)
    t_ref = time.process_time() - t
    t = time.process_time()
    new = assign_dup_groups(df, workers=1)
    t_new = time.process_time() - t
    g_new = new["dup_group"].to_numpy(dtype=np.int64)
    n = len(df)
    sha_i, sha_j = _sha_edges(df)
    g_ref = components(n, np.r_[ref[:, 0], sha_i], np.r_[ref[:, 1], sha_j], df["image_id"])
    found = g_new[ref[:, 0]] == g_new[ref[:, 1]] if len(ref) else np.zeros(0, bool)
    stats = {
        "rows": n,
        "reference_pairs": len(ref),
        "reference_pairs_found": int(found.sum()),
        "recall": float(found.mean()) if len(ref) else 1.0,
        "reference_groups": int((np.bincount(g_ref) > 1).sum()),
        "new_groups": int((np.bincount(g_new) > 1).sum()),
        "new_near_pairs": int(new.attrs["dedup"]["near_pairs"]),
        "reference_cpu_s": round(t_ref, 2),
        "new_cpu_s": round(t_new, 2),
    }
    if csv is not None:
        side_by_side(df, g_ref, g_new).to_csv(csv, index=False)
    return stats


def _sha_edges(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from cxrad.split.graph import same_value_edges

    return same_value_edges(df["sha1"].where(df["status"] == "ok"))


def side_by_side(df: pd.DataFrame, g_ref: np.ndarray, g_new: np.ndarray) -> pd.DataFrame:
    """One row per image that is in a group of either search: both groups' members, listed."""
    tab = pd.DataFrame({"image_id": df["image_id"], "ref": g_ref, "new": g_new})
    tab = tab[
        (tab.groupby("ref")["ref"].transform("size") > 1)
        | (tab.groupby("new")["new"].transform("size") > 1)
    ]
    members_ref = tab.groupby("ref")["image_id"].agg(lambda s: ";".join(sorted(s)))
    members_new = tab.groupby("new")["image_id"].agg(lambda s: ";".join(sorted(s)))
    out = pd.DataFrame(
        {
            "image_id": tab["image_id"],
            "reference_group": tab["ref"].map(members_ref),
            "faiss_group": tab["new"].map(members_new),
        }
    )
    out["same"] = out["reference_group"] == out["faiss_group"]
    return out.drop_duplicates(["reference_group", "faiss_group"]).sort_values("image_id")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work")
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    print(json.dumps(compare(a.work, a.csv), indent=2))


if __name__ == "__main__":
    main()
