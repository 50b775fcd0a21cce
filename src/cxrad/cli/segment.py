"""Stage 10, cli: ``cxrad segment PATH... [--out DIR]``: lung masks, contour overlays, records.

Exit codes: 0 when every image was read, 1 when some could not be (their records are still
written, with a reason), 2 on a user error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from cxrad.cli.app import app, err_console, progress_bar, writable_folder


@app.command()
def segment(
    paths: list[str] = typer.Argument(
        ...,
        metavar="PATH...",
        help="image files (PNG, JPEG, DICOM, ...), folders (searched recursively) or quoted globs",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="write <stem>__lungs.png (mask, 0/255) and <stem>__lungs_overlay.png (contours: "
        "image-left lung red, image-right blue) and records.jsonl here; folder inputs are mirrored",
        file_okay=False,
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="segmenter folder (default: the shipped one)", file_okay=False
    ),
    show_progress: bool = typer.Option(
        True, "--progress/--no-progress", help="draw a progress bar on stderr"
    ),
) -> None:
    """Find the lung fields in chest X-rays.

    Writes one JSON record per image to stdout: image, status, code, reason, lungs (lung area fraction, image-left/right areas and share, split_by, box [x0, y0, x1, y1] in pixels), and mask/overlay paths with --out.
    """
    from cxrad.predict.inputs import check_output_dir, find_inputs
    from cxrad.segment import Segmenter, segment_files

    if out is not None:
        check_output_dir(out, paths)
        writable_folder(out)
    files = find_inputs(paths)
    seg = Segmenter(model)
    failed = 0
    sink = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        sink = (out / "records.jsonl").open("w")
    try:
        with progress_bar("segment", enabled=show_progress) as progress:
            items = [(f.path, f.rel) for f in files]
            for rec in segment_files(items, out=out, segmenter=seg, progress=progress):
                line = json.dumps(rec)
                sys.stdout.write(line + "\n")
                if sink is not None:
                    sink.write(line + "\n")
                failed += rec["status"] != "ok"
    finally:
        if sink is not None:
            sink.close()
    err_console.print(
        f"{len(files)} image(s): {len(files) - failed} ok, {failed} failed", highlight=False
    )
    if failed:
        raise typer.Exit(1)
