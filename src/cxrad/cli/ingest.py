"""Stage 10, cli: ``cxrad ingest DIR... --out WORK``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cxrad.cli.app import app, err_console, progress_bar, writable_folder
from cxrad.errors import IngestError
from cxrad.folderlock import folder_lock
from cxrad.ingest import ADAPTERS, ingest
from cxrad.ingest.registry import get_adapter
from cxrad.progress import Progress

SUMMARY_NAME = "ingest_summary.json"


@app.command("ingest")
def ingest_command(
    dirs: list[Path] = typer.Argument(
        None,
        help="Dataset folders (or a parent folder of several datasets, searched one level down).",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Work folder; writes manifest.parquet and ingest_summary.json."
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        "-f",
        help=f"Force one layout instead of detecting it: {', '.join(ADAPTERS)}.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-j", min=1, help="Hashing processes (default: all CPUs)."
    ),
    no_hash: bool = typer.Option(
        False, "--no-hash", help="Skip sha1/phash (fast; dedup in `cxrad split` then finds less)."
    ),
    relocate: str | None = typer.Option(
        None,
        "--relocate",
        help="OLD=NEW: the data moved; point the rows of WORK's manifest under OLD at NEW "
        "(no DIRs; labels, splits and hashes are kept).",
    ),
) -> None:
    """Read dataset folders into one manifest: one row per image, 17 label columns, hashes.

    Every public layout cxrad knows is detected automatically; an unknown folder is an error
    that lists them. Rows that cannot be used (excluded views, unmapped labels, missing or
    unreadable files) are kept with a reason and counted in the summary.

    Example: cxrad ingest ../shared/data/* --out work
    """
    if relocate is not None:
        _relocate(out, relocate, dirs)
        return
    if not dirs:
        raise IngestError("no dataset folder given; pass at least one DIR (or --relocate OLD=NEW)")
    if fmt is not None:
        get_adapter(fmt)  # a typo fails before any work, with "did you mean"
    writable_folder(Path(out), create=False)  # before hashing, which can take a while
    with folder_lock(Path(out), "cxrad ingest", IngestError):  # a split now would be lost
        _ingest_into(Path(out), dirs, fmt, workers, hash_images=not no_hash)


def _ingest_into(
    out: Path, dirs: list[Path], fmt: str | None, workers: int | None, hash_images: bool
) -> None:
    """Read ``dirs``, write the manifest and summary into ``out``, and print the summary."""
    from cxrad.manifest import write_manifest

    with contextlib.ExitStack() as stack:
        bar: list[Progress] = []

        def progress(done: int, total: int) -> None:
            # Opened on the first update, so a bad folder fails without drawing a bar.
            if not bar:
                bar.append(stack.enter_context(progress_bar("hashing")))
            bar[0](done, total)

        manifest, summary = ingest(
            dirs, fmt=fmt, workers=workers, progress=progress, hash_images=hash_images
        )
    dropped = dropped_split_note(Path(out))
    if dropped:
        summary["split_dropped"] = dropped
    path = write_manifest(manifest, out)
    (Path(out) / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary)
    if dropped:
        err_console.print(f"[bold yellow]warning:[/] {escape(dropped)}", highlight=False, soft_wrap=True)  # fmt: skip
    err_console.print(escape(f"wrote {path} and {Path(out) / SUMMARY_NAME}"), highlight=False)
    if summary["rows"] and not summary["ok"]:
        top = ", ".join(f"{r} ({n})" for r, n in list(summary["rejects"].items())[:3])
        raise IngestError(f"no usable row: all {summary['rows']} rows have a reason status: {top}")


def dropped_split_note(work: Path) -> str | None:
    """When ``work`` already holds a split manifest, the note that re-ingesting drops it.

    The split is not carried over: new or changed rows need new duplicate groups and splits,
    so ``cxrad split`` must run again (it is seeded: unchanged data splits the same way).
    """
    path = work / "manifest.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        if "split" not in pq.read_schema(path).names:
            return None
        split = pq.read_table(path, columns=["split"]).column("split").to_pandas()
    except (OSError, ValueError):  # an unreadable old manifest is simply replaced
        return None
    counts = split.value_counts()
    if counts.empty:
        return None
    parts = ", ".join(f"{k} {v}" for k, v in counts.items())
    return (
        f"{path} had a split ({parts}); the new manifest has none, so the split is dropped: "
        f"rerun `cxrad split {work}` before preprocess and train (split_summary.json, "
        "image_docs.csv and dup_conflicts.csv describe the old split until then)"
    )


def _relocate(work: Path, spec: str, dirs: list[Path] | None) -> None:
    from cxrad.manifest.relocate import relocate

    old, sep, new = spec.partition("=")
    if not sep or not old or not new or dirs:
        raise IngestError(
            f"--relocate expects OLD=NEW and no DIRs, got {spec!r}; e.g. "
            "`cxrad ingest --relocate /old/data=/new/data --out WORK`"
        )
    r = relocate(work, old, new)
    err_console.print(
        escape(
            f"relocated {r.rows} rows from {old} to {new}: {r.found} files found, "
            f"{r.missing} still missing, {r.restored} missing-file rows ok again"
        ),
        highlight=False,
    )


def _print_summary(summary: dict) -> None:
    """Rows and ok rows per source, positives per class, rejects by reason, and notes."""
    for note in summary.get("notes", []):
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    t = Table(title=f"{summary['rows']} rows, {summary['ok']} ok", title_justify="left")
    for col in ("source", "rows", "ok", "rejected"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for src, s in summary["per_source"].items():
        t.add_row(src, str(s["rows"]), str(s["ok"]), str(s["rows"] - s["ok"]))
    err_console.print(t)
    classes = {c: n for c, n in summary["per_class"].items() if n}
    err_console.print(
        "positives (ok rows): " + ", ".join(f"{c} {n}" for c, n in classes.items()),
        highlight=False,
        soft_wrap=True,
    )
    if summary["rejects"]:
        err_console.print(
            "rejected: " + escape(", ".join(f"{r} ({n})" for r, n in summary["rejects"].items())),
            highlight=False,
            soft_wrap=True,
        )
    if "exact_duplicate_groups" in summary:
        err_console.print(
            f"byte-identical groups: {summary['exact_duplicate_groups']} "
            f"({summary['exact_duplicate_rows']} rows); near duplicates: see `cxrad split`",
            highlight=False,
        )
