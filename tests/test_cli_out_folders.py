"""``--out`` that is a file or a read-only folder: one line and exit 2, before any work (#15, 8)."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrad.cli import main
from helpers import read_only_folder

app_module = importlib.import_module("cxrad.cli.app")  # the module, not the Typer app


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().err)  # typer's usage box
    return int(exc.value.code or 0), " ".join(err.split())


def commands(tmp: Path, out: Path) -> dict[str, list[str]]:
    work, data = tmp / "work", tmp / "films"
    work.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    film = data / "a.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(film)
    return {
        "train": ["train", str(work), "--out", str(out), "--no-progress"],
        "evaluate": ["evaluate", "default", "--data", str(work), "--out", str(out)],
        "adapt": ["adapt", "default", "--data", str(data), "--out", str(out)],
        "segment": ["segment", str(film), "--out", str(out), "--no-progress"],
        "predict": ["predict", str(film), "--heatmaps", str(out), "--no-progress"],
        "ingest": ["ingest", str(data), "--out", str(out), "--no-hash"],
    }


@pytest.mark.parametrize("command", ["train", "evaluate", "adapt", "segment", "predict", "ingest"])
def test_out_is_a_file(tmp_path: Path, monkeypatch, capsys, command: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code, err = run_cli(commands(tmp_path, afile)[command], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert "afile" in err and "is a file" in err  # ours, or typer's for file_okay=False
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize("command", ["train", "evaluate", "segment", "predict"])
def test_read_only_out_is_refused_before_work(tmp_path: Path, monkeypatch, capsys, command: str) -> None:  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    args = commands(tmp_path, out)[command]
    monkeypatch.setattr(
        app_module.os, "access", lambda p, mode: not (Path(p) == out and mode & os.W_OK)
    )
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{out} is read-only; choose a folder you can write to" in err


def test_out_in_a_read_only_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    command = "segment"  # one that makes --out at once (train, adapt: the run lock makes it)
    with read_only_folder(tmp_path / "ro", monkeypatch) as ro:
        code, err = run_cli(commands(tmp_path, ro / "new")[command], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert "cannot be created (Permission denied)" in err and not (ro / "new").exists()


@pytest.mark.parametrize("command", ["train", "adapt", "ensemble"])
def test_a_refused_run_command_leaves_no_out_folder(tmp_path: Path, monkeypatch, capsys, command: str) -> None:  # fmt: skip
    out = tmp_path / "runs" / "new"
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    ensemble = ["ensemble", *runs, "--data", str(tmp_path / "work"), "--out", str(out)]
    args = {**commands(tmp_path, out), "ensemble": ensemble}[command]
    code, err = run_cli(args, monkeypatch, capsys)  # no manifest; no class folders; no runs
    assert code == 2 and "Traceback" not in err and "error:" in err
    assert not (tmp_path / "runs").exists()
