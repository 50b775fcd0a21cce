"""Stage 10, cli: ``cxrad preprocess WORK``."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrad.cli.app import app, err_console, progress_bar
from cxrad.preprocess import PreprocessConfig, preprocess_work


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
    config = PreprocessConfig(size=size, mode=mode)  # type: ignore[arg-type]  # validates mode
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
    if fmt == "webdataset":
        from cxrad.preprocess.webdataset import streaming_dir, write_webdataset

        index = write_webdataset(work, config)
        counts = ", ".join(
            f"{k} {v['n']} ({len(v['shards'])} shards)" for k, v in index["splits"].items()
        )
        err_console.print(f"webdataset {streaming_dir(work, config)}: {counts}", highlight=False)
