"""Stage 10, cli: ``cxrad preprocess WORK``."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrad.cli.app import app, err_console, progress_bar
from cxrad.errors import CacheError
from cxrad.preprocess import PreprocessConfig, PreprocessSummary, preprocess_work


@app.command()
def preprocess(
    work: Path = typer.Argument(
        ...,
        help="work folder holding manifest.parquet (from `cxrad ingest` and `cxrad split`)",
        exists=True,
        file_okay=False,
        dir_okay=True,
    ),
    size: int = typer.Option(256, "--size", help="output side in pixels (square)"),
    mode: str = typer.Option(
        "letterbox",
        "--mode",
        help="letterbox|stretch. letterbox: keep the aspect ratio, pad with black; stretch: squash to a square "
        "like the original project",
    ),
    crop: str = typer.Option(
        "none",
        "--crop",
        help="none|lungs. lungs: cut each film to the shipped lung segmenter's box plus a 5% "
        "margin before resizing (its own cache; train on it with `cxrad train --crop lungs`, "
        "and predict, evaluate and serve read the crop from the run)",
    ),
    normalise: str = typer.Option(
        "none",
        "--normalise",
        help="intensity normalisation after the resize: none, clahe or histeq (its own cache)",
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-j", min=1, help="processes to use [default: all cores]"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="draw a progress bar"),
    fmt: str = typer.Option(
        "cache",
        "--format",
        help="cache, or webdataset: also write tar shards to WORK/streaming/<config>/ for "
        "`cxrad train --data-format webdataset` (many machines, object storage)",
    ),
) -> None:
    """Decode every `ok` image once, resize it, and cache it in WORK/cache/<config>/.

    Raw files are never modified. Rerunning with the same options does nothing; a run that was killed resumes where it stopped. Files that cannot be decoded are listed, with a reason, in failures.parquet.
    """
    if fmt not in ("cache", "webdataset"):
        raise typer.BadParameter(f"--format must be cache or webdataset, not {fmt!r}")
    config = PreprocessConfig(size=size, mode=mode, crop=crop, normalise=normalise)  # type: ignore[arg-type]  # validates
    with progress_bar(f"preprocess {config.key}", enabled=progress) as bar:
        s = preprocess_work(work, config, workers=workers, progress=bar)
    err_console.print(
        f"[bold]cached[/] {s.n_images} images ({s.n_new} new, {s.n_already} already cached) "
        f"from {s.n_rows} ok rows in {s.seconds:.1f} s"
    )
    if s.n_failed:
        reasons = ", ".join(f"{r}: {n}" for r, n in s.failed_by_reason.items())
        err_console.print(
            f"[bold yellow]failed[/] {s.n_failed} rows ({reasons}); "
            f"see {s.cache_dir / 'failures.parquet'}"
        )
    err_console.print(f"cache {s.cache_dir} ({s.bytes / 1e6:.1f} MB)", highlight=False)
    if s.n_images == 0:
        raise CacheError(nothing_cached(s, work))

    if fmt == "webdataset":
        from cxrad.preprocess.webdataset import streaming_dir, write_webdataset

        index = write_webdataset(work, config)
        counts = ", ".join(
            f"{k} {v['n']} ({len(v['shards'])} shards)" for k, v in index["splits"].items()
        )
        err_console.print(f"webdataset {streaming_dir(work, config)}: {counts}", highlight=False)


def nothing_cached(s: PreprocessSummary, work: Path) -> str:
    """Why a run that cached nothing is an error, and what to do about it."""
    if s.n_rows == 0:
        return (
            f"{work}/manifest.parquet has no `ok` rows, so nothing was cached; see the "
            "rejects in ingest_summary.json (every row has a reason status)"
        )
    reasons = ", ".join(f"{r}: {n}" for r, n in s.failed_by_reason.items())
    hint = (
        "; if the data moved, run `cxrad ingest --relocate OLD=NEW --out WORK`"
        if "missing file" in s.failed_by_reason
        else ""
    )
    return f"none of the {s.n_rows} ok rows could be cached ({reasons}){hint}"
