"""Ingest adapters, continued: ieee8023, COVIDx and the class-folder layouts.

Only the classes marked ``data`` read ../shared/data; the rest build tiny synthetic layouts.
"""

# ruff: noqa: RUF012  (per-adapter expectations are class-level tables, never mutated)
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxrad.ingest import ADAPTERS
from cxrad.ingest.tables import ieee_labels
from synth_layouts import tiny_image
from test_ingest_adapters import NAN, NORMAL_ROW, AdapterContract, fill

IEEE = "ieee8023"


@pytest.mark.data
class TestIEEE8023(AdapterContract):
    name = IEEE
    real = True
    n_rows = 659  # one row per metadata.csv line, none dropped
    expected = {
        f"{IEEE}/images/SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg": {
            "PNEUMONIA": 1.0,
            "COVID_19": 0.0,
            "NORMAL": 0.0,
            "patient_id": f"{IEEE}:3",
            "view": "AP",
            "status": "ok",
        },
        f"{IEEE}/images/F051E018-DAD1-4506-AD43-BE4CA29E960B.jpeg": {**NORMAL_ROW, "status": "ok"},
        f"{IEEE}/images/08ed451c576ee00935ee178ec85c57_jumbo-1.jpeg": {
            "status": "unlabelled: todo"
        },
        f"{IEEE}/images/pneumocystis-pneumonia-2-L.png": {"status": "excluded: lateral view"},
        f"{IEEE}/images/covid-19-pneumonia-rapidly-progressive-admission.jpg": {
            "COVID_19": 1.0,
            "PNEUMONIA": NAN,
            "raw_label": "COVID-19, ARDS",
        },
        f"{IEEE}/images/5083A6B7-8983-472E-A427-570A3E03DDEE.jpeg": {"status": "excluded: CT"},
        f"{IEEE}/images/000001-24.jpg#row563": {"status": "excluded: repeated metadata row"},
    }

    def build(self, tmp: Path, data: Path) -> Path:
        return data / "ieee8023-covid-chestxray"


@pytest.mark.parametrize(
    ("flat", "hierarchical"),
    [
        ("COVID-19", "Pneumonia/Viral/COVID-19"),
        ("SARS", "Pneumonia/Viral/SARS"),
        ("Streptococcus", "Pneumonia/Bacterial/Streptococcus"),
        ("Pneumocystis", "Pneumonia/Fungal/Pneumocystis"),
        ("No Finding", "No Finding"),
        ("todo", "todo"),
    ],
)
def test_ieee_flat_and_hierarchical_spellings_agree(flat: str, hierarchical: str) -> None:
    assert ieee_labels(flat) == ieee_labels(hierarchical)
    assert ieee_labels("Pneumonia/Bacterial/Klebsiella")[0]["PNEUMONIA"] == 1.0
    assert ieee_labels("ARDS") == (None, "unmapped label: ARDS")


COVIDX = "covidx"


