"""A damaged run (truncated model.safetensors, garbage config.json) is one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrad.cli import main
from cxrad.errors import ModelError
from cxrad.models import load_run
from test_predict import make_run


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_damaged_run_is_one_line(tmp_path: Path, damage: str, monkeypatch, capsys) -> None:
    run = make_run(tmp_path / "run")
    if damage == "weights":
        w = run / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100])
    else:
        (run / "config.json").write_text('{"model": {"name": "seed-fcn"')
    with pytest.raises(ModelError):
        load_run(run)
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(img)
    code, err = _cli(["predict", str(img), "--model", str(run), "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert ("safetensors" if damage == "weights" else "config.json") in err


def test_damaged_ood_statistics_are_one_line(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import torch

    from cxrad.models import RunConfig
    from cxrad.models.ood import GaussianOOD, attach_ood, load_ood

    run = make_run(tmp_path / "run")
    attach_ood(run, GaussianOOD().fit(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)).double().numpy()))  # fmt: skip
    assert load_ood(run, RunConfig.load(run)) is not None
    ood = run / "ood.safetensors"
    ood.write_bytes(ood.read_bytes()[:40])
    with pytest.raises(ModelError, match="refit with `cxrad fit-ood"):
        load_ood(run, RunConfig.load(run))
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(img)
    code, err = _cli(["predict", str(img), "--model", str(run), "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "Traceback" not in err and "ood.safetensors" in err
