"""Stage 10, cli: ``cxrad split WORK``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cxrad.cli.app import app, err_console, progress_bar
from cxrad.errors import SplitError
from cxrad.split import FINE_DISTANCE, MAX_DISTANCE, check_ratios, split_work


def _parse_ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as e:
        raise SplitError(f"--ratios must be three numbers like 0.6,0.3,0.1, got {text!r}") from e


@app.command()
def split(
    work: Path = typer.Argument(
        ..., help="work folder holding manifest.parquet (from `cxrad ingest`)"
    ),
    ratios: str = typer.Option(
        "0.6,0.3,0.1", "--ratios", help="train,test,val fractions of images; must sum to 1"
    ),
    seed: int = typer.Option(0, "--seed", help="the same seed gives the same split"),
    keep_official: bool = typer.Option(
        False,
        "--keep-official",
        help="keep datasets' own test sets in test (with their patients and duplicates); "
        "official train/val rows are split into train/val only",
    ),
    max_distance: int = typer.Option(
        MAX_DISTANCE,
        "--max-distance",
        help="near duplicates are also within this many bits of the 64-bit phash",
    ),
    fine_distance: int = typer.Option(
        FINE_DISTANCE,
        "--fine-distance",
        help="near duplicates are within this many bits of the 256-bit phash; -1 searches the 64-bit phash alone",
    ),
    workers: int = typer.Option(0, "--workers", help="processes for hashing (0 = all cores)"),
) -> None:
    """Group duplicates across sources and split without leaks: grouped by patient and duplicate
    group, stratified over the 17 classes, deterministic for a seed.

    Writes manifest.parquet (dup_group, split), image_docs.csv, dup_conflicts.csv and
    split_summary.json in WORK.
    """
    parsed = check_ratios(_parse_ratios(ratios))  # before any bar is drawn
    with progress_bar("confirming near duplicates") as progress:
        s = split_work(
            work,
            ratios=tuple(parsed),
            seed=seed,
            keep_official=keep_official,
            max_distance=max_distance,
            fine_distance=None if fine_distance < 0 else fine_distance,
            workers=workers or None,
            progress=progress,
        )
    table = Table(title=f"split of {s['split_rows']} images (seed {seed})")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("patients", justify="right")
    for name, c in s["counts"].items():
        table.add_row(name, str(c["images"]), str(c["patients"]))
    err_console.print(table)
    d, leaks = s["duplicates"], s["leaks"]
    err_console.print(
        f"duplicate groups: {d['groups']} ({d['images_in_groups']} images), "
        f"{d['cross_source_groups']} across sources, {d['conflicting_groups']} with conflicting labels"
    )
    for pair, n in d["source_pairs"].items():
        err_console.print(f"  {pair}: {n}")
    if s["not_split"]:
        err_console.print(f"not split (status): {s['not_split']}")
    ok = not any(leaks.values())
    err_console.print(
        f"leak checks: patients in >1 split {leaks['patients_in_several_splits']}, "
        f"dup groups in >1 split {leaks['dup_groups_in_several_splits']} "
        + ("[green]ok[/]" if ok else "[bold red]LEAK[/]")
    )
    err_console.print(f"wrote {work}/manifest.parquet, image_docs.csv, split_summary.json")
