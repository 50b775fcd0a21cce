"""Stage 6, models: RunConfig loads every config cxrad has written, and rebuilds what the run recorded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrad.errors import ModelError
from cxrad.models import (
    CONFIG_VERSION,
    DecisionStep,
    OperatingPoint,
    RunConfig,
    create_model,
    load_run,
    save_run,
)
from cxrad.models.run import DEFAULT_RUN

REPO = Path(__file__).resolve().parents[1]
OLD_CONFIGS = sorted((REPO / "benchmarks" / "results").glob("*/*.config.json"))
OLD_CONFIGS.append(REPO / "tests" / "fixtures" / "configs" / "default-v1.config.json")
SHIPPED = DEFAULT_RUN / "config.json"

OLDEST = {  # the first layout: no version, input, preprocess, activation or threshold method
    "model": {"name": "cxr-fast"},
    "classes": ["NORMAL", "PNEUMONIA"],
    "thresholds": {"NORMAL": 0.4, "PNEUMONIA": 0.6},
}


@pytest.mark.parametrize("path", OLD_CONFIGS, ids=lambda p: p.name)
def test_every_written_config_loads_and_round_trips(path: Path) -> None:
    raw = json.loads(path.read_text())
    cfg = RunConfig.from_dict(raw)
    assert cfg.classes == tuple(raw["classes"])
    assert cfg.thresholds() == pytest.approx(raw["thresholds"])
    assert cfg.preprocess.size == raw["preprocess"]["size"]
    assert cfg.activation == raw.get("activation", "sigmoid")
    assert cfg.input.mean == raw["input"]["mean"]
    # old runs keep their behaviour: findings independent of triage, triage from NORMAL's cut-off
    assert cfg.decision.policy == "independent"
    if "NORMAL" in cfg.classes:
        assert cfg.decision.triage.threshold == pytest.approx(1 - raw["thresholds"]["NORMAL"])
    d = cfg.to_dict()
    assert d["version"] == CONFIG_VERSION
    assert RunConfig.from_dict(d).to_dict() == d
    assert "members" not in raw or d["members"] == raw["members"]  # extra facts are kept
    json.dumps(d, allow_nan=False)


def test_the_shipped_config_is_current_and_complete() -> None:
    raw = json.loads(SHIPPED.read_text())
    cfg = RunConfig.from_dict(raw)
    assert raw["version"] == CONFIG_VERSION
    assert set(cfg.operating_points) == set(cfg.classes)
    assert all(op.method == "spec" for op in cfg.operating_points.values())
    assert cfg.decision.policy == "triage_gate"
    assert cfg.preprocess.size == 192  # cxr-fast is fully convolutional; trained at 192 px
    assert cfg.ood is not None and (DEFAULT_RUN / cfg.ood["file"]).is_file()
    d = cfg.to_dict()
    assert RunConfig.from_dict(d).to_dict() == d
    json.dumps(d, allow_nan=False)


def test_oldest_config_fills_in_from_the_registry() -> None:
    cfg = RunConfig.from_dict(OLDEST)
    assert cfg.input.input_size == 256 and cfg.preprocess.size == 256
    assert cfg.preprocess.mode == "letterbox" and cfg.preprocess.crop == "none"
    assert cfg.operating_points["PNEUMONIA"] == OperatingPoint(0.6, "fixed")
    assert cfg.temperatures() == (1.0, 1.0) and cfg.task == "multilabel"


def test_scalar_temperature_becomes_one_per_class() -> None:
    cfg = RunConfig.from_dict({**OLDEST, "temperature": 2.0})
    assert cfg.temperature == (2.0, 2.0)
    assert cfg["temperature"] == 2.0  # the legacy view still reads as before


def test_newer_and_broken_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="newer"):
        RunConfig.from_dict({**OLDEST, "version": CONFIG_VERSION + 1})
    with pytest.raises(ModelError, match="classes"):
        RunConfig.from_dict({"model": {"name": "cxr-fast"}})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a valid"):
        RunConfig.load(tmp_path)


def test_nan_never_reaches_the_file(tmp_path: Path) -> None:
    cfg = RunConfig.from_dict({**OLDEST, "val_metrics": {"macro_auroc": math.nan}})
    text = cfg.evolve(ood={"threshold": math.inf}).to_json()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["val_metrics"]["macro_auroc"] is None


def test_load_run_uses_the_recorded_normalisation(tmp_path: Path) -> None:
    model = create_model("cxr-fast", num_classes=2).eval()
    save_run(tmp_path, model, OLDEST)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["input"]["mean"], raw["input"]["std"] = 0.3, 0.7  # as if the registry had changed since
    (tmp_path / "config.json").write_text(json.dumps(raw))
    loaded, cfg = load_run(tmp_path)
    assert cfg.input.mean == 0.3 and loaded.spec.std == 0.7
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        want = model.net((x - 0.3) / 0.7)
        assert torch.allclose(loaded(x), want, atol=1e-6)


def test_new_fields_survive_a_save(tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(
        {**OLDEST, "task": "one-class", "held_out_sources": ["nih"], "ood": {"file": "ood.npz"}}
    )
    cfg.save(tmp_path)
    back = RunConfig.load(tmp_path)
    assert back.task == "one-class" and back.held_out_sources == ("nih",)
    assert back.ood == {"file": "ood.npz"}


def _gate_config() -> RunConfig:
    raw = {
        "model": {"name": "cxr-fast"},
        "classes": ["EFFUSION", "NORMAL", "PNEUMONIA"],
        "temperature": [2.0, 1.0, 1.0],
        "operating_points": {
            c: {"threshold": 0.5, "method": "spec", "target": 0.95}
            for c in ("EFFUSION", "NORMAL", "PNEUMONIA")
        },
        "decision": {
            "policy": "triage_gate",
            "score": "not_normal",
            "triage": {"threshold": 0.5, "method": "spec"},
        },
        "version": 2,
    }
    return RunConfig.from_dict(raw)


def test_decision_step_calibrates_gates_and_sorts() -> None:
    step = DecisionStep(_gate_config())
    logits = np.array(
        [
            [4.0, -3.0, 3.0],  # abnormal: both findings, sorted by probability
            [4.0, 3.0, 3.0],  # triage says normal: the gate clears its findings
        ]
    )
    d = step(logits)
    assert d.probabilities[0, 0] == pytest.approx(1 / (1 + math.exp(-2.0)))  # T = 2 on EFFUSION
    first, second = step.records(d)
    assert first["normal"] is False
    assert [f["class"] for f in first["findings"]] == ["PNEUMONIA", "EFFUSION"]
    assert first["positive"] == ["PNEUMONIA", "EFFUSION"]
    assert first["triage"]["score"] == pytest.approx(1 - 1 / (1 + math.exp(3.0)))
    assert second["normal"] is True and second["findings"] == [] and second["positive"] == []
    assert d.over[1].sum() == 2  # the findings were there before the gate
    json.dumps(first, allow_nan=False)


def test_independent_policy_keeps_findings_on_normal_films() -> None:
    cfg = _gate_config()
    cfg = cfg.evolve(
        decision=cfg.decision.__class__("independent", "not_normal", cfg.decision.triage)
    )
    rec = DecisionStep(cfg).records(DecisionStep(cfg)(np.array([[4.0, 3.0, 3.0]])))[0]
    assert rec["normal"] is True and len(rec["findings"]) == 2
