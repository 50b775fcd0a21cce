"""Stages 7 and 8 benchmark: leave-one-source-out (LOSO), the site gap, and the levers that shrink it.

For every setting below, trains ``cxr-fast`` without the held-out source(s) (and without films
linked to them by patient or duplicate group), then scores the held-out films. Each setting
reports, per task where the held-out part has both positives and negatives: the
in-distribution AUROC (test split of the other sources), the held-out AUROC (both with
patient-bootstrap 95% CIs), their gap, and the specificity on the held-out normal films at the
run's validation operating points.

Settings (what ``../shared/data`` allows; TUBERCULOSIS is impossible: every TB film is in
tbx11k, which has no TB-negative films, and holding it out leaves no TB positive to train on):

- ``covid19-radiography``: COVID_19 and triage on all its films;
- ``ieee8023+covid-cxnet``: COVID_19 and triage on all their films;
- ``kaggle-pediatric``: NORMAL vs PNEUMONIA (the PNEUMONIA output) and triage on its official test;
- ``nih``: triage (abnormal vs normal) on all its films.

Levers (each compared with ``baseline`` at the same budget, seed and data):
``strong`` (``--augment strong``: the shipped default model's recipe, so the levers can be
compared with what ships today), ``balanced`` (``--sampler balanced``), ``site-aug`` (``--augment site``), ``clahe`` (a CLAHE
cache, ``cxrad preprocess --normalise clahe``), ``lungs`` (``--crop lungs``: the shipped
segmenter's lung box plus a 5 % margin; build its cache first with
``cxrad preprocess work/full --size 128 --crop lungs``, at the benchmark's ``--size``), ``adversarial`` (``--dg adversarial``: a
training-only source head behind gradient reversal, DANN, at the default ``--dg-weight``; only
the sources left in the run's train rows are predicted).

Example (one command; results are kept per run, so a killed benchmark resumes):
    PYTHONPATH=src .venv/bin/python benchmarks/bench_sites.py --work work/full \\
        --out work/bench_sites --levers baseline,balanced,site-aug --epochs 2 --limit-train 1200
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cxrad.data import augment_preset
from cxrad.evaluate.sites import site_section
from cxrad.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, tuple[list[str], str]] = {
    "covid19-radiography": (["covid19-radiography"], "all"),
    "ieee8023+covid-cxnet": (["covid-cxnet", "ieee8023"], "all"),
    "kaggle-pediatric": (["kaggle-pediatric"], "test"),
    "nih": (["nih"], "all"),
}
LEVERS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "strong": {"augment": "strong"},
    "balanced": {"sampler": "balanced"},
    "site-aug": {"augment": "site"},
    "clahe": {"normalise": "clahe"},
    "lungs": {"crop": "lungs"},
    "adversarial": {"dg": "adversarial"},
}
BEGIN, END = "<!-- bench_sites:begin -->", "<!-- bench_sites:end -->"


def train_kwargs(lever: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``cxrad.train.train`` arguments of one lever at the benchmark's budget."""
    opts = dict(LEVERS[lever])
    kw: dict[str, Any] = {
        "model": "cxr-fast", "size": args.size, "max_epochs": args.epochs, "batch_size": 32,
        "limit_train": args.limit_train, "patience": 0, "seed": args.seed, "progress": False,
        "threads": args.threads, "augment": augment_preset(opts.pop("augment", "default")),
    }  # fmt: skip
    kw.update(opts)
    return kw


