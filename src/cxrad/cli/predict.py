"""Stage 10, cli: ``cxrad predict PATH...`` and ``cxrad export RUN``.

Exit codes of ``predict``: 0 when every image was read and passed the input gate; 1 when some
could not be read (their records are still written, with ``status = "error"``, a ``code`` and a
``reason``), whether or not others were rejected; 2 on a user error (no inputs, no model, bad
option) with a one-line reason; 3 when none failed but the input gate rejected some
(``status = "rejected"``, ``code`` = the gate's reason). ``--no-gate`` skips the gate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cxrad.cli.app import app, err_console, progress_bar, writable_folder
from cxrad.errors import PredictError

_MAX_LISTED_FAILURES = 5


@app.command()
def predict(
    paths: list[str] = typer.Argument(
        ...,
        metavar="PATH...",
        help="image files (PNG, JPEG, DICOM, BMP, TIFF; any name), folders (searched recursively "
        "for image extensions) or quoted glob patterns such as 'scans/**/*.dcm'",
    ),
    model: str = typer.Option(
        "default", "--model", "-m", help="run folder from `cxrad train`, or 'default' (shipped)"
    ),
    heatmaps: Path | None = typer.Option(
        None,
        "--heatmaps",
        help="write Grad-CAM overlays (<stem>__<CLASS>.png) and raw maps (.npy) for each positive "
        "finding into this folder, mirroring folder inputs; input folders are never written to",
        file_okay=False,
    ),
    fmt: str = typer.Option(
        "json",
        "--format",
        "-f",
        help="json: one JSON array, one record per line, streamed; jsonl: one object per line; "
        "csv: one column per class",
    ),
    backend: str = typer.Option(
        "torch",
        "--backend",
        help="torch (eager) or onnx (ONNX Runtime; exported on first use, see `cxrad export`)",
    ),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1, help="images per forward pass"),
    threshold_mode: str = typer.Option(
        "val",
        "--threshold-mode",
        help="val: each class's operating point from the run; fixed: --threshold for every class",
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", min=0.0, max=1.0, help="cut-off for --threshold-mode fixed"
    ),
    gate: bool = typer.Option(
        True,
        "--gate/--no-gate",
        help="check every image first (DICOM tags, simple rules, a small classifier) and reject "
        "what is not a frontal chest X-ray: CT/MR/US, other body parts, lateral views, photos "
        "and documents, blank, too small, inverted or rotated films",
    ),
    show_progress: bool = typer.Option(
        True, "--progress/--no-progress", help="draw a progress bar on stderr"
    ),
) -> None:
    """Find what looks abnormal in chest X-rays, and where.

    Writes one record per image to stdout (nothing else goes there): image, status ("ok" or "error", with code and reason), normal (the triage decision), triage (score, higher = more abnormal, and its threshold), findings (the positive findings, sorted by probability, each with its threshold; none on a film triage calls normal), probabilities (calibrated, per class), run, and heatmaps with --heatmaps. positive and abnormal_score are kept as aliases.

    Images the input gate rejects get status "rejected", a code (not_xray_modality, not_chest, lateral_view, not_radiograph, blank, too_small, inverted, rotated), a reason and gate (its verdict and score), and no findings; --no-gate skips the gate.

    Exit code 0 if every image was read and passed the gate, 1 if some could not be read (their records are still written), 2 on a usage error, 3 if none failed but the gate rejected some.
    """
    from cxrad.predict import FORMATS, Predictor, find_inputs, write_records
    from cxrad.predict.inputs import check_output_dir

    if fmt not in FORMATS:
        raise PredictError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if heatmaps is not None:
        check_output_dir(heatmaps, paths)
        writable_folder(heatmaps, "--heatmaps")
    files = find_inputs(paths)
    predictor = Predictor.from_run(
        model,
        backend=backend,
        batch_size=batch_size,
        threshold_mode=threshold_mode,
        threshold=threshold,
        gate=gate,
    )
    err_console.print(
        f"predicting {len(files)} image(s) with {predictor.name} ({backend})", highlight=False
    )
    with progress_bar("predict", enabled=show_progress) as progress:
        records = predictor.predict_many(files, heatmaps_dir=heatmaps, progress=progress)
        tally = write_records(
            records, sys.stdout, fmt, predictor.classes, heatmaps=heatmaps is not None
        )
    err_console.print(
        f"{tally.total} image(s): {tally.ok} ok, {tally.failed} failed, "
        f"{tally.rejected} rejected by the input gate, "
        f"{tally.with_positive} with positive findings"
        + (f"; {tally.heatmaps} heatmap(s) in {heatmaps}" if heatmaps is not None else ""),
        highlight=False,
    )
    for path, status in tally.failures[:_MAX_LISTED_FAILURES]:
        err_console.print(f"  {path}: {status}", highlight=False, soft_wrap=True)
    if tally.failed > _MAX_LISTED_FAILURES:
        err_console.print(f"  ... and {tally.failed - _MAX_LISTED_FAILURES} more", highlight=False)
    for path, code in tally.rejections[:_MAX_LISTED_FAILURES]:
        err_console.print(f"  {path}: rejected ({code})", highlight=False, soft_wrap=True)
    if tally.rejected > _MAX_LISTED_FAILURES:
        err_console.print(
            f"  ... and {tally.rejected - _MAX_LISTED_FAILURES} more rejected", highlight=False
        )
    if tally.failed:
        raise typer.Exit(1)
    if tally.rejected:
        raise typer.Exit(3)


@app.command()
def export(
    run: str = typer.Argument(
        "default", metavar="RUN", help="run folder, or 'default' (the shipped model)"
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="export format (only onnx)"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="file to write (default RUN/model.onnx)", dir_okay=False
    ),
) -> None:
    """Export a trained model for deployment (ONNX, opset 17, dynamic batch axis).

    The graph takes (B, 1, S, S) float images in [0, 1]: normalisation is inside it. `cxrad predict --backend onnx` uses RUN/model.onnx when it matches the weights.
    """
    from cxrad.predict import export_onnx

    if fmt != "onnx":
        raise PredictError(f"unknown export --format {fmt!r}; only 'onnx' is supported")
    path = export_onnx(run, out)
    err_console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)
