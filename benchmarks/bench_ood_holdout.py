"""Stage 7 benchmark: the OOD score at an unseen source, fitted with and without that source.

Before commit d52be15, ``fit_run_ood`` fitted a run's Gaussian on *every* train film and set
its threshold on every val film, so a leave-one-source-out run's OOD statistics had seen the
held-out source's own train and val films. For each finished run of ``bench_sites.py``
(``OUT/<lever>/<setting>/``) this scores the OOD statistics stored in the run (fitted at
training time) and statistics refitted now, without the held-out source, on a copy of the
run, the same way: AUROC of the held-out source's films (positive) against the other
sources' test films, with patient-bootstrap CIs (``bench_sites.ood_auroc``). The weights are
the same in both, so only the fit differs.

Usage:
    PYTHONPATH=src python benchmarks/bench_ood_holdout.py --work work/full \\
        --out work/bench_sites --levers baseline,strong,site-aug
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sites import SETTINGS, ood_auroc

RUN_FILES = ("config.json", "model.safetensors", "ood.safetensors")


def score(run: Path, work: Path, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """``bench_sites.ood_auroc`` for ``run`` as it is on disk, plus its fit's film counts."""
    from cxrad.models import load_run

    model, config = load_run(run)
    sources, held_split = SETTINGS[setting]
    res = ood_auroc(model, run, config, work, sources, held_split, args)
    res.update(n_fit=config.ood["n_fit"], n_threshold=config.ood["n_threshold"])
    return res


def one_run(run: Path, work: Path, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """The stored fit and a refit without the held-out source, scored alike."""
    from cxrad.train.ood import fit_run_ood

    stored = score(run, work, setting, args)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        copy.mkdir()
        for name in RUN_FILES:
            shutil.copy2(run / name, copy / name)
        fit_run_ood(copy, work)
        refit = score(copy, work, setting, args)
    return {"stored": stored, "refit": refit}


def line(key: str, r: dict[str, Any]) -> str:
    """One Markdown table row: AUROC [CI] and flagged shares, stored fit -> refit."""

    def auc(d: dict[str, Any]) -> str:
        return f"{d['auroc']:.3f} [{d['ci'][0]:.2f}, {d['ci'][1]:.2f}]"

    s, f = r["stored"], r["refit"]
    return (
        f"| {key} | {s['n_held_out']:,} | {s['n_in']:,} | {s['n_fit']:,} -> {f['n_fit']:,} | "
        f"{auc(s)} | {auc(f)} | {f['auroc'] - s['auroc']:+.3f} | "
        f"{s['held_out_flagged']:.1%} / {s['in_flagged']:.1%} | "
        f"{f['held_out_flagged']:.1%} / {f['in_flagged']:.1%} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="bench_sites.py's --out")
    ap.add_argument("--levers", default="baseline")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results = {}
    for lever in args.levers.split(","):
        for setting in SETTINGS:
            run = args.out / lever / setting
            if not (run / "ood.safetensors").is_file():
                print(f"{lever}/{setting}: no finished run with OOD statistics; skipped")
                continue
            key = f"{lever}/{setting}"
            results[key] = r = one_run(run, args.work, setting, args)
            print(line(key, r), flush=True)
    (args.out / "ood_holdout.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
