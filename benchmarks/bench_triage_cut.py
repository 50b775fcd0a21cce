"""Stage 8 benchmark: does a triage cut at its own val Youden point survive an unseen source?

For each finished leave-one-source-out run of ``bench_sites.py`` (``OUT/<lever>/<setting>/``),
refit the triage decision on the run's own val films (the other sources' val split), once as
``cxrad`` does (``recalibrate``) and once with each triage score also cut at its val Youden point,
the best film-level J winning (the candidate that was tried and rejected). Then compare, on
the held-out source's films, the share of normal films triage calls normal and the share of
abnormal films it flags. Temperatures and per-class operating points are the run's own, so
only the triage cut differs.

Usage:
    PYTHONPATH=src python benchmarks/bench_triage_cut.py --work work/full \\
        --out work/bench_sites --levers strong
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sites import SETTINGS

N_BOOT = 500
"""Patient-bootstrap resamples behind each rate's 95% CI."""


def youden_decision(config: Any, probs: np.ndarray, labels: np.ndarray) -> Any:
    """``config``'s decision, or a triage score at its val Youden cut where that has a higher J."""
    from cxrad.models.calibrate import film_stats, fit_point, triage_labels
    from cxrad.models.decision import finding_mask, triage_score

    classes = list(config.classes)
    thr = np.array([config.operating_points[c].threshold for c in classes])
    y = triage_labels(labels, classes)
    over = (probs >= thr) & finding_mask(classes)

    def j(kind: str, t: float) -> float:
        abnormal = triage_score(probs, classes, kind, thr) >= t
        return film_stats(over & abnormal[:, None], abnormal, y)["j"]

    best = (j(config.decision.score, config.decision.triage.threshold), config.decision)
    for kind in ("not_normal", "max_finding"):
        point = fit_point(triage_score(probs, classes, kind, thr), y, "youden")
        cand = replace(config.decision, score=kind, triage=point, alternatives={})
        best = max(best, (j(kind, point.threshold), cand), key=lambda b: b[0])
    return config.evolve(decision=best[1])


def held_out_rates(model: Any, config: Any, work: Path, rows: Any) -> dict[str, Any]:
    """Share of held-out normal films called normal, and of abnormal films flagged (95% CIs)."""
    from cxrad.evaluate.bootstrap import cluster_ids
    from cxrad.evaluate.rates import rate_ci
    from cxrad.evaluate.run import _scorer
    from cxrad.models.calibrate import triage_labels

    rows, d = _scorer(model, work, config, 128)(rows)
    y = triage_labels(rows[list(config.classes)].to_numpy(dtype=np.float64), config.classes)
    clusters = cluster_ids(rows)
    normal, sick = y == 0, y == 1
    return {
        "decision": f"{config.decision.score} at {config.decision.triage.threshold:.4g}",
        "normal_called_normal": rate_ci(~d.abnormal[normal], clusters[normal], N_BOOT, 0),
        "abnormal_flagged": rate_ci(d.abnormal[sick], clusters[sick], N_BOOT, 1),
    }


def one_run(run: Path, work: Path, df: Any, held_split: str) -> dict[str, Any]:
    """As-run and Youden-cut held-out rates of one LOSO run."""
    from cxrad.evaluate.run import infer, open_dataset
    from cxrad.evaluate.sites import held_out_sources, site_rows
    from cxrad.models import DecisionStep, load_run, recalibrate

    model, cfg = load_run(run)
    val, out = site_rows(df, held_out_sources(cfg), "val", held_split)
    ds = open_dataset(work, val, cfg)
    logits = infer(model, ds, 128)
    rule = str(cfg.extra.get("operating_point_rule") or "spec=0.95")
    now = recalibrate(cfg, logits, ds.labels, rule, fit_temperature=False)
    probs = DecisionStep(now).probabilities(logits)
    youden = youden_decision(now, probs, ds.labels)
    return {
        "recalibrate": held_out_rates(model, now, work, out),
        "youden_cut": held_out_rates(model, youden, work, out),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="bench_sites.py's --out")
    ap.add_argument("--levers", default="strong")
    args = ap.parse_args()
    from cxrad.manifest import read_manifest

    df = read_manifest(args.work)
    results = {}
    for lever in args.levers.split(","):
        for setting, (_, held_split) in SETTINGS.items():
            run = args.out / lever / setting
            if (run / "config.json").is_file():
                results[f"{lever}/{setting}"] = r = one_run(run, args.work, df, held_split)
                print(f"{lever}/{setting}: {json.dumps(r)}", flush=True)
    (args.out / "triage_cut.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
