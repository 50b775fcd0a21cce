"""Stage 10, cli: ``cxrad fit-ood RUN --data WORK``: OOD statistics for a run trained earlier."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrad.cli.app import app, err_console


@app.command("fit-ood")
def fit_ood(
    run: Path = typer.Argument(..., help="a trained run directory (written to)"),
    data: Path = typer.Option(
        ..., "--data", "-d", help="work folder with the split and cache the run was trained on"
    ),
    quantile: float = typer.Option(
        0.99, "--quantile", min=0.5, max=0.9999, help="share of val films below the threshold"
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="images per forward pass"),
) -> None:
    """Fit the out-of-distribution score of RUN on WORK's train films; threshold it on val.

    `cxrad train` does this for every new run; use this for runs trained before. Writes
    RUN/ood.safetensors and the `ood` entry of RUN/config.json; afterwards every prediction
    record carries `ood: {score, threshold, unlike_training}`.

    Example: cxrad fit-ood runs/fast --data work
    """
    from cxrad.train.ood import fit_run_ood

    entry = fit_run_ood(run, data, quantile=quantile, batch_size=batch_size)
    err_console.print(
        f"[bold green]fitted[/] OOD statistics ({entry['method']}, {entry['feature_dim']} "
        f"features) on {entry['n_fit']} train films; threshold {entry['threshold']:.3f} at the "
        f"{entry['quantile']:g} quantile of {entry['n_threshold']} val films -> {run}",
        highlight=False,
    )
