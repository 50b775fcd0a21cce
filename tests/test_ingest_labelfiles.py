"""Ingest: malformed label files exit 2 with one line; one bad row is that row's status."""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrad.cli import main
from cxrad.errors import LabelFileError
from cxrad.ingest import ingest

NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
IEEE_HEADER = "patientid,offset,sex,age,finding,view,modality,folder,filename"


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def nih(root: Path, rows: list[str], name: str = "Data_Entry_2017_v2020.csv") -> Path:
    for i in range(3):
        _png(root / "images" / f"0000000{i}_000.png", i)
    (root / name).write_text("\n".join([NIH_HEADER, *rows]) + "\n")
    return root


GOOD = [
    "00000000_000.png,No Finding,0,1,50,M,PA,1,1,0.1,0.1",
    "00000001_000.png,Mass,0,2,40,F,PA,1,1,0.1,0.1",
    "00000002_000.png,Effusion|Mass,0,3,30,F,AP,1,1,0.1,0.1",
]


def ieee(root: Path, rows: list[str]) -> Path:
    for i in range(2):
        _png(root / "images" / f"x{i}.png", 10 + i)
    (root / "metadata.csv").write_text("\n".join([IEEE_HEADER, *rows]) + "\n")
    return root


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def _malformed(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (dataset root, a regex the one-line error must match)."""
    cases: dict[str, tuple[Path, str]] = {}
    r = nih(tmp / "renamed", [])
    f = r / "Data_Entry_2017_v2020.csv"
    f.write_text(f.read_text().replace("Finding Labels", "Finding Label") + GOOD[0] + "\n")
    cases["renamed"] = (r, r"line 1: no column 'Finding Labels'\. Did you mean 'Finding Label'")
    r = nih(tmp / "semicolon", [g.replace(",", ";") for g in GOOD])
    f = r / "Data_Entry_2017_v2020.csv"
    f.write_text(f.read_text().replace(",", ";"))
    cases["semicolon"] = (r, r"line 1: columns are separated by semicolons; expected commas")
    r = nih(tmp / "tab", [])
    f = r / "Data_Entry_2017_v2020.csv"
    f.write_text("\n".join([NIH_HEADER, *GOOD]).replace(",", "\t") + "\n")
    cases["tab"] = (r, r"separated by tabs")
    r = nih(tmp / "latin1", [])
    f = r / "Data_Entry_2017_v2020.csv"
    f.write_bytes(
        "\n".join([NIH_HEADER, *GOOD[:2], GOOD[2].replace(",F,", ",Fé,")]).encode("latin-1")
    )
    cases["latin1"] = (r, r"line 4: byte 0xe9 is not UTF-8; expected UTF-8")
    r = nih(tmp / "fakegz", GOOD, name="Data_Entry_2017_v2020.csv.gz")
    cases["fakegz"] = (r, r"named \.gz but is not gzip-compressed")
    r = nih(tmp / "cutgz", [], name="Data_Entry_2017_v2020.csv.gz")
    data = gzip.compress(("\n".join([NIH_HEADER, *GOOD]) + "\n").encode())
    (r / "Data_Entry_2017_v2020.csv.gz").write_bytes(data[: len(data) // 2])
    cases["cutgz"] = (r, r"gzip data is damaged or cut short")
    r = ieee(
        tmp / "ragged",
        [
            "p1,0,M,50,COVID-19,PA,X-ray,images,x0.png",
            "p2,0,F,40,No Finding,PA,X-ray,images,x1.png,extra",
        ],
    )
    cases["ragged"] = (r, r"metadata\.csv: line 3: 10 fields, but the header has 9")
    return cases


def test_malformed_label_files_exit_2_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    for name, (root, pattern) in _malformed(tmp_path / "in").items():
        code, err = run_cli(["ingest", str(root), "--out", str(tmp_path / name), "--no-hash"], monkeypatch, capsys)  # fmt: skip
        assert code == 2, (name, err)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        text = " ".join(err.split())
        assert "Traceback" not in err and str(root.name) in text, (name, err)
        assert re.search(pattern, text), (name, err)
        assert len(lines) <= 3, (name, err)  # one message (a long one may wrap on a narrow tty)


def test_one_bad_row_is_its_status_and_the_rest_goes_on(tmp_path: Path) -> None:
    root = nih(
        tmp_path / "nih", [GOOD[0], "00000001_000.png,No Finding|Mass,0,2,40,F,PA,1,1,0,0", GOOD[2]]
    )
    df, summary = ingest(root, hash_images=False)
    status = dict(zip(df["image_id"].str.split("/").str[-1], df["status"], strict=True))
    assert status["00000000_000.png"] == "ok" and status["00000002_000.png"] == "ok"
    assert status["00000001_000.png"].startswith("unmapped label: 'No Finding' together")
    assert summary["ok"] == 2 and summary["rows"] == 3


def test_v2020_beats_the_older_file_and_duplicates_are_noted(tmp_path: Path) -> None:
    root = nih(tmp_path / "nih", [GOOD[0], GOOD[1], GOOD[1].replace("Mass", "Nodule"), GOOD[2]])
    old = [g.replace("No Finding", "Hernia") for g in GOOD]
    (root / "Data_Entry_2017.csv").write_text("\n".join([NIH_HEADER, *old]) + "\n")
    df, summary = ingest(root, hash_images=False)
    first = df[df["image_id"].str.endswith("00000000_000.png")].iloc[0]
    assert first["NORMAL"] == 1 and first["label_source"] == "Data_Entry_2017_v2020.csv"
    second = df[df["image_id"].str.endswith("00000001_000.png")].iloc[0]
    assert second["MASS"] == 1 and second["NODULE"] == 0  # the first of the repeated rows
    notes = " ".join(summary["notes"])
    assert "used Data_Entry_2017_v2020.csv (newest), not Data_Entry_2017.csv" in notes
    assert "1 repeated row(s)" in notes


def test_empty_patient_id_is_null_with_a_note(tmp_path: Path) -> None:
    root = nih(
        tmp_path / "nih",
        [GOOD[0], GOOD[1].replace(",2,40,", ",,40,"), GOOD[2].replace(",3,30,", ", ,30,")],
    )
    df, summary = ingest(root, hash_images=False)
    pids = dict(zip(df["image_id"].str.split("/").str[-1], df["patient_id"], strict=True))
    assert pids["00000000_000.png"] == "nih:1"
    assert pids["00000001_000.png"] is pd.NA and pids["00000002_000.png"] is pd.NA
    assert df["patient_id"].isna().sum() == 2
    assert any("2 row(s) with an empty Patient ID" in n for n in summary["notes"])


def test_good_gzip_label_file_reads(tmp_path: Path) -> None:
    root = nih(tmp_path / "nih", [])
    (root / "Data_Entry_2017_v2020.csv").unlink()
    data = gzip.compress(("\n".join([NIH_HEADER, *GOOD]) + "\n").encode())
    (root / "Data_Entry_2017_v2020.csv.gz").write_bytes(data)
    df, _ = ingest(root, hash_images=False)
    assert (df["status"] == "ok").sum() == 3


def test_label_file_error_is_an_ingest_error(tmp_path: Path) -> None:
    root, _ = _malformed(tmp_path)["ragged"]
    with pytest.raises(LabelFileError, match="line 3"):
        ingest(root, hash_images=False)
