"""Paths are stored absolute and normalised; a moved dataset is found again with --relocate;
zero usable rows is an error that says why (ingest and preprocess)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from cxrad.cli import main
from cxrad.manifest import read_manifest
from helpers import read_only_folder
from test_ingest_cli import tiny_tree


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), " ".join(capsys.readouterr().err.split())


def test_relative_input_is_stored_without_dotdot(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_tree(tmp_path / "data" / "mine", {"Normal": 2, "tb": 1})
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    code, err = run_cli(["ingest", "../data/mine", "--out", "w", "--no-hash"], monkeypatch, capsys)
    assert code == 0, err
    paths = read_manifest(tmp_path / "cwd" / "w")["path"]
    assert all(".." not in p and os.path.isabs(p) and os.path.isfile(p) for p in paths)


def test_moved_dataset_is_found_again(tmp_path: Path, monkeypatch, capsys) -> None:
    old = tiny_tree(tmp_path / "old" / "mine", {"Normal": 2, "tb": 2})
    work = tmp_path / "w"
    code, _ = run_cli(
        ["ingest", str(old), "--out", str(work), "--workers", "1"], monkeypatch, capsys
    )
    assert code == 0
    shutil.move(tmp_path / "old", tmp_path / "new")
    code, err = run_cli(["preprocess", str(work), "--size", "16", "-j", "1", "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "none of the 4 ok rows could be cached (missing file: 4)" in err
    assert "--relocate" in err
    spec = f"{tmp_path / 'old'}={tmp_path / 'new'}"
    code, err = run_cli(["ingest", "--relocate", spec, "--out", str(work)], monkeypatch, capsys)
    assert code == 0 and "relocated 4 rows" in err and "4 files found" in err
    assert all(p.startswith(str(tmp_path / "new")) for p in read_manifest(work)["path"])
    code, err = run_cli(["preprocess", str(work), "--size", "16", "-j", "1", "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 0 and "cached 4 images" in err


def test_relocate_errors_say_what_is_expected(tmp_path: Path, monkeypatch, capsys) -> None:
    old = tiny_tree(tmp_path / "old" / "mine", {"Normal": 2})
    work = tmp_path / "w"
    run_cli(["ingest", str(old), "--out", str(work), "--no-hash"], monkeypatch, capsys)
    code, err = run_cli(["ingest", "--relocate", "nope", "--out", str(work)], monkeypatch, capsys)
    assert code == 2 and "expects OLD=NEW" in err
    code, err = run_cli(["ingest", "--relocate", f"/elsewhere={tmp_path}", "--out", str(work)], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "no manifest row lies under /elsewhere" in err
    code, err = run_cli(["ingest", "--out", str(work)], monkeypatch, capsys)
    assert code == 2 and "no dataset folder given" in err


def test_zero_usable_rows_is_an_error(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "ieee"
    (root / "images").mkdir(parents=True)
    pd.DataFrame(
        {"patientid": ["1"], "finding": ["COVID-19"], "view": ["L"], "modality": ["X-ray"],
         "folder": ["images"], "filename": ["a.png"]}
    ).to_csv(root / "metadata.csv", index=False)  # fmt: skip
    code, err = run_cli(["ingest", str(root), "--out", str(tmp_path / "w"), "--no-hash"], monkeypatch, capsys)  # fmt: skip
    assert (
        code == 2
        and "no usable row: all 1 rows have a reason status: excluded: lateral view" in err
    )


def test_out_is_a_file(tmp_path: Path, monkeypatch, capsys) -> None:
    data = tiny_tree(tmp_path / "mine", {"Normal": 2})
    (tmp_path / "afile").write_text("x")
    code, err = run_cli(["ingest", str(data), "--out", str(tmp_path / "afile"), "--no-hash"], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "afile" in err and "Traceback" not in err


def test_out_is_read_only(tmp_path: Path, monkeypatch, capsys) -> None:
    data = tiny_tree(tmp_path / "mine", {"Normal": 2})
    with read_only_folder(tmp_path / "ro", monkeypatch) as ro:
        code, err = run_cli(["ingest", str(data), "--out", str(ro / "w"), "--no-hash"], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert f"--out {ro / 'w'} is read-only; choose a folder you can write to" in err
    assert not (ro / "w").exists()
