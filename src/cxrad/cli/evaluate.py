"""Stage 10, cli: ``cxrad evaluate RUN --data WORK``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from cxrad.cli.app import app, err_console, progress_bar, writable_folder


@app.command()
def evaluate(
    run: str = typer.Argument(
        ..., help="run folder (model.safetensors + config.json), or 'default' for the shipped model"
    ),
    data: Path = typer.Option(
        ...,
        "--data",
        help="work folder with manifest.parquet and the preprocessed cache; any labelled "
        "manifest works, e.g. an external test set",
        exists=True,
        file_okay=False,
        dir_okay=True,
        resolve_path=False,
    ),
    split: str = typer.Option(
        "test", "--split", help="which split to evaluate: test, val, train, or all ('ok' rows)"
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="folder for metrics.json, report.html, predictions.parquet and the PNGs "
        "(default: RUN/eval)",
    ),
    n_boot: int = typer.Option(
        1000, "--n-boot", min=0, help="patient-clustered bootstrap resamples for the 95% CIs"
    ),
    seed: int = typer.Option(0, "--seed", help="seeds the bootstrap and the source probe"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="images per forward pass"),
    min_count: int = typer.Option(
        5, "--min-count", min=1, help="fewest positives and negatives for a class to be scored"
    ),
    held_out_split: str = typer.Option(
        "all",
        "--held-out-split",
        help="for a run trained with --hold-out: which of the held-out sources' films the "
        "site-gap section scores (all, or test/val/train)",
    ),
    fit_temperature: bool = typer.Option(
        False,
        "--fit-temperature",
        help="refit per-class temperatures (and with them the operating points) on the val "
        "split and save them into RUN/config.json; "
        "the report shows ECE before and after",
    ),
    where: bool = typer.Option(
        False,
        "--where",
        help="also score the heatmaps (pointing game and mass in NIH/TBX11K boxes, mass in the "
        "lungs, beside a centred-blob chance level) and run shortcut counterfactuals (AUROC "
        "with the lungs blanked / with everything else blanked)",
    ),
) -> None:
    """Evaluate a trained model: AUROC/AUPRC with patient-bootstrap CIs, baselines, shortcut audit.

    Writes metrics.json, a self-contained report.html, the per-film predictions.parquet and PNG
    plots, and prints the headline numbers: macro AUROC with its CI, top-1 accuracy against the
    majority baseline, and the verdict of the shortcut audit (can the model tell the source
    dataset apart?).
    """
    from cxrad.evaluate import evaluate_run, headline

    writable_folder(out)

    with progress_bar("evaluating") as progress:
        m = evaluate_run(
            run,
            data,
            split=split,
            out=out,
            n_boot=n_boot,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            fit_temperature=fit_temperature,
            where=where,
            min_count=min_count,
            held_out_split=held_out_split,
            command=shlex.join(["cxrad", *sys.argv[1:]]),
        )
    d = m["header"]["data"]
    err_console.print(
        f"[bold]{m['header']['model']['name']}[/] on {d['n_images']} images of split "
        f"'{d['split']}' ({len(d['sources'])} source(s))",
        highlight=False,
    )
    for line in headline(m):
        err_console.print(f"  {line}", highlight=False, soft_wrap=True)
    t = m["calibration"].get("temperature")
    if t:
        err_console.print(
            f"  temperatures {', '.join(f'{v:.3f}' for v in t['fitted'])} and operating points "
            f"({t['operating_points_refitted']}) refitted on val and saved; mean ECE "
            f"{t['mean_ece_before']:.3f} -> {t['mean_ece_after']:.3f}",
            highlight=False,
        )
    err_console.print(f"report: {m['paths']['report']}", highlight=False, soft_wrap=True)
