"""Ingest adapters on synthetic twins of the real releases: the same contract, no ../shared/data.

Each class builds the layout of one dataset (see ``synth_layouts``) with a handful of tiny films
and its label files, and states the rows it expects; the ``data``-marked classes in
test_ingest_adapters*.py check the same adapters on the real releases.
"""

# ruff: noqa: RUF012  (per-adapter expectations are class-level tables, never mutated)
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import synth_layouts as synth
from cxrad.ingest import ADAPTERS, ingest
from cxrad.ingest.sites import site_from_url
from test_ingest_adapters import NAN, NORMAL_ROW, AdapterContract

PED, RAD, NIH, TBX, IEEE, CX = (
    "kaggle-pediatric",
    "covid19-radiography",
    "nih",
    "tbx11k",
    "ieee8023",
    "covid-cxnet",
)


class TestPediatricSynthetic(AdapterContract):
    name = PED
    n_rows = 8
    expected = {
        f"{PED}/train/PNEUMONIA/person1_bacteria_1.jpeg": {
            "patient_id": f"{PED}:train/person1",
            "official_split": "train",
            "PNEUMONIA": 1.0,
            "NORMAL": 0.0,
            "CARDIOMEGALY": NAN,
            "meta": '{"subtype": "bacteria"}',
        },
        f"{PED}/test/PNEUMONIA/person1_virus_6.jpeg": {
            "patient_id": f"{PED}:test/person1",  # person numbers restart per split folder
            "official_split": "test",
            "meta": '{"subtype": "virus"}',
        },
        f"{PED}/train/NORMAL/NORMAL2-IM-0383-0001.jpeg": {
            **NORMAL_ROW,
            "patient_id": f"{PED}:train/NORMAL2-IM-0383",
        },
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        return synth.pediatric(tmp)


class TestRadiographySynthetic(AdapterContract):
    name = RAD
    n_rows = 3
    expected = {
        f"{RAD}/COVID/COVID-1000.jpg": {"COVID_19": 1.0, "NORMAL": 0.0, "PNEUMONIA": NAN},
        f"{RAD}/Normal/Normal-10039.jpg": NORMAL_ROW,
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        return synth.radiography(tmp)

    def test_sites_from_the_metadata_sheets(self, df) -> None:
        sites = df.set_index("image_id")["site"]
        assert sites[f"{RAD}/COVID/COVID-1.jpg"] == "sirm"
        assert sites[f"{RAD}/COVID/COVID-1000.jpg"] == "github:ieee8023"
        assert sites[f"{RAD}/Normal/Normal-10039.jpg"] == "kaggle:rsna"  # NORMAL- in the sheet

    def test_unreadable_sheet_leaves_sites_null_with_a_warning(self, root: Path, caplog) -> None:
        sheet = root / "COVID-19_Radiography_Dataset" / "COVID.metadata.xlsx"
        sheet.write_bytes(b"not a spreadsheet")
        df = ADAPTERS[RAD].read(root).set_index("image_id")
        assert df["site"].isna().sum() == 2 and df.loc[f"{RAD}/Normal/Normal-10039.jpg", "site"] == "kaggle:rsna"  # fmt: skip
        assert "metadata sheet not read" in caplog.text
        assert (df["status"] == "ok").all()  # labels come from the folders, not the sheets


class TestNIHSynthetic(AdapterContract):
    name = NIH
    n_rows = 4  # the label file's fifth row has no image: not a row of this folder
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
        },
        f"{NIH}/images/00000129_000.png": {
            "NORMAL": 1.0,
            "PNEUMONIA": 0.0,
            "raw_label": "No Finding",
        },
        f"{NIH}/images/00000284_000.png": {"HERNIA": 1.0, "view": "PA"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        return synth.nih(tmp)

    def test_boxes_in_meta(self, df) -> None:
        meta = df.set_index("image_id").loc[f"{NIH}/images/00004296_000.png", "meta"]
        assert '"label": "Atelectasis"' in meta and "731.4" in meta


class TestTBX11KSynthetic(AdapterContract):
    name = TBX
    n_rows = 2
    expected = {f"{TBX}/imgs/tb/tb0003.png": {"TUBERCULOSIS": 1.0, "NORMAL": 0.0, "PNEUMONIA": NAN}}

    def build(self, tmp: Path, data: Path | None) -> Path:
        return synth.tbx11k(tmp)

    def test_boxes_from_xml(self, df) -> None:
        meta = df.set_index("image_id").loc[f"{TBX}/imgs/tb/tb0003.png", "meta"]
        assert "ObsoletePulmonaryTuberculosis" in meta and "[2840, 2827]" in meta


class TestTBX11KJsonSynthetic(AdapterContract):
    name = TBX
    n_rows = 4
    expected = {
        f"{TBX}/imgs/health/h0001.png": NORMAL_ROW,
        f"{TBX}/imgs/sick/s0001.png": {"TUBERCULOSIS": 0.0, "NORMAL": 0.0, "PNEUMONIA": NAN},
        f"{TBX}/imgs/tb/tb0007.png": {"TUBERCULOSIS": 1.0},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        return synth.tbx11k_json(tmp)

    def test_boxes_from_json(self, df) -> None:
        meta = df.set_index("image_id").loc[f"{TBX}/imgs/tb/tb0007.png", "meta"]
        assert meta.count("ObsoletePulmonaryTuberculosis") == 2


class TestIEEE8023Synthetic(AdapterContract):
    name = IEEE
    n_rows = 9  # one row per metadata.csv line, none dropped
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
        f"{IEEE}/images/000001-24.jpg": {"status": "ok"},
        f"{IEEE}/images/000001-24.jpg#row9": {"status": "excluded: repeated metadata row"},
        f"{IEEE}/images/gone.jpg": {"status": "missing file"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        return synth.ieee8023(tmp)


class TestCXNetSynthetic(AdapterContract):
    name = CX
    n_rows = 5
    expected = {
        f"{CX}/chest_xray_images/covid19/264.jpg": {
            "COVID_19": 1.0,
            "NORMAL": 0.0,
            "patient_id": f"{CX}:11",
            "status": "ok",
        },
        f"{CX}/chest_xray_images/covid19/265.jpg": {"patient_id": f"{CX}:11", "view": "PA"},
        f"{CX}/chest_xray_images/covid19/770.png": {"status": "excluded: lateral view"},
        f"{CX}/chest_xray_images/covid19/771.png": {"status": "unmapped label: Pneumonia"},
        f"{CX}/chest_xray_images/covid19/gone.jpg": {"status": "missing file"},
    }

    def build(self, tmp: Path, data: Path | None) -> Path:
        return synth.cxnet(tmp)

    def test_site_from_url(self, df) -> None:
        sites = df.set_index("image_id")["site"]
        assert sites[f"{CX}/chest_xray_images/covid19/264.jpg"] == sites[f"{CX}/chest_xray_images/covid19/265.jpg"]  # fmt: skip
        assert sites.notna().sum() >= 2


def test_every_synthetic_layout_ingests_together(tmp_path: Path) -> None:
    """All twins side by side through ``ingest``: each found by its own adapter, counted apart."""
    builders = [synth.pediatric, synth.radiography, synth.nih, synth.tbx11k, synth.ieee8023, synth.cxnet]  # fmt: skip
    roots = [b(tmp_path / b.__name__) for b in builders]
    df, summary = ingest(roots, hash_images=True)
    per = df.groupby("source").size().to_dict()
    assert per == {PED: 8, RAD: 3, NIH: 4, TBX: 2, IEEE: 9, CX: 5}
    assert summary["rows"] == len(df) == 31
    ok = df[df["status"] == "ok"]
    assert ok["sha1"].notna().all() and ok["sha1"].is_unique  # distinct synthetic pixels
    assert summary["per_source"][IEEE]["rejects"]["excluded: CT"] == 1
    assert set(ADAPTERS) >= set(per)
    assert pd.isna(df.set_index("image_id").loc[f"{IEEE}/images/gone.jpg", "sha1"])


@pytest.mark.parametrize(
    ("url", "site"),
    [
        ("https://github.com/ieee8023/covid-chestxray-dataset", "github:ieee8023"),
        ("https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data", "kaggle:rsna"),
        ("https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia", "kaggle:kermany"),
        ("https://www.kaggle.com/someone/other-set", "kaggle:other-set"),
        ("https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/#1590858128006", "bimcv"),
        ("https://eurorad.org", "eurorad"),
        ("https://example.org/x", "example.org"),
        ("not a url", None),
        (float("nan"), None),
    ],
)
def test_site_from_url(url: object, site: str | None) -> None:
    assert site_from_url(url) == site
