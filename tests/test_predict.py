"""Stage 9, predict: the Python API and the ``cxrad predict`` command, on synthetic and real files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrad.cli import main
from cxrad.errors import DecodeError, PredictError
from cxrad.labels import abnormal_score
from cxrad.models import create_model, save_run
from cxrad.predict import Predictor, find_inputs
from helpers import make_dicom

CLASSES = ["EFFUSION", "NORMAL", "PNEUMONIA"]
SIZE = 128  # the seed FCN halves seven times: 128 px is its smallest input
RECORD_KEYS = {
    "image", "path", "status", "code", "reason", "normal", "triage", "findings", "probabilities",
    "gate", "ood", "run", "positive", "abnormal_score",
}  # fmt: skip


def make_run(path: Path, thresholds: dict[str, float] | None = None) -> Path:
    torch.manual_seed(0)
    model = create_model("seed-fcn", num_classes=len(CLASSES))
    config = {
        "model": {"name": "seed-fcn", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": SIZE, "mode": "letterbox"},
        "thresholds": thresholds or {"EFFUSION": 0.0, "NORMAL": 1.0, "PNEUMONIA": 1.0},
    }
    return save_run(path, model, config)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def predictor(run: Path) -> Predictor:
    return Predictor.from_run(run, batch_size=4)


def chest(seed: int, shape: tuple[int, int] = (150, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img[30:90, 20:60] = 230
    img[0, :2] = (0, 255)  # full range, so min-max scaling of other dtypes is exact
    return img


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Three good images (one nested), a text file named .png, a truncated PNG, a note."""
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(chest(1)).save(root / "a.png")
    Image.fromarray(chest(2)).save(root / "sub" / "b.jpg")
    Image.fromarray(chest(3)).save(root / "sub" / "c.png")
    (root / "notes.png").write_text("this is not an image\n")
    full = io.BytesIO()
    Image.fromarray(chest(4)).save(full, format="PNG")
    (root / "truncated.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (root / "readme.txt").write_text("ignored: not an image extension")
    return root


def cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run the real entry point (``cxrad.cli.main``); return exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


# -- inputs ----------------------------------------------------------------------------------


def test_find_inputs_walks_folders_takes_files_and_globs(folder: Path) -> None:
    found = find_inputs([folder])
    assert [f.rel.as_posix() for f in found] == [
        "a.png",
        "notes.png",
        "truncated.png",
        "sub/b.jpg",
        "sub/c.png",
    ]
    # an explicit file is tried whatever its name; a glob adds; duplicates are kept once
    (folder / "scan_no_ext").write_bytes(b"x")
    found = find_inputs([folder / "scan_no_ext", str(folder / "sub" / "*.png"), folder / "a.png"])
    assert [f.path.name for f in found] == ["scan_no_ext", "c.png", "a.png"]


def test_a_folder_walk_finds_dicoms_named_by_uid(tmp_path: Path) -> None:
    """PACS exports name DICOMs by UID; predict finds them as ingest does, by their bytes."""
    root = tmp_path / "export"
    root.mkdir()
    dcm = make_dicom(tmp_path / "x.dcm", (chest(5).astype(np.uint16) * 16), 12)
    dcm.rename(root / "1.2.840.113619.2.55.3.604688119")
    (root / "DICOMDIR.txt").write_text("not an image")
    (root / "no_suffix").write_bytes(b"neither an image nor a DICOM")
    found = find_inputs([root])
    assert [f.rel.as_posix() for f in found] == ["1.2.840.113619.2.55.3.604688119"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "nope.png does not exist"),
        ("empty", "holds no images"),
        ("glob", "matches no files"),
        ("none", "no inputs given"),
        ("blank", "an empty path was given"),
        ("spaces", "an empty path was given"),
    ],
)
def test_find_inputs_errors_name_the_culprit(tmp_path: Path, kind: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    arg = {
        "missing": [str(tmp_path / "nope.png")],
        "empty": [str(tmp_path / "empty")],
        "glob": [str(tmp_path / "*.dcm")],
        "none": [],
        "blank": [""],  # Path("") is ".": without the check, the cwd would be scanned
        "spaces": [str(tmp_path / "empty" / "notes.txt"), "  "],
    }[kind]
    with pytest.raises(PredictError, match=message):
        find_inputs(arg)


# -- Python API ------------------------------------------------------------------------------


def test_path_array_and_pil_give_the_same_probabilities(
    predictor: Predictor, tmp_path: Path
) -> None:
    img = chest(7)
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)
    by_path = predictor.predict(path)
    by_array = predictor.predict(img)
    by_pil = predictor.predict(Image.fromarray(img))
    p = np.array(list(by_path["probabilities"].values()))
    for other in (by_array, by_pil):
        np.testing.assert_allclose(list(other["probabilities"].values()), p, atol=1e-6)
    # raw 16-bit detector values or 0-255 floats are scaled by their own range, like [0, 1] floats
    unit = predictor.prepare(img.astype(np.float32) / 255)
    for wide in (img.astype(np.uint16) * 257, img.astype(np.float64), img.astype(np.int32) - 1000):
        diff = predictor.prepare(wide).astype(int) - unit.astype(int)
        assert np.abs(diff).max() <= 1, wide.dtype
    assert by_path["image"] == str(path) and by_array["image"] == "<array>"