class TestCOVIDx(AdapterContract):
    """CXR-2 (positive/negative) and v3 (normal/pneumonia/COVID-19) label files together."""

    name = COVIDX
    n_rows = 6
    expected = {
        f"{COVIDX}/train/a.png": {
            "COVID_19": 1.0,
            "NORMAL": 0.0,
            "patient_id": f"{COVIDX}:cohen/5",
            "official_split": "train",
        },
        f"{COVIDX}/train/b.png": {"COVID_19": 0.0, "NORMAL": NAN, "PNEUMONIA": NAN},
        f"{COVIDX}/train/gone.png": {"status": "missing file"},
        f"{COVIDX}/test/c.png": {
            **NORMAL_ROW,
            "official_split": "test",
            "patient_id": f"{COVIDX}:7",
        },
        f"{COVIDX}/test/d.png": {"PNEUMONIA": 1.0, "COVID_19": 0.0},
        f"{COVIDX}/test/e.png": {"COVID_19": 1.0, "status": "ok"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        fill(tmp, ["train/a.png", "train/b.png", "test/c.png", "test/d.png", "test/e.png"])
        (tmp / "train_COVIDx9B.txt").write_text(
            "5 a.png positive cohen\n6 b.png negative rsna\n8 gone.png positive sirm\n"
        )
        (tmp / "test_split_v3.txt").write_text("7 c.png normal\n9 d.png pneumonia rsna\n10 e.png COVID-19 cohen\n")  # fmt: skip
        return tmp


@pytest.mark.data
def test_covidx_label_files_without_images_are_missing_rows(shared_data: Path) -> None:
    df = ADAPTERS[COVIDX].read(shared_data / "covidx")
    assert len(df) == 30882
    assert (df["status"] == "missing file").all()
    lines = pd.concat(
        pd.read_csv(shared_data / "covidx" / f, sep=" ", header=None)
        for f in ("train_COVIDx9B.txt", "test_COVIDx9B.txt")
    )
    assert int(df["COVID_19"].sum()) == int((lines[2] == "positive").sum())


TBR = "tb-radiography"


class TestTBRadiography(AdapterContract):
    name = TBR
    n_rows = 3
    expected = {
        f"{TBR}/Tuberculosis/Tuberculosis-1.png": {"TUBERCULOSIS": 1.0, "NORMAL": 0.0},
        f"{TBR}/Normal/Normal-1.png": NORMAL_ROW,
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        base = tmp / "TB_Chest_Radiography_Database"
        fill(base, ["Tuberculosis/Tuberculosis-1.png", "Tuberculosis/Tuberculosis-2.png", "Normal/Normal-1.png"])  # fmt: skip
        (base / "Normal.metadata.xlsx").write_text("not read")
        return tmp


MS = "montgomery-shenzhen"


class TestMontgomeryShenzhen(AdapterContract):
    name = MS
    n_rows = 3
    expected = {
        f"{MS}/CXR_png/MCUCXR_0001_0.png": {**NORMAL_ROW, "patient_id": f"{MS}:MCUCXR_0001"},
        f"{MS}/CXR_png/CHNCXR_0327_1.png": {"TUBERCULOSIS": 1.0, "NORMAL": 0.0, "PNEUMONIA": NAN},
        f"{MS}/CXR_png/odd.png": {"status": "unmapped label: no _0/_1 suffix"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        base = tmp / "Lung Segmentation"
        fill(base / "CXR_png", ["MCUCXR_0001_0.png", "CHNCXR_0327_1.png", "odd.png"])
        (base / "ClinicalReadings").mkdir()
        (base / "ClinicalReadings/CHNCXR_0327_1.txt").write_text("male 35yrs\nPTB in the right upper field, pleural effusion\n")  # fmt: skip
        return tmp

    def test_reading_is_metadata_not_labels(self, df) -> None:
        r = df.set_index("image_id").loc[f"{MS}/CXR_png/CHNCXR_0327_1.png"]
        assert "pleural effusion" in r["meta"] and "Shenzhen" in r["meta"]
        assert pd.isna(r["EFFUSION"])  # no keyword matching into classes


PEDIATRIC_NAMES = ["IM-0115-0001.jpeg", "IM-0117-0001.jpeg", "IM-0119-0001.jpeg"]


def _split_class_tree(tmp: Path, top: str, classes: list[str]) -> None:
    """``top/{train,test}/<class>/`` with pediatric-named images (the tricky case)."""
    for split in ("train", "test"):
        for name, cls in zip(PEDIATRIC_NAMES, classes, strict=False):
            tiny_image(tmp / top / split / cls / name)


PR = "prashant268"


class TestPrashant(AdapterContract):
    name = PR
    n_rows = 6
    expected = {
        f"{PR}/train/COVID19/IM-0115-0001.jpeg": {
            "COVID_19": 1.0,
            "NORMAL": 0.0,
            "official_split": "train",
        },
        f"{PR}/test/PNEUMONIA/IM-0119-0001.jpeg": {"PNEUMONIA": 1.0, "COVID_19": 0.0},
        f"{PR}/test/NORMAL/IM-0117-0001.jpeg": NORMAL_ROW,
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        _split_class_tree(tmp, "Data", ["COVID19", "NORMAL", "PNEUMONIA"])
        return tmp


KH = "khoongweihao"


class TestKhoongweihao(AdapterContract):
    name = KH
    n_rows = 4
    expected = {
        f"{KH}/train/PNEUMONIA/IM-0117-0001.jpeg": {
            "COVID_19": 1.0,
            "PNEUMONIA": NAN,
            "raw_label": "PNEUMONIA",
        },
        f"{KH}/test/NORMAL/IM-0115-0001.jpeg": NORMAL_ROW,
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        _split_class_tree(tmp, "xray_dataset_covid19", ["NORMAL", "PNEUMONIA"])
        return tmp


NB = "nabeelsajid917"


class TestNabeel(AdapterContract):
    name = NB
    n_rows = 2
    expected = {
        f"{NB}/covid/x.png": {"COVID_19": 1.0, "NORMAL": 0.0},
        f"{NB}/normal/y.png": NORMAL_ROW,
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        fill(tmp / "dataset", ["covid/x.png", "normal/y.png"])
        return tmp


GEN = "class-folders"


class TestGeneric(AdapterContract):
    name = GEN
    n_rows = 5
    expected = {
        f"{GEN}/Covid-19/a.png": {"COVID_19": 1.0, "NORMAL": 0.0, "PNEUMONIA": NAN},
        f"{GEN}/tb/b.png": {"TUBERCULOSIS": 1.0},
        f"{GEN}/Normal/c.png": NORMAL_ROW,
        f"{GEN}/Nodules/sub/d.png": {"NODULE": 1.0},
        f"{GEN}/weird stuff/e.png": {"status": "unmapped label: weird stuff"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        fill(tmp / "mine", ["Covid-19/a.png", "tb/b.png", "Normal/c.png", "Nodules/sub/d.png", "weird stuff/e.png"])  # fmt: skip
        (tmp / "mine/Normal/readme.txt").write_text("not an image")
        return tmp / "mine"


class TestGenericWithSplits(AdapterContract):
    name = GEN
    n_rows = 2
    expected = {
        f"{GEN}/train/effusion/a.png": {"EFFUSION": 1.0, "official_split": "train"},
        f"{GEN}/Validation/healthy/b.png": {**NORMAL_ROW, "official_split": "val"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        fill(tmp, ["train/effusion/a.png", "Validation/healthy/b.png"])
        return tmp
