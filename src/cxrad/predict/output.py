"""Stage 9, predict: write prediction records as a JSON array, JSON lines or CSV, as they come.

Records are written one at a time so output streams with the batches: the JSON array is
opened before the first record and closed after the last, one record per line. CSV flattens
``probabilities`` into one column per class, with ``normal``, the triage score and the
positive findings (sorted by probability) beside them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from cxrad.errors import PredictError
from cxrad.models.config import json_safe
from cxrad.options import suggest

FORMATS = ("json", "jsonl", "csv")
CSV_HEAD = ("image", "status", "code", "reason", "normal", "triage_score", "positive", "model")


@dataclass
class Tally:
    """What a prediction run produced, for the summary and the exit code."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    with_positive: int = 0
    heatmaps: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    rejections: list[tuple[str, str]] = field(default_factory=list)

    def add(self, rec: dict[str, Any]) -> None:
        self.total += 1
        if rec["status"] == "ok":
            self.ok += 1
            self.with_positive += bool(rec["findings"])
            self.heatmaps += len(rec.get("heatmaps") or {})
        elif rec["status"] == "rejected":
            self.rejected += 1
            self.rejections.append((rec["image"], str(rec.get("code"))))
        else:
            self.failed += 1
            self.failures.append((rec["image"], f"{rec['status']}: {rec.get('reason')}"))


def dumps(rec: dict[str, Any]) -> str:
    """One record as strict JSON: never a bare ``NaN`` or ``Infinity`` that other tools reject."""
    try:
        return json.dumps(rec, allow_nan=False)
    except ValueError:
        return json.dumps(json_safe(rec), allow_nan=False)


def csv_row(rec: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """Flatten a record: one column per class, lists joined with ``;``."""
    triage = rec.get("triage") or {}
    row: dict[str, Any] = {
        "image": rec["image"],
        "status": rec["status"],
        "code": rec.get("code") or "",
        "reason": rec.get("reason") or "",
        "normal": "" if rec.get("normal") is None else rec["normal"],
        "triage_score": "" if triage.get("score") is None else triage["score"],
        "positive": ";".join(f["class"] for f in rec["findings"]),
        "model": (rec.get("run") or {}).get("name", ""),
    }
    for c in classes:
        row[c] = rec["probabilities"].get(c, "")
    if "heatmaps" in rec:
        row["heatmaps"] = ";".join(rec["heatmaps"].values())
    return row


def write_records(
    records: Iterable[dict[str, Any]],
    stream: TextIO,
    fmt: str = "json",
    classes: Sequence[str] = (),
    heatmaps: bool = False,
) -> Tally:
    """Write records to ``stream`` as they arrive; return the tally.

    Args:
        records: prediction records (see :meth:`Predictor.predict_many`).
        stream: where to write (stdout for the CLI).
        fmt: ``"json"`` (one array), ``"jsonl"`` (one object per line) or ``"csv"``.
        classes: the model's classes, for the CSV columns.
        heatmaps: add a ``heatmaps`` CSV column.
    """
    if fmt not in FORMATS:
        raise PredictError(
            f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.{suggest(fmt, FORMATS)}"
        )
    tally = Tally()
    if fmt == "csv":
        cols = [*CSV_HEAD, *classes]
        writer = csv.DictWriter(stream, fieldnames=cols + (["heatmaps"] if heatmaps else []))
        writer.writeheader()
        for rec in records:
            tally.add(rec)
            writer.writerow(csv_row(rec, classes))
            stream.flush()
        return tally
    if fmt == "json":
        stream.write("[")
    try:
        for rec in records:
            text = dumps(rec)  # before writing: a record that fails leaves no dangling comma
            sep = (",\n" if tally.total else "\n") if fmt == "json" else ""
            tally.add(rec)
            stream.write(sep + text + ("\n" if fmt == "jsonl" else ""))
            stream.flush()
    except BaseException:  # a failure mid-run still leaves valid JSON, never a lone "["
        if fmt == "json":
            _close_array(stream, quiet=True)
        raise
    if fmt == "json":
        _close_array(stream)
    return tally


def _close_array(stream: TextIO, quiet: bool = False) -> None:
    """End the JSON array; ``quiet``: the stream may be what failed, keep the first error."""
    try:
        stream.write("\n]\n")
        stream.flush()
    except OSError:
        if not quiet:
            raise
