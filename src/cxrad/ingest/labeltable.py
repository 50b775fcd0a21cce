"""Stage 1, ingest: read one CSV label file strictly, or fail with the file, line and the fix.

Real label files go wrong in a few ways: a column renamed, ``;`` or tab as the delimiter (a
spreadsheet's export), latin-1 text, a ``.gz`` that is not gzip, a row with a field too many.
Each is a :class:`~cxrad.errors.LabelFileError` naming the file, the line or the column, and
what was expected; nothing here guesses silently. A bad *value* in a good file is not an error
here: the adapter turns it into that row's ``status``.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxrad.errors import LabelFileError
from cxrad.options import suggest

_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def read_text(path: Path) -> str:
    """The file as text: gunzipped when its bytes are gzip, decoded as UTF-8 (BOM allowed)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LabelFileError(f"{path}: cannot read the label file ({e.strerror or e})") from e
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise LabelFileError(
                f"{path}: the gzip data is damaged or cut short ({e}); expected a complete "
                "gzip file: download it again"
            ) from e
    elif path.suffix.lower() == ".gz":
        raise LabelFileError(
            f"{path}: named .gz but is not gzip-compressed; expected gzip data "
            f"(if it is plain CSV, rename it to {path.stem})"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LabelFileError(
            f"{path}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8; expected UTF-8 text "
            f"(convert it, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.csv`)"
        ) from e


def read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """A comma-separated label file as a frame of strings (``""`` for an empty cell).

    Args:
        path: the CSV (or gzip-compressed CSV) file.
        required: columns that must be in the header, spelled exactly.

    Raises:
        LabelFileError: unreadable, not gzip though named ``.gz``, not UTF-8, empty, another
            delimiter, a required column missing, or a row whose field count differs from the
            header's.
    """
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise LabelFileError(
                f"{path}: empty; expected a header line with {', '.join(required)}"
            )
        header = [h.strip() for h in header]
        _check_header(path, header, required, text.split("\n", 1)[0])
        rows = []
        for r in reader:
            if not r or (len(r) == 1 and not r[0].strip()):
                continue  # blank line
            if len(r) != len(header):
                raise LabelFileError(
                    f"{path}: line {reader.line_num}: {len(r)} fields, but the header has "
                    f"{len(header)}; expected one value per column (a comma or quote out of place?)"
                )
            rows.append(r)
    except csv.Error as e:
        raise LabelFileError(
            f"{path}: line {reader.line_num}: not valid CSV ({e}); expected comma-separated text"
        ) from e
    return pd.DataFrame(rows, columns=header, dtype=str)


def _check_header(path: Path, header: list[str], required: Sequence[str], first: str) -> None:
    missing = [c for c in required if c not in header]
    if not missing:
        return
    for delim, name in _DELIMITERS.items():
        if len(header) == 1 and delim in first:
            raise LabelFileError(
                f"{path}: line 1: columns are separated by {name}; expected commas "
                f"(a CSV with columns {', '.join(required)}); re-export it as comma-separated"
            )
    col = missing[0]
    raise LabelFileError(
        f"{path}: line 1: no column {col!r}.{suggest(col, header)} Expected the columns "
        f"{', '.join(required)}; found {', '.join(header[:12])}"
        + (" ..." if len(header) > 12 else "")
    )
