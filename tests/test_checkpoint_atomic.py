"""Checkpoints on a full disk (issue #15, group 6): whole or absent, never half a file to resume."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
import torch

from cxrad.train import checkpoints, train
from cxrad.train.checkpoints import AtomicCheckpointIO, drop_partial_checkpoints
from helpers import make_tiny_work
from test_train_run import TINY, kill_after_first_epoch


def _half_then_enospc(obj: object, f: str | Path) -> None:
    Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 100)  # the start of a zip, cut short
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 0, "state_dict": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoints.torch, "save", _half_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["epoch"] == 0


def test_partial_checkpoints_and_temps_are_removed(tmp_path: Path) -> None:
    d = tmp_path / "checkpoints"
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, d / "best-epoch003.ckpt")
    good = (d / "best-epoch003.ckpt").read_bytes()
    (d / "last.ckpt").write_bytes(good[: len(good) // 2])  # truncated by a full disk
    (d / ".last.ckpt.tmp").write_bytes(b"junk")
    (d / "empty.ckpt").write_bytes(b"")
    removed = drop_partial_checkpoints(d)
    assert sorted(p.name for p in removed) == [".last.ckpt.tmp", "empty.ckpt", "last.ckpt"]
    assert sorted(p.name for p in d.iterdir()) == ["best-epoch003.ckpt"]
    assert drop_partial_checkpoints(tmp_path / "nowhere") == []


def test_resume_ignores_a_truncated_last_checkpoint(tmp_path: Path, caplog) -> None:
    work = make_tiny_work(tmp_path / "w", n_per_class=8, size=32)
    out = kill_after_first_epoch(work, tmp_path / "run")
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:2000])
    with caplog.at_level(logging.WARNING, logger="cxrad.train.checkpoints"):
        train(work, out=out, max_epochs=2, resume=True, **TINY)
    assert "removing the partial checkpoint" in caplog.text and "last.ckpt" in caplog.text
    config = json.loads((out / "config.json").read_text())
    assert config["epochs_run"] == 2  # started over: the truncated epoch was not loaded
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    assert not [p for p in (out / "checkpoints").iterdir() if ".tmp" in p.name]
