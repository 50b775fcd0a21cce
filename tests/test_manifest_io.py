"""Stage 2, manifest: a damaged or hand-edited manifest is one line saying what is wrong.

Every stage reads ``WORK/manifest.parquet``; a copy cut short, or a column edited in pandas or
a spreadsheet, must not be a traceback in whichever stage meets it first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from cxrad.errors import ManifestError
from cxrad.manifest import manifest_hash, read_manifest, write_manifest
from helpers import make_tiny_work


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_work(tmp_path_factory.mktemp("m"), n_per_class=3, preprocess=False)


def _edit(good: Path, tmp: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    """A copy of ``good``'s manifest, changed by ``change`` and written behind cxrad's back."""
    tmp.mkdir(parents=True, exist_ok=True)
    change(pd.read_parquet(good / "manifest.parquet")).to_parquet(tmp / "manifest.parquet")
    return tmp


EDITS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "text in a class column": (
        lambda d: d.assign(NORMAL=d["NORMAL"].map({1.0: "yes", 0.0: "no"}).fillna("?")),
        "column 'NORMAL'",
    ),
    "a label of 2": (lambda d: d.assign(PNEUMONIA=d["PNEUMONIA"] * 2), "only 0, 1 or NaN"),
    "a repeated row": (lambda d: pd.concat([d, d.iloc[:2]]), "image_id must be unique"),
    "no status": (lambda d: d.drop(columns=["status"]), "missing columns ['status']"),
    "an empty status": (lambda d: d.assign(status=None), "every row needs a status"),
    "an empty image_id": (
        lambda d: d.assign(image_id=[None, *d["image_id"][1:]]),
        "without an image_id",
    ),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_a_hand_edited_manifest_says_what_is_wrong(good: Path, tmp_path: Path, name: str) -> None:
    change, message = EDITS[name]
    work = _edit(good, tmp_path / "w", change)
    with pytest.raises(ManifestError) as e:
        read_manifest(work)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("keep", [0, 100, -20])
def test_a_manifest_cut_short_says_to_reingest(good: Path, tmp_path: Path, keep: int) -> None:
    data = (good / "manifest.parquet").read_bytes()
    (tmp_path / "manifest.parquet").write_bytes(data[:keep] if keep >= 0 else data[keep:])
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path)
    msg = str(e.value)
    assert "cannot be read as parquet" in msg and f"cxrad ingest DIR... --out {tmp_path}" in msg


def test_the_cli_exits_2_on_a_damaged_manifest(
    good: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    from cxrad.cli import main

    (tmp_path / "manifest.parquet").write_bytes((good / "manifest.parquet").read_bytes()[:300])
    monkeypatch.setattr(sys, "argv", ["cxrad", "split", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "cannot be read as parquet" in err and "Traceback" not in err


def test_write_refuses_what_read_would_refuse_and_keeps_the_old_file(
    good: Path, tmp_path: Path
) -> None:
    work = _edit(good, tmp_path / "w", lambda d: d)
    before = (work / "manifest.parquet").read_bytes()
    df = read_manifest(work)
    with pytest.raises(ManifestError, match="image_id must be unique"):
        write_manifest(pd.concat([df, df.iloc[:1]]), work)
    assert (work / "manifest.parquet").read_bytes() == before
    assert manifest_hash(read_manifest(work)) == manifest_hash(df)