def run_one(
    work: Path, out: Path, setting: str, lever: str, args: argparse.Namespace
) -> dict | None:
    """Train (or reuse) one LOSO run and score its site gap; cached in ``out/<lever>/<setting>.json``."""
    from cxrad.evaluate.run import _scorer
    from cxrad.models import load_run
    from cxrad.train import train

    res_path = out / lever / f"{setting}.json"
    if res_path.is_file():
        return json.loads(res_path.read_text())
    sources, held_split = SETTINGS[setting]
    run_dir = out / lever / setting
    lock = out / lever / f"{setting}.running"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.touch(exist_ok=False)  # another benchmark process is training this run
    except FileExistsError:
        logging.warning("%s / %s: another process holds %s; skipped", setting, lever, lock)
        return None
    t0 = time.perf_counter()
    finished = (run_dir / "config.json").is_file() and (run_dir / "model.safetensors").is_file()
    try:
        if not finished:  # a run trained before a crash in scoring is scored, not retrained
            train(work, out=run_dir, hold_out=sources, **train_kwargs(lever, args))
    finally:
        lock.unlink(missing_ok=True)
    model, config = load_run(run_dir)
    train_s = config.extra.get("train_seconds") if finished else time.perf_counter() - t0
    score = _scorer(model, work, config, 128)  # the run's DecisionStep
    res = site_section(read_manifest(work), config, score, held_out_split=held_split,
                       n_boot=args.n_boot, seed=args.seed)  # fmt: skip
    res["ood"] = ood_auroc(model, run_dir, config, work, sources, held_split, args)
    res.update(setting=setting, lever=lever, train_seconds=round(train_s, 1),
               n_train=config.extra["data"]["n_train"], epochs=args.epochs)  # fmt: skip
    res_path.parent.mkdir(parents=True, exist_ok=True)
    res_path.write_text(json.dumps(res, indent=1, default=float))
    return res


