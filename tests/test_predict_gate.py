"""Stage 9, predict + stage 5, gate: rejected inputs get a record with a reason, and exit code 3."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrad.cli import main
from cxrad.gate import InputGate, read_info
from cxrad.models import create_model, save_run
from cxrad.predict import Predictor
from helpers import make_dicom, synthetic_xray

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gate_data

CLASSES = ["EFFUSION", "NORMAL", "PNEUMONIA"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = {
        "model": {"name": "seed-fcn", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": 128, "mode": "letterbox"},
        "thresholds": {"EFFUSION": 0.0, "NORMAL": 1.0, "PNEUMONIA": 1.0},
    }
    model = create_model("seed-fcn", num_classes=len(CLASSES))
    return save_run(tmp_path_factory.mktemp("run"), model, config)


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """A plain film, a tiny one, a blank one, a CT DICOM and an unreadable file."""
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(synthetic_xray("NORMAL", rng, side=96)).save(d / "a_film.png")
    Image.fromarray(synthetic_xray("NORMAL", rng, side=40)).save(d / "b_tiny.png")
    Image.fromarray(np.full((100, 100), 128, np.uint8)).save(d / "c_blank.png")
    make_dicom(d / "d_ct.dcm", np.full((64, 64), 900, np.uint16), 12, Modality="CT")
    return d


def _cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_predict_many_rejects_with_reasons(run: Path, inputs: Path) -> None:
    p = Predictor.from_run(run, gate=InputGate(None))  # tags + rules, no classifier
    recs = {Path(r["image"]).name: r for r in p.predict_many([inputs])}
    assert {k: (r["status"], r.get("code")) for k, r in recs.items()} == {
        "a_film.png": ("ok", None),
        "b_tiny.png": ("rejected", "too_small"),
        "c_blank.png": ("rejected", "blank"),
        "d_ct.dcm": ("rejected", "not_xray_modality"),
    }
    assert recs["a_film.png"]["gate"] == {
        "passed": True,
        "code": None,
        "score": None,
        "by": "rules",
    }
    for name in ("b_tiny.png", "c_blank.png", "d_ct.dcm"):
        r = recs[name]
        assert r["findings"] == [] and r["probabilities"] == {} and r["normal"] is None
        assert r["gate"]["passed"] is False and r["gate"]["code"] == r["code"]
        assert r["reason"]
    assert recs["d_ct.dcm"]["gate"]["by"] == "dicom_tags"
    json.dumps(list(recs.values()), allow_nan=False)  # JSON-safe


def test_predict_one_array_and_pil_go_through_the_gate(run: Path) -> None:
    p = Predictor.from_run(run, gate=InputGate(None))
    film = synthetic_xray("NORMAL", np.random.default_rng(3), side=96)
    assert p.predict(film)["status"] == "ok"
    assert p.predict(film[:30])["code"] == "too_small"
    colour = np.stack([film, np.roll(film, 30, 1), 255 - film], -1)
    assert p.predict(Image.fromarray(colour))["code"] == "not_radiograph"
    assert p.predict(colour)["code"] == "not_radiograph"
    off = Predictor.from_run(run)  # the library default: no gate
    assert off.gate is None and off.predict(film[:30])["status"] == "ok"


def test_cli_exit_3_when_rejected_and_none_failed(
    run: Path, inputs: Path, capsys, monkeypatch
) -> None:
    args = ["predict", str(inputs), "--model", str(run), "--no-progress", "--format", "jsonl"]
    code, out, err = _cli(args, capsys, monkeypatch)
    assert code == 3, err
    recs = [json.loads(line) for line in out.splitlines()]
    by = {Path(r["image"]).name: r for r in recs}
    assert by["d_ct.dcm"]["code"] == "not_xray_modality"
    assert by["b_tiny.png"]["code"] == "too_small" and by["c_blank.png"]["code"] == "blank"
    assert "4 image(s):" in err and "rejected by the input gate" in err
    code, out, _ = _cli([*args, "--no-gate"], capsys, monkeypatch)
    assert code == 0 and all(json.loads(x)["status"] == "ok" for x in out.splitlines())


def test_cli_exit_1_wins_over_rejections(run: Path, inputs: Path, capsys, monkeypatch) -> None:
    (inputs / "e_bad.png").write_bytes(b"not a png")
    code, out, _ = _cli(["predict", str(inputs), "--model", str(run)], capsys, monkeypatch)
    recs = json.loads(out)
    assert code == 1
    assert sorted(r["status"].split(":")[0] for r in recs).count("rejected") >= 3


# -- real files ----------------------------------------------------------------------------------

NON_XRAY = {"CT", "MR", "US", "NM", "SEG"}


def test_cli_rejects_synthetic_non_xray_dicoms_by_tags(
    run: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The pydicom-data test below on files built here: the tags decide, so none fails."""
    px = np.full((64, 64), 900, np.uint16)
    files = [make_dicom(tmp_path / f"{m}.dcm", px, 12, Modality=m) for m in sorted(NON_XRAY)]
    cut = tmp_path / "MR_cut.dcm"  # pixel data cut short: it cannot be decoded
    cut.write_bytes(files[1].read_bytes()[:-4000])
    args = ["predict", *map(str, [*files, cut]), "--model", str(run), "--format", "jsonl"]
    code, out, err = _cli([*args, "--no-progress"], capsys, monkeypatch)
    assert code == 3, err  # all rejected, none failed: not even the undecodable one
    recs = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["image"]).name for r in recs] == [*(f.name for f in files), cut.name]
    assert {(r["status"], r["code"], r["gate"]["by"]) for r in recs} == {
        ("rejected", "not_xray_modality", "dicom_tags")
    }
    code, out, _ = _cli([*args, "--no-progress", "--no-gate"], capsys, monkeypatch)
    assert code == 1 and json.loads(out.splitlines()[-1])["status"] == "error"


