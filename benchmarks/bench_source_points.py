"""Stage 8 benchmark: operating points held on pooled val negatives, or on each source's?

``spec=0.95`` keeps 95% of a class's *pooled* val negatives below its cut-off. When most of a
class's negatives come from one clean source, the cut-off sits where only that source is clean.
``spec=0.95@source`` holds the target on every val source's negatives (the strictest wins).

For each run given (the shipped ``default``, and the finished leave-one-source-out runs of
``bench_sites.py``), both rules are refitted on the run's own val films (for a LOSO run: the
other sources' val split), with the run's temperatures, and both are scored on:

- the test split of the sources the run trained on, per source (issue #11's numbers);
- the held-out source's films, for a LOSO run (a hospital the operating points never saw).

Per source: normal films with no finding listed, findings per normal film, normal films called
normal, abnormal films flagged, each with a 95% patient-bootstrap CI.

Usage:
    PYTHONPATH=src python benchmarks/bench_source_points.py --work work/full \\
        --runs default,work/bench_sites/strong/nih --out work/source_points.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RULES = ("spec=0.95", "spec=0.95@source")
N_BOOT = 500
"""Patient-bootstrap resamples behind each rate's 95% CI."""
KEYS = ("normal_no_finding", "findings_per_normal", "normal_called_normal", "abnormal_flagged")


def scored(model: Any, cfg: Any, work: Path, rows: pd.DataFrame) -> tuple[Any, np.ndarray]:
    """``(dataset, logits)`` of the cached films of ``rows``, prepared as ``cfg`` records."""
    from cxrad.evaluate.run import infer, open_dataset

    ds = open_dataset(work, rows, cfg)
    return ds, infer(model, ds, 128)


def per_source(cfg: Any, ds: Any, logits: np.ndarray) -> list[dict[str, Any]]:
    """Issue #11's per-source film numbers of ``cfg``'s decisions, with CIs."""
    from cxrad.evaluate.bootstrap import cluster_ids, resample_counts
    from cxrad.evaluate.decisions import per_source_films
    from cxrad.models import DecisionStep
    from cxrad.models.calibrate import triage_labels

    d = DecisionStep(cfg)(logits)
    clusters = np.unique(cluster_ids(ds.df), return_inverse=True)[1].ravel()
    w = resample_counts(int(clusters.max()) + 1, N_BOOT, 0)[:, clusters]
    y_abn = triage_labels(ds.labels, cfg.classes)
    sources = ds.df["source"].astype(str).to_numpy()
    rows = per_source_films(cfg.classes, ds.labels, d, y_abn, sources, w)
    return [{k: r[k] for k in ("source", "n_normal", "n_abnormal", *KEYS)} for r in rows]


def one_run(run: str, work: Path, df: pd.DataFrame) -> dict[str, Any]:
    """Both rules' per-source numbers on the in-distribution test split and the held-out films."""
    from cxrad.evaluate.sites import held_out_sources, site_rows
    from cxrad.models import load_run, recalibrate

    model, cfg = load_run(run)
    held = held_out_sources(cfg)
    held_split = "test" if held == ["kaggle-pediatric"] else "all"
    val, _ = site_rows(df, held, "val", held_split)
    ind, out = site_rows(df, held, "test", held_split)
    vds, vlogits = scored(model, cfg, work, val)
    groups = vds.df["source"].astype(str).to_numpy()
    parts = {"test (trained sources)": ind, **({"held out": out} if held else {})}
    result: dict[str, Any] = {"held_out": held, "n_val": len(vds)}
    for rule in RULES:
        fitted = recalibrate(cfg, vlogits, vds.labels, rule, fit_temperature=False, groups=groups)
        result[rule] = {
            "decision": f"{fitted.decision.score} at {fitted.decision.triage.threshold:.4g}"
        }
        for name, rows in parts.items():
            ds, logits = scored(model, fitted, work, rows)
            result[rule][name] = per_source(fitted, ds, logits)
    return result


def fmt(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return "n/a"
    lo, hi = r["ci"] or (None, None)
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
    return f"{r['value']:.2f}{ci}"


def table(results: dict[str, Any]) -> str:
    """A markdown table: per run, part and source, both rules side by side."""
    head = "| run | films | source | " + " | ".join(
        f"{k.replace('_', ' ')}: {rule}" for k in KEYS for rule in RULES
    )
    lines = [head + " |", "|" + "---|" * (3 + len(KEYS) * len(RULES))]
    for run, res in results.items():
        a, b = (res[rule] for rule in RULES)
        for part in (p for p in a if p != "decision"):
            for ra, rb in zip(a[part], b[part], strict=True):
                cells = [fmt(r[k]) for k in KEYS for r in (ra, rb)]
                n = f"{ra['source']} ({ra['n_normal']} / {ra['n_abnormal']})"
                lines.append(f"| {run} | {part} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--runs", required=True, help="comma-separated run folders (or default)")
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = ap.parse_args()
    from cxrad.manifest import read_manifest

    df = read_manifest(args.work)
    results = {}
    for run in args.runs.split(","):
        results[run] = one_run(run, args.work, df)
        print(f"{run}: done", flush=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