def test_record_schema_and_values(predictor: Predictor) -> None:
    rec = predictor.predict(chest(5))
    assert set(rec) == RECORD_KEYS
    assert rec["status"] == "ok" and rec["run"]["name"] == "seed-fcn"
    assert rec["code"] is None and rec["reason"] is None
    assert list(rec["probabilities"]) == CLASSES
    p = np.array(list(rec["probabilities"].values()))
    assert np.all((p > 0) & (p < 1))
    # thresholds 0 / 1 / 1 from the run: only EFFUSION can be positive
    assert rec["findings"] == [
        {"class": "EFFUSION", "probability": rec["probabilities"]["EFFUSION"], "threshold": 0.0}
    ]
    assert rec["positive"] == ["EFFUSION"]
    # an old-format run: triage is 1 - p(NORMAL) against 1 - NORMAL's threshold (here 0)
    assert rec["normal"] is False and rec["triage"]["threshold"] == 0.0
    assert rec["abnormal_score"] == rec["triage"]["score"]
    assert rec["abnormal_score"] == pytest.approx(float(abnormal_score(p, CLASSES)))


def test_every_record_names_the_data_split_and_code_behind_it(tmp_path: Path) -> None:
    model = create_model("seed-fcn", num_classes=len(CLASSES))
    config = {
        "model": {"name": "seed-fcn", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": SIZE, "mode": "letterbox"},
        "thresholds": {"EFFUSION": 0.0, "NORMAL": 1.0, "PNEUMONIA": 1.0},
        "manifest_hash": "0123456789abcdef",
        "held_out_sources": ["nih"],
        "git_commit": "f" * 40,
        "created": "2026-12-03T00:00:00+00:00",
        "cxrad_version": "9.9.9",
        "operating_point_rule": "spec=0.95@source",
    }
    p = Predictor.from_run(save_run(tmp_path / "run", model, config))
    ok = p.predict(chest(5))
    (tmp_path / "bad.png").write_text("not an image")
    (bad,) = p.predict_many([tmp_path / "bad.png"])  # an error record
    assert bad["status"] == "error"
    for rec in (ok, bad):
        assert rec["run"] == {
            "name": "seed-fcn",
            "manifest_hash": "0123456789abcdef",
            "held_out_sources": ["nih"],
            "created": "2026-12-03T00:00:00+00:00",
            "git_commit": "f" * 40,
            "cxrad_version": "9.9.9",
            "operating_point_rule": "spec=0.95@source",
            "decision": "independent",
        }
    ok["run"]["name"] = "changed"  # each record owns its copy
    ok["run"]["held_out_sources"].append("x")
    assert p.predict(chest(5))["run"] == bad["run"]


def test_fixed_threshold_mode(run: Path, predictor: Predictor) -> None:
    probs = predictor.predict(chest(5))["probabilities"]
    findings = {c: v for c, v in probs.items() if c != "NORMAL"}
    low = min(findings.values())
    p = Predictor.from_run(run, threshold_mode="fixed", threshold=low)
    rec = p.predict(chest(5))
    assert rec["positive"] == sorted(findings, key=lambda c: -findings[c])  # NORMAL is no finding
    assert len(rec["positive"]) == 2
    with pytest.raises(PredictError, match="Did you mean 'val'"):
        Predictor.from_run(run, threshold_mode="vall")


def test_predict_raises_but_predict_many_records_bad_files(
    predictor: Predictor, folder: Path
) -> None:
    with pytest.raises(DecodeError, match="not an image"):
        predictor.predict(folder / "notes.png")
    seen: list[tuple[int, int]] = []
    recs = list(predictor.predict_many([folder], progress=lambda d, t: seen.append((d, t))))
    status = {Path(r["image"]).name: r["status"] for r in recs}
    reason = {Path(r["image"]).name: r["reason"] for r in recs}
    assert status["a.png"] == status["b.jpg"] == status["c.png"] == "ok"
    assert status["notes.png"] == status["truncated.png"] == "error"
    assert reason["notes.png"].startswith("not an image")
    assert reason["truncated.png"].startswith("truncated image")
    assert all(set(r) == RECORD_KEYS for r in recs)
    bad = [r for r in recs if r["status"] != "ok"]
    assert all(r["findings"] == [] and r["abnormal_score"] is None for r in bad)
    assert all(r["normal"] is None and r["code"] for r in bad)
    assert seen == [(0, 5), (4, 5), (5, 5)]  # batch size 4


def test_predict_many_needs_inputs_and_keeps_heatmaps_out_of_them(
    predictor: Predictor, folder: Path
) -> None:
    with pytest.raises(PredictError, match="no inputs given"):
        list(predictor.predict_many([]))
    with pytest.raises(PredictError, match="inside the input folder"):
        list(predictor.predict_many([folder], heatmaps_dir=folder / "sub" / "heat"))
    assert not (folder / "sub" / "heat").exists()


def test_batching_does_not_change_results(run: Path, folder: Path) -> None:
    one = list(Predictor.from_run(run, batch_size=1).predict_many([folder]))
    many = list(Predictor.from_run(run, batch_size=16).predict_many([folder]))
    assert [r["image"] for r in one] == [r["image"] for r in many]
    for a, b in zip(one, many, strict=True):
        assert a["status"] == b["status"]
        for c in a["probabilities"]:
            assert a["probabilities"][c] == pytest.approx(b["probabilities"][c], abs=1e-5)


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_json_on_a_folder_with_bad_files_exits_1(
    run: Path, folder: Path, capsys, monkeypatch
) -> None:
    before = sorted(p.name for p in folder.rglob("*"))
    code, out, err = cli(
        ["predict", str(folder), "--model", str(run), "--no-progress", "--no-gate"],
        capsys,
        monkeypatch,
    )
    assert code == 1  # some files failed; their records are still printed
    recs = json.loads(out)  # stdout is exactly one JSON array
    assert len(recs) == 5 and sum(r["status"] == "ok" for r in recs) == 3
    assert "5 image(s): 3 ok, 2 failed" in err
    assert "notes.png" in err
    assert sorted(p.name for p in folder.rglob("*")) == before  # inputs untouched


def test_cli_csv_and_heatmaps(run: Path, folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    hm = tmp_path / "heat"
    args = ["predict", str(folder / "a.png"), str(folder / "sub"), "--model", str(run), "--no-gate"]
    code, out, err = cli([*args, "--format", "csv", "--heatmaps", str(hm)], capsys, monkeypatch)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["image"]).name for r in rows] == ["a.png", "b.jpg", "c.png"]
    assert list(rows[0])[:4] == ["image", "status", "code", "reason"]
    assert all(r["positive"] == "EFFUSION" and 0 < float(r["EFFUSION"]) < 1 for r in rows)
    # heatmaps mirror the folder argument's layout, one .png + .npy per positive finding
    assert sorted(p.relative_to(hm).as_posix() for p in hm.rglob("*.*")) == [
        "a__EFFUSION.npy",
        "a__EFFUSION.png",
        "b__EFFUSION.npy",
        "b__EFFUSION.png",
        "c__EFFUSION.npy",
        "c__EFFUSION.png",
    ]
    assert rows[1]["heatmaps"] == str(hm / "b__EFFUSION.png")
    cam = np.load(hm / "a__EFFUSION.npy")
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32 and cam.min() >= 0
    assert Image.open(hm / "a__EFFUSION.png").size == (SIZE, SIZE)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "{tmp}/empty"], "holds no images"),
        (["predict", "{tmp}/*.png"], "matches no files"),
        (["predict", "{tmp}/missing.dcm"], "does not exist"),
        (["predict", "{img}", "--format", "xml"], "unknown --format"),
        (["predict", "{img}", "--backend", "tensorrt"], "unknown backend"),
        (["predict", "{img}", "--model", "{tmp}"], "is not a cxrad run"),
        (["export", "{run}", "--format", "tflite"], "only 'onnx'"),
        (["predict", "{tmp}", "--heatmaps", "{tmp}/heat"], "inside the input folder"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(
    run: Path, tmp_path: Path, capsys, monkeypatch, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    img = tmp_path / "img.jpg"
    Image.fromarray(chest(1)).save(img)
    args = [a.format(tmp=tmp_path, img=img, run=run) for a in args]
    if "--model" not in args and args[0] == "predict":
        args += ["--model", str(run)]
    code, out, err = cli(args, capsys, monkeypatch)
    assert code == 2
    assert out == ""
    assert message in err and "error:" in err


def test_missing_default_model_says_how_to_get_one(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("cxrad.models.run.DEFAULT_RUN", tmp_path / "assets" / "default")
    Image.fromarray(chest(1)).save(tmp_path / "x.png")
    code, _, err = cli(["predict", str(tmp_path / "x.png")], capsys, monkeypatch)
    assert code == 2 and "cxrad train" in err


def assert_ok_records(recs: list[dict], files: list[str]) -> None:
    """One ok record per file, in order, with the whole schema; no two alike (distinct inputs)."""
    assert [r["image"] for r in recs] == files
    for r in recs:
        assert set(r) == RECORD_KEYS and r["status"] == "ok", r
        assert list(r["probabilities"]) == CLASSES
        assert 0 <= r["abnormal_score"] <= 1
    assert len({tuple(r["probabilities"].values()) for r in recs}) == len(recs)


def test_cli_on_synthetic_png_jpeg_dicom_rgba(
    run: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The real-files test below on files built here: one of each kind the CLI reads."""
    shape = (64, 56)
    Image.fromarray(chest(5, shape)).save(tmp_path / "a.png")
    Image.fromarray(chest(6, shape)).save(tmp_path / "b.jpeg", quality=90)
    stored = chest(7, shape).astype(np.uint16) * 16
    make_dicom(tmp_path / "c.dcm", stored, 12)
    make_dicom(tmp_path / "d.dcm", stored, 12, photometric="MONOCHROME1")
    rgba = Image.fromarray(chest(8, shape)).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(tmp_path / "e.png")
    files = [str(tmp_path / n) for n in ("a.png", "b.jpeg", "c.dcm", "d.dcm", "e.png")]
    args = ["predict", *files, "--model", str(run), "--format", "jsonl", "--no-gate"]
    code, out, err = cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert_ok_records([json.loads(line) for line in out.splitlines()], files)


# -- real files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_files(shared_data: Path) -> dict[str, Path]:
    nih = sorted((shared_data / "nih-chestxray14" / "images").glob("*.png"))[0]
    ped = shared_data / "kaggle-pediatric-pneumonia" / "chest_xray" / "test" / "NORMAL"
    xrv = shared_data / "fixtures" / "xrv-tests"
    dcm = sorted(xrv.glob("*.dcm"))
    rgba = shared_data / "ieee8023-covid-chestxray" / "images" / "ryct.2020003.fig2-a.png"
    assert Image.open(rgba).mode == "RGBA" and len(dcm) == 2
    return {
        "png": nih,
        "jpeg": sorted(ped.glob("*.jpeg"))[0],
        "dcm1": dcm[0],
        "dcm2": dcm[1],
        "rgba": rgba,
    }


@pytest.mark.data
def test_cli_on_real_files_png_jpeg_dicom_rgba(
    run: Path, real_files, tmp_path, capsys, monkeypatch
) -> None:
    files = [str(p) for p in real_files.values()]
    code, out, err = cli(
        ["predict", *files, "--model", str(run), "--format", "jsonl", "--no-gate"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    assert_ok_records([json.loads(line) for line in out.splitlines()], files)


@pytest.mark.data
def test_real_folder_with_a_truncated_copy(run: Path, real_files, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    data = real_files["png"].read_bytes()
    (tmp_path / "in" / "good.png").write_bytes(data)
    (tmp_path / "in" / "half.png").write_bytes(data[: len(data) // 2])
    recs = list(Predictor.from_run(run).predict_many([tmp_path / "in"]))
    assert [(Path(r["image"]).name, r["status"]) for r in recs] == [
        ("good.png", "ok"),
        ("half.png", "error"),
    ]
    assert "truncated" in recs[1]["reason"]


@pytest.mark.data
@pytest.mark.slow
def test_subprocess_stdout_is_only_json(run: Path, real_files) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrad",
            "predict",
            str(real_files["dcm1"]),
            "--model",
            str(run),
            "--no-gate",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = json.loads(proc.stdout)
    assert rec["status"] == "ok" and "1 image(s): 1 ok" in proc.stderr