@pytest.mark.data
def test_cli_rejects_pydicom_data_ct_mr_us_by_tags(
    shared_data: Path, run: Path, capsys, monkeypatch
) -> None:
    root = shared_data / "fixtures" / "pydicom-data"
    files = [p for p in sorted(root.glob("*.dcm")) if read_info(p)["Modality"] in NON_XRAY]
    assert len(files) >= 40
    code, out, err = _cli(
        ["predict", *map(str, files), "--model", str(run), "--format", "jsonl", "--no-progress"],
        capsys,
        monkeypatch,
    )
    assert code == 3, err  # all rejected, none failed: not even the undecodable ones
    recs = [json.loads(line) for line in out.splitlines()]
    assert len(recs) == len(files)
    assert {(r["status"], r["code"], r["gate"]["by"]) for r in recs} == {
        ("rejected", "not_xray_modality", "dicom_tags")
    }


def test_cli_rejects_the_pydicom_wheels_ct_mr_us_by_tags(run: Path, capsys, monkeypatch) -> None:
    """The data-free twin of the test above: the real DICOMs that pydicom itself ships."""
    from pydicom.data.data_manager import DATA_ROOT

    root = Path(DATA_ROOT) / "test_files"
    files = [p for p in sorted(root.glob("*.dcm")) if read_info(p)["Modality"] in NON_XRAY]
    assert len(files) == 24  # 3 CT, 10 MR, 5 US, 4 NM, 2 SEG
    code, out, err = _cli(
        ["predict", *map(str, files), "--model", str(run), "--format", "jsonl", "--no-progress"],
        capsys,
        monkeypatch,
    )
    assert code == 3, err  # all rejected, none failed: not even the ones without pixels
    recs = [json.loads(line) for line in out.splitlines()]
    assert len(recs) == len(files)
    assert {(r["status"], r["code"], r["gate"]["by"]) for r in recs} == {
        ("rejected", "not_xray_modality", "dicom_tags")
    }


@pytest.mark.data
def test_real_cr_dicoms_chest_passes_extremity_rejected(shared_data: Path) -> None:
    root = shared_data / "fixtures" / "pydicom-data"
    gate = InputGate.default()
    chest, _ = gate.check_file(root / "RG1_J2KI.dcm")
    assert chest.passed and chest.by == "classifier", chest
    limb, pixels = gate.check_file(root / "RG3_J2KR.dcm")
    assert (limb.code, limb.by, pixels) == ("not_chest", "dicom_tags", None)


@pytest.mark.data
def test_cli_rejects_unifesp_non_chest_test_patients(
    shared_data: Path, run: Path, capsys, monkeypatch
) -> None:
    """Other body parts of UNIFESP patients the gate never trained on are rejected as not_chest."""
    files = [
        it["path"]
        for it in gate_data.unifesp_items(shared_data / "unifesp-bodypart" / "x_ray")
        if it["split"] == "test" and it["label"] == "not_chest" and it["kind"] != "part_14"
    ]
    assert len(files) >= 80
    code, out, err = _cli(
        ["predict", *files, "--model", str(run), "--format", "jsonl", "--no-progress"],
        capsys,
        monkeypatch,
    )
    recs = [json.loads(line) for line in out.splitlines()]
    assert code == 3, err
    codes = [r["code"] for r in recs]
    assert sum(r["status"] == "rejected" for r in recs) >= 0.97 * len(recs), codes
    assert codes.count("not_chest") >= 0.93 * len(recs), codes
