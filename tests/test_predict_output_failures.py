"""Predict's stdout stays valid JSON when a run fails mid-way (issue #15, group 6)."""

from __future__ import annotations

import errno
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cxrad.cli import main
from cxrad.predict import predictor as predictor_module
from cxrad.predict import write_records
from test_predict import make_run

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def rec(i: int, **extra: Any) -> dict[str, Any]:
    return {"image": f"f{i}.png", "status": "ok", "findings": [], "probabilities": {}, **extra}


def failing_after(n: int, error: BaseException) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield rec(i)
    raise error


@pytest.mark.parametrize("error", [ENOSPC, KeyboardInterrupt(), RuntimeError("bug")])
def test_records_failing_mid_run_leave_a_closed_array(error: BaseException) -> None:
    out = io.StringIO()
    with pytest.raises(type(error)):
        write_records(failing_after(2, error), out, "json")
    assert [r["image"] for r in json.loads(out.getvalue())] == ["f0.png", "f1.png"]


def test_a_record_that_cannot_be_written_leaves_no_dangling_comma() -> None:
    out = io.StringIO()
    with pytest.raises(TypeError):
        write_records(iter([rec(0), rec(1, extra=object())]), out, "json")
    assert [r["image"] for r in json.loads(out.getvalue())] == ["f0.png"]


class FullStream(io.StringIO):
    """stdout on a full disk: every write after the first ``n`` fails."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def write(self, s: str) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= 1
        return super().write(s)


def test_a_full_stdout_raises_its_own_error() -> None:
    out = FullStream(2)
    with pytest.raises(OSError) as e:
        write_records(iter([rec(0), rec(1), rec(2)]), out, "json")
    assert e.value.errno == errno.ENOSPC and out.getvalue().startswith("[\n{")


def test_cli_heatmaps_on_a_full_disk_exit_2_with_valid_stdout(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    run = make_run(tmp_path / "run")
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.png")
        Image.fromarray(np.full((128, 128), 40 * i + 20, np.uint8)).save(files[-1])
    calls = {"n": 0}

    def heatmaps(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "maps/x.png"))

    monkeypatch.setattr(predictor_module, "write_heatmaps", heatmaps)
    argv = ["cxrad", "predict", *map(str, files), "--model", str(run), "--no-gate",
            "--heatmaps", str(tmp_path / "maps"), "--batch-size", "1", "--no-progress"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    assert exc.value.code == 2 and "Traceback" not in out.err
    assert "No space left on device" in out.err and "free some disk space" in out.err
    assert [r["image"] for r in json.loads(out.out)] == [str(files[0])]
