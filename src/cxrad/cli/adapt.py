"""Stage 10, cli: ``cxrad adapt RUN --data WORK_OR_FOLDER --out RUN2``: refit decisions on a site's films."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cxrad.cli.app import app, err_console, writable_folder


def _ci(r: dict[str, Any]) -> str:
    if r.get("value") is None:
        return "n/a"
    ci = r.get("ci")
    return f"{r['value']:.3f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")


@app.command()
def adapt(
    run: str = typer.Argument(..., metavar="RUN", help="run folder, or 'default' (shipped)"),
    data: Path = typer.Option(
        ...,
        "--data",
        "-d",
        help="the site's labelled films: a work folder (manifest + cache), or a folder of "
        "class-named subfolders (NORMAL/, PNEUMONIA/, ...)",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="the adapted run folder to write"),
    operating_point: str | None = typer.Option(
        None,
        "--operating-point",
        help="spec=0.95, sens=0.90 or youden (default: the rule the run was fitted with; a site "
        "is one source, so @source means the plain rule here)",
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="patient-bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seeds the bootstrap and the cross-fit halves"),
    split: str = typer.Option(
        "all", "--split", help="with a work folder: all (every ok row), or train/val/test"
    ),
) -> None:
    """Refit temperatures and operating points on 100-500 of a site's labelled films; no retraining.

    Prints sensitivity and specificity before and after (after = cross-fitted: each half of the
    films decided by what the other half fitted), with 95% patient-bootstrap CIs, and how far
    the site's scores moved from the run's validation scores. Exit 2 when the films cannot
    adapt the run (no positives, no negatives, unreadable layout).

    Example: cxrad adapt default --data site_films/ --out runs/site
    """
    from cxrad.adapt import adapt_run

    writable_folder(out, create=False)  # the run lock makes it, and removes it on a refusal
    r = adapt_run(run, data, out, operating_point, n_boot=n_boot, seed=seed, split=split)
    err_console.print(f"adapted {run} on {r.n_films} films ({r.rule}) -> {out}", highlight=False)
    shift = r.shift or {}
    head = "class  n+/n-  sens before -> after  spec before -> after  KS  mean shift  (what)"
    err_console.print(head, highlight=False)
    for c in r.per_class:
        s = shift.get(c["class"]) or {}
        err_console.print(
            f"{c['class']}  {c['n_pos']}/{c['n_neg']}  {_ci(c['before']['sensitivity'])} -> "
            f"{_ci(c['after']['sensitivity'])}  {_ci(c['before']['specificity'])} -> "
            f"{_ci(c['after']['specificity'])}  {s.get('ks', 'n/a')}  {s.get('mean_shift', 'n/a')}"
            f"  ({c['what']})",
            highlight=False,
            soft_wrap=True,
        )
    t = r.triage
    err_console.print(
        f"triage  sens {_ci(t['before']['sensitivity'])} -> {_ci(t['after']['sensitivity'])}  "
        f"spec {_ci(t['before']['specificity'])} -> {_ci(t['after']['specificity'])}  ({t['what']})",
        highlight=False,
        soft_wrap=True,
    )
    if r.shift is None:
        err_console.print(
            "score shift: n/a (the run records no val score summary; refit it with "
            "cxrad.train.refit_run to add one)",
            highlight=False,
        )
    for w in r.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if r.skipped:
        err_console.print(
            f"skipped {len(r.skipped)} paths (each with its reason in {out}/adapt.json), e.g. "
            f"{r.skipped[0]['path']}: {r.skipped[0]['reason']}",
            highlight=False,
            soft_wrap=True,
        )
