"""Ingest adapters: one shared contract, subclassed per adapter, plus expected labels.

Classes marked ``data`` read the real releases in ../shared/data; the others build their layout
in tmp_path from tiny synthetic images (adapters never read pixels) with label files written in
the documented format, so they run without the data. test_ingest_adapters_synthetic.py has a
synthetic twin of every real-data class.
"""

# ruff: noqa: RUF012  (per-adapter expectations are class-level tables, never mutated)
from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrad.errors import IngestError
from cxrad.ingest import ADAPTERS, detect_format
from cxrad.labels import CLASSES, FINDINGS
from cxrad.manifest import BASE_COLUMNS
from synth_layouts import tiny_image, tiny_images

NAN = float("nan")
NORMAL_ROW = {"NORMAL": 1.0, **dict.fromkeys(FINDINGS, 0.0)}


def link(src: Path, dst: Path) -> Path:
    """Symlink a real image into a test layout (never copies data into the repo)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


def fill(base: Path, rels: list[str]) -> None:
    """A tiny synthetic film at each relative path (the layout tests need names, not pixels)."""
    tiny_images(base, rels)


def same(a: object, b: object) -> bool:
    """Equality where NaN (or a null) equals NaN."""
    if isinstance(b, float) and math.isnan(b):
        return bool(pd.isna(a))
    return bool(a == b)


@functools.cache
def _read_real(name: str, root: Path) -> pd.DataFrame:
    return ADAPTERS[name].read(root)


class AdapterContract:
    """What every adapter promises; subclasses say how to build a root and what to expect."""

    name: str
    expected: dict[str, dict[str, object]] = {}
    n_rows: int | None = None
    real = False
    """True: ``build`` reads ../shared/data (mark the class ``data``); else ``data`` is None."""

    def build(self, tmp: Path, data: Path | None) -> Path:
        raise NotImplementedError

    @pytest.fixture
    def root(self, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
        data = request.getfixturevalue("shared_data") if self.real else None
        return self.build(tmp_path, data)

    @pytest.fixture
    def df(self, root: Path, tmp_path: Path):
        if tmp_path in root.parents or root == tmp_path:
            return ADAPTERS[self.name].read(root)
        return _read_real(self.name, root).copy()  # the real data is read once per session

    def test_detected(self, root: Path) -> None:
        assert detect_format(root) == self.name

    def test_columns_and_dtypes(self, df) -> None:
        assert list(df.columns) == list(BASE_COLUMNS)
        for col, dtype in BASE_COLUMNS.items():
            assert str(df[col].dtype) == str(df[col].astype(dtype).dtype), col
        assert len(df) > 0
        if self.n_rows is not None:
            assert len(df) == self.n_rows

    def test_ids_unique_and_prefixed(self, df) -> None:
        assert df["image_id"].is_unique
        assert df["image_id"].str.startswith(f"{self.name}/").all()
        assert (df["source"] == self.name).all()
        assert df["path"].map(os.path.isabs).all()

    def test_label_values(self, df) -> None:
        labels = df[list(CLASSES)].to_numpy(dtype=np.float64)
        assert (np.isnan(labels) | (labels == 0) | (labels == 1)).all()
        ok = df[df["status"] == "ok"]
        # every usable row says something about at least one class
        assert ok[list(CLASSES)].notna().any(axis=1).all()
        # a NORMAL image is negative for every finding
        normal = ok[ok["NORMAL"] == 1]
        assert (normal[list(FINDINGS)].fillna(0) == 0).all().all()

    def test_patient_ids_prefixed(self, df) -> None:
        pids = df["patient_id"].dropna()
        assert pids.str.startswith(f"{self.name}:").all()

    def test_ok_rows_exist_on_disk(self, df) -> None:
        ok = df[df["status"] == "ok"]
        assert ok["path"].map(os.path.exists).all()

    def test_wrong_root_raises(self, tmp_path: Path) -> None:
        wrong = tmp_path / "not-a-dataset"
        (wrong / "stuff").mkdir(parents=True)
        (wrong / "stuff" / "notes.txt").write_text("hello")
        with pytest.raises(IngestError, match="expected layout"):
            ADAPTERS[self.name].read(wrong)

    def test_expected_labels(self, df) -> None:
        rows = df.set_index("image_id")
        for image_id, exp in self.expected.items():
            assert image_id in rows.index, image_id
            got = rows.loc[image_id]
            for key, value in exp.items():
                assert same(got[key], value), (image_id, key, got[key], value)

    def test_read_is_deterministic(self, root: Path, df) -> None:
        again = ADAPTERS[self.name].read(root)
        assert again.equals(df)


PED = "kaggle-pediatric"


@pytest.mark.data
class TestPediatric(AdapterContract):
    name = PED
    real = True
    n_rows = 5840
    expected = {
        f"{PED}/train/PNEUMONIA/person1_bacteria_1.jpeg": {
            "patient_id": f"{PED}:train/person1",
            "official_split": "train",
            "PNEUMONIA": 1.0,
            "NORMAL": 0.0,
            "CARDIOMEGALY": NAN,
            "meta": '{"subtype": "bacteria"}',
        },
        f"{PED}/test/PNEUMONIA/person100_bacteria_475.jpeg": {
            "patient_id": f"{PED}:test/person100",
            "official_split": "test",
        },
        f"{PED}/train/NORMAL/IM-0115-0001.jpeg": {
            **NORMAL_ROW,
            "patient_id": f"{PED}:train/IM-0115",
        },
        f"{PED}/train/NORMAL/NORMAL2-IM-0383-0001.jpeg": {
            "patient_id": f"{PED}:train/NORMAL2-IM-0383",
            "COVID_19": 0.0,
        },
    }

    def build(self, tmp: Path, data: Path) -> Path:
        return data / "kaggle-pediatric-pneumonia"


class TestPediatricResplit(AdapterContract):
    """tolgadincer's re-split: same scheme; root given as chest_xray/ itself, with val/."""

    name = PED
    n_rows = 4
    expected = {
        f"{PED}/val/PNEUMONIA/person1_virus_6.jpeg": {
            "official_split": "val",
            "patient_id": f"{PED}:val/person1",
            "meta": '{"subtype": "virus"}',
        },
        f"{PED}/test/PNEUMONIA/person1_bacteria_1.jpeg": {"patient_id": f"{PED}:test/person1"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        base = tmp / "labeled-chest-xray-images" / "chest_xray"
        fill(base, ["test/PNEUMONIA/person1_bacteria_1.jpeg", "val/PNEUMONIA/person1_virus_6.jpeg", "train/NORMAL/IM-0115-0001.jpeg", "train/NORMAL/IM-0117-0001.jpeg"])  # fmt: skip
        return base


RAD = "covid19-radiography"


@pytest.mark.data
class TestRadiography(AdapterContract):
    name = RAD
    real = True
    n_rows = 2500
    expected = {
        f"{RAD}/COVID/COVID-1000.jpg": {"COVID_19": 1.0, "NORMAL": 0.0, "PNEUMONIA": NAN},
        f"{RAD}/Normal/Normal-10039.jpg": NORMAL_ROW,
    }

    def build(self, tmp: Path, data: Path) -> Path:
        return data / "covid19-radiography"


class TestRadiographyFullLayout(AdapterContract):
    """The newer release: class/images/ + class/masks/, with Lung_Opacity and Viral Pneumonia."""

    name = RAD
    n_rows = 4  # masks are not images of the dataset
    expected = {
        f"{RAD}/Viral Pneumonia/images/Viral Pneumonia-1.png": {
            "PNEUMONIA": 1.0,
            "COVID_19": 0.0,
            "NORMAL": 0.0,
        },
        f"{RAD}/Lung_Opacity/images/Lung_Opacity-1.png": {
            "status": "excluded: Lung_Opacity is not one of the 17 classes",
            "raw_label": "Lung_Opacity",
        },
        f"{RAD}/COVID/images/COVID-1.png": {"COVID_19": 1.0},
        f"{RAD}/Normal/images/Normal-1.png": NORMAL_ROW,
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        base = tmp / "COVID-19_Radiography_Dataset"
        for cls in ["COVID", "Normal", "Viral Pneumonia", "Lung_Opacity"]:
            tiny_image(base / cls / "images" / f"{cls}-1.png")
            tiny_image(base / cls / "masks" / f"{cls}-1.png", seed=0)
        return tmp


NIH = "nih"


@pytest.mark.data
class TestNIH(AdapterContract):
    name = NIH
    real = True
    n_rows = 1289
    expected = {
        f"{NIH}/images/00000061_012.png": {
            "patient_id": f"{NIH}:61",
            "view": "AP",
            "EDEMA": 1.0,
            "PLEURAL_THICKENING": 1.0,
            "PNEUMONIA": 1.0,
            "CARDIOMEGALY": 0.0,
            "NORMAL": 0.0,
            "COVID_19": NAN,
            "TUBERCULOSIS": NAN,
        },
        f"{NIH}/images/00000129_000.png": {
            "NORMAL": 1.0,
            "PNEUMONIA": 0.0,
            "COVID_19": NAN,
            "raw_label": "No Finding",
        },
        f"{NIH}/images/00000284_000.png": {"HERNIA": 1.0, "view": "PA"},
    }

    def build(self, tmp: Path, data: Path) -> Path:
        return data / "nih-chestxray14"

    def test_boxes_in_meta(self, df) -> None:
        meta = df.set_index("image_id").loc[f"{NIH}/images/00004296_000.png", "meta"]
        assert '"label": "Atelectasis"' in meta and "731.4" in meta


class TestNIHArchiveLayout(AdapterContract):
    """images_0NN/images/, a plain CSV, official lists, and an image the CSV does not know."""

    name = NIH
    n_rows = 3
    expected = {
        f"{NIH}/images_001/images/00000001_000.png": {
            "official_split": "train",
            "CARDIOMEGALY": 1.0,
            "patient_id": f"{NIH}:1",
        },
        f"{NIH}/images_002/images/00000002_000.png": {
            "official_split": "test",
            **NORMAL_ROW,
            "COVID_19": NAN,
            "TUBERCULOSIS": NAN,
        },
        f"{NIH}/images_002/images/99999999_000.png": {
            "status": "unmapped label: not in Data_Entry",
        },
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        fill(tmp, ["images_001/images/00000001_000.png", "images_002/images/00000002_000.png", "images_002/images/99999999_000.png"])  # fmt: skip
        header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"  # fmt: skip
        (tmp / "Data_Entry_2017.csv").write_text(
            header
            + "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143\n"
            + "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171\n"
        )
        (tmp / "train_val_list.txt").write_text("00000001_000.png\n")
        (tmp / "test_list.txt").write_text("00000002_000.png\n")
        return tmp


TBX = "tbx11k"


@pytest.mark.data
class TestTBX11K(AdapterContract):
    name = TBX
    real = True
    n_rows = 650
    expected = {
        f"{TBX}/imgs/tb/tb0003.png": {"TUBERCULOSIS": 1.0, "NORMAL": 0.0, "PNEUMONIA": NAN},
    }

    def build(self, tmp: Path, data: Path) -> Path:
        return data / "tbx11k"

    def test_boxes_from_xml(self, df) -> None:
        meta = df.set_index("image_id").loc[f"{TBX}/imgs/tb/tb0003.png", "meta"]
        assert "ObsoletePulmonaryTuberculosis" in meta and "[2840, 2827]" in meta


@pytest.mark.data
class TestTBX11KJson(AdapterContract):
    """The torchxrayvision test tree: COCO json annotations, a healthy and a sick image."""

    name = TBX
    real = True
    n_rows = 4
    expected = {
        f"{TBX}/imgs/health/h0001.png": NORMAL_ROW,
        f"{TBX}/imgs/sick/s0001.png": {"TUBERCULOSIS": 0.0, "NORMAL": 0.0, "PNEUMONIA": NAN},
        f"{TBX}/imgs/tb/tb0007.png": {"TUBERCULOSIS": 1.0},
    }

    def build(self, tmp: Path, data: Path) -> Path:
        src = data / "fixtures" / "xrv-tests" / "tbx11k_test_data"
        for p in sorted((src / "imgs").rglob("*.png")):
            link(p, tmp / "TBX11K" / p.relative_to(src))
        link(src / "annotations/json/TBX11K_train.json", tmp / "TBX11K/annotations/json/TBX11K_train.json")  # fmt: skip
        link(src / "imgs/health/h0001.png", tmp / "TBX11K/imgs/sick/s0001.png")
        return tmp

    def test_boxes_from_json(self, df) -> None:
        meta = df.set_index("image_id").loc[f"{TBX}/imgs/tb/tb0007.png", "meta"]
        assert meta.count("ObsoletePulmonaryTuberculosis") == 2
