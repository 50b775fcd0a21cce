"""Each model declares its smallest input, and training refuses a smaller --size before any data.

Issue #15, group 8: seed-fcn below 128 px and densenet121 below 32 px used to crash after the
data had loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cxrad.cli import main
from cxrad.errors import ModelError
from cxrad.models import check_input_size, create_model, get_spec, list_models
from cxrad.models.oneclass import SPEC as ONE_CLASS_SPEC
from cxrad.models.oneclass import build_one_class

DECLARED = {"seed-fcn": 128, "densenet121": 32, "efficientnet-b0": 32, "cxr-fast": 8}


def _step(net: torch.nn.Module, size: int) -> torch.Tensor:
    net.train()
    y = net(torch.rand(2, 1, size, size))
    y.sum().backward()
    return y


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_at_its_declared_minimum(name: str) -> None:
    spec = get_spec(name)
    assert spec.min_input_size >= 8
    if name in DECLARED:
        assert spec.min_input_size == DECLARED[name]
    torch.manual_seed(0)
    y = _step(create_model(name, num_classes=3), spec.min_input_size)
    assert y.shape == (2, 3) and torch.isfinite(y).all()
    check_input_size(name, spec.min_input_size)  # the minimum itself is allowed


def test_one_class_runs_at_its_declared_minimum() -> None:
    model = build_one_class()
    model.eval()
    with torch.no_grad():
        y = model(torch.rand(2, 1, ONE_CLASS_SPEC.min_input_size, ONE_CLASS_SPEC.min_input_size))
    assert y.shape[0] == 2 and torch.isfinite(y).all()


def test_the_seed_fcn_minimum_is_tight() -> None:
    with pytest.raises(RuntimeError):
        _step(create_model("seed-fcn", num_classes=3), 127)


def test_smaller_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ModelError) as e:
        check_input_size("seed-fcn", 64)
    msg = str(e.value)
    assert "seed-fcn needs inputs of at least 128 px" in msg and "--size 64" in msg
    assert "use --size 128 or more; at 64 px use cxr-fast, densenet121" in msg
    assert "min_input_size" not in get_spec("seed-fcn").contract()  # not part of a run's config


@pytest.mark.parametrize(("model", "size", "needed"), [("seed-fcn", 64, 128), ("densenet121", 16, 32)])  # fmt: skip
def test_train_cli_checks_the_size_before_reading_data(
    tmp_path: Path, monkeypatch, capsys, model: str, size: int, needed: int
) -> None:
    empty = tmp_path / "work"  # no manifest, no cache: any data access would fail differently
    empty.mkdir()
    argv = ["cxrad", "train", str(empty), "--model", model, "--size", str(size),
            "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and "Traceback" not in err
    assert f"{model} needs inputs of at least {needed} px" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