def ood_auroc(
    model: Any,
    run_dir: Path,
    config: Any,
    work: Path,
    sources: list[str],
    held_split: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """AUROC of the run's OOD score for held-out-source films (positive) vs in-distribution test films.

    The OOD statistics were fitted at training time on the features of the train films the run
    trained on (runs trained before commit d52be15 also saw the held-out source's films:
    ``bench_ood_holdout.py`` measures the difference); clusters are patients (and duplicate
    groups).
    """
    import numpy as np

    from cxrad.evaluate.bootstrap import cluster_ids
    from cxrad.evaluate.rates import auroc_ci, public
    from cxrad.evaluate.run import infer, open_dataset
    from cxrad.evaluate.sites import site_rows
    from cxrad.models.ood import load_ood

    ood = load_ood(run_dir, config)
    if ood is None:
        return {"status": "no OOD statistics in the run"}
    ind, out = site_rows(read_manifest(work), sources, "test", held_split)
    parts = []
    for rows in (ind, out):
        ds = open_dataset(work, rows, config)
        parts.append((ds.df, ood.score(infer(model, ds, 128, features=True).astype(np.float64))))
    df = pd.concat([parts[0][0], parts[1][0]], ignore_index=True)
    y = np.r_[np.zeros(len(parts[0][1])), np.ones(len(parts[1][1]))].astype(int)
    s = np.r_[parts[0][1], parts[1][1]]
    res = auroc_ci(y, s, cluster_ids(df), args.n_boot, args.seed + 2, 1)
    out_d = public(res)
    out_d.update(n_in=len(parts[0][1]), n_held_out=len(parts[1][1]))
    thr = ood.threshold_
    if thr is not None:
        out_d["held_out_flagged"] = float(np.mean(parts[1][1] > thr))
        out_d["in_flagged"] = float(np.mean(parts[0][1] > thr))
    return out_d


def fmt(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def table(results: list[dict], levers: list[str]) -> str:
    """Markdown: one row per (setting, task), per lever held-out AUROC, gap and specificity."""
    by = {(r["setting"], r["lever"]): r for r in results}
    head = (
        "| held out | task | "
        + " | ".join(f"{lv}: in / held-out AUROC, gap" for lv in levers)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + len(levers))]
    for setting in SETTINGS:
        base = by.get((setting, levers[0]))
        if base is None:
            continue
        for task in base["tasks"]:
            cells = []
            for lv in levers:
                t = by.get((setting, lv), {}).get("tasks", {}).get(task)
                cells.append(
                    "–"
                    if t is None
                    else f"{fmt(t['in']['auroc'])} / "
                    f"{fmt(t['held_out']['auroc'], t['held_out']['ci'])}, "
                    f"gap {fmt(t['gap']['value'], t['gap']['ci'])}"
                )
            lines.append(f"| {setting} | {task} | " + " | ".join(cells) + " |")
        spec = []
        for lv in levers:
            s = by.get((setting, lv), {}).get("specificity_on_normals", {})
            spec.append(
                f"{fmt(s.get('triage', {}).get('rate'), s.get('triage', {}).get('ci'))} "
                f"(n={s.get('n', 0)})"
            )
        lines.append(f"| {setting} | specificity on normals (triage) | " + " | ".join(spec) + " |")
        ood = []
        for lv in levers:
            o = by.get((setting, lv), {}).get("ood", {})
            ood.append(fmt(o.get("auroc"), o.get("ci")) if o.get("auroc") is not None else "–")
        lines.append(
            f"| {setting} | OOD score: held-out vs in-distribution AUROC | "
            + " | ".join(ood)
            + " |"
        )
    means = []
    for lv in levers:
        rs = [by[(s, lv)] for s in SETTINGS if (s, lv) in by]
        ho = [t["held_out"]["auroc"] for r in rs for t in r["tasks"].values()]
        gaps = [
            t["gap"]["value"]
            for r in rs
            for t in r["tasks"].values()
            if t["gap"]["value"] is not None
        ]
        means.append(
            f"held-out {fmt(sum(ho) / len(ho) if ho else None)}, gap {fmt(sum(gaps) / len(gaps) if gaps else None)}"
        )
    lines.append("| **mean** | all tasks | " + " | ".join(means) + " |")
    return "\n".join(lines)


def write_benchmarks(md: str, path: Path = REPO / "BENCHMARKS.md") -> None:
    """Replace the text between the bench_sites markers in BENCHMARKS.md (append if absent)."""
    text = path.read_text()
    block = f"{BEGIN}\n{md}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "work" / "full")
    p.add_argument("--out", type=Path, default=REPO / "work" / "bench_sites")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--levers", default="baseline,balanced,site-aug")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=1200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    p.add_argument(
        "--table-only", action="store_true", help="only rebuild the table from finished runs"
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)
    levers = [lv for lv in a.levers.split(",") if lv]
    if a.table_only:
        results = [
            json.loads(f.read_text()) for lv in levers for f in sorted((a.out / lv).glob("*.json"))
        ]
        write_table(results, levers, a)
        return
    results = []
    for setting in [s for s in a.settings.split(",") if s]:
        for lever in levers:
            r = run_one(a.work, a.out, setting, lever, a)
            if r is None:
                continue
            results.append(r)
            logging.warning(
                "%s / %s: %s",
                setting,
                lever,
                {k: v["held_out"]["auroc"] for k, v in r["tasks"].items()},
            )
    write_table(results, levers, a)


def write_table(results: list[dict], levers: list[str], a: argparse.Namespace) -> None:
    """Write ``table.md`` (and BENCHMARKS.md unless ``--no-write``) from the per-run results."""
    if not results:
        return
    budget = (
        f"Budget per run: cxr-fast, {a.size} px, {a.epochs} epochs, at most {a.limit_train} train "
        f"films (seeded subset), batch 32, seed {a.seed}, {a.threads} CPU thread(s); CIs: "
        f"{a.n_boot} patient-bootstrap resamples. Median train time "
        f"{sorted(r['train_seconds'] for r in results)[len(results) // 2]:.0f} s per run."
    )
    md = budget + "\n\n" + table(results, levers)
    (a.out / "table.md").write_text(md + "\n")
    print(md)
    if not a.no_write:
        write_benchmarks(md)


if __name__ == "__main__":
    main()
