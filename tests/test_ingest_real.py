"""Ingest on all of ../shared/data: the counts its README states, checked independently."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxrad.ingest import ingest
from cxrad.labels import CLASSES

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def everything(shared_data: Path) -> tuple[pd.DataFrame, dict]:
    """``cxrad ingest ../shared/data/*`` without hashing (hashing has its own tests)."""
    roots = sorted(shared_data.iterdir())  # includes README.md and fixtures/, as a shell glob does
    return ingest(roots, hash_images=False)


def _ok(df: pd.DataFrame, source: str) -> pd.DataFrame:
    return df[(df["source"] == source) & (df["status"] == "ok")]


def test_pediatric_counts(everything) -> None:
    df, _ = everything
    ped = _ok(df, "kaggle-pediatric")
    assert len(ped) == 5840
    counts = ped.groupby(["official_split", "raw_label"]).size().to_dict()
    assert counts == {
        ("train", "NORMAL"): 1341,
        ("train", "PNEUMONIA"): 3875,
        ("test", "NORMAL"): 234,
        ("test", "PNEUMONIA"): 390,
    }
    # person numbers restart per split folder: the ids must not merge train and test people
    assert "kaggle-pediatric:train/person1" in set(ped["patient_id"])
    assert "kaggle-pediatric:test/person1" in set(ped["patient_id"])
    assert ped["patient_id"].notna().all()
    by_patient = ped.groupby("patient_id")["official_split"].nunique()
    assert (by_patient == 1).all()


def test_radiography_nih_tbx_counts(everything) -> None:
    df, summary = everything
    rad = _ok(df, "covid19-radiography")
    assert len(rad) == 2500
    assert int(rad["COVID_19"].sum()) == 2000 and int(rad["NORMAL"].sum()) == 500
    assert len(_ok(df, "nih")) == 1289
    assert len(_ok(df, "tbx11k")) == 650
    assert summary["per_source"]["tbx11k"]["positives"] == {"TUBERCULOSIS": 650}


def test_nih_labels_match_the_label_file(everything, shared_data: Path) -> None:
    df, _ = everything
    nih = _ok(df, "nih").set_index(df.loc[_ok(df, "nih").index, "path"].map(lambda p: Path(p).name))
    table = pd.read_csv(shared_data / "nih-chestxray14" / "Data_Entry_2017_v2020.csv.gz")
    table = table.set_index("Image Index").loc[nih.index]
    for finding, cls in [("Pneumonia", "PNEUMONIA"), ("Pleural_Thickening", "PLEURAL_THICKENING"), ("No Finding", "NORMAL")]:  # fmt: skip
        expected = table["Finding Labels"].str.split("|").map(lambda f, x=finding: x in f)
        assert (nih[cls] == expected.astype("float32")).all(), finding
    # Provenance rules: NIH predates COVID-19; a No Finding film is 0 for TB, the rest unknown.
    assert (nih["COVID_19"] == 0).all()
    normal = nih["NORMAL"] == 1
    assert (nih.loc[normal, "TUBERCULOSIS"] == 0).all()
    assert nih.loc[~normal, "TUBERCULOSIS"].isna().all()


def test_provenance_rules_fill_known_absences(everything) -> None:
    df, summary = everything
    for source in ("nih", "kaggle-pediatric", "tbx11k"):
        assert (_ok(df, source)["COVID_19"] == 0).all(), source
    normal = df[(df["status"] == "ok") & (df["NORMAL"] == 1)]
    assert not normal[[c for c in CLASSES if c != "NORMAL"]].isna().any().any()
    assert not normal[[c for c in CLASSES if c != "NORMAL"]].eq(1).any().any()
    lp = summary["label_provenance"]
    assert lp["set_by_rules"]["nih"]["pre_covid_nih"]["COVID_19"] > 0
    assert lp["counts"]["nih"]["COVID_19"] == {"1": 0, "0": 1289, "nan": 0}
    assert {r["name"] for r in lp["rules"]} >= {"normal_has_no_finding", "pre_covid_kermany"}


def test_covid_cxnet_and_radiography_sites(everything) -> None:
    df, _ = everything
    cx = _ok(df, "covid-cxnet")
    assert len(cx) == 188 and (cx["COVID_19"] == 1).all() and (cx["NORMAL"] == 0).all()
    assert cx["patient_id"].notna().all() and cx["patient_id"].nunique() == 137
    assert cx["site"].notna().all()
    rad = _ok(df, "covid19-radiography")
    normal_sites = set(rad.loc[rad["NORMAL"] == 1, "site"].dropna())
    assert normal_sites == {"kaggle:rsna", "kaggle:kermany"}
    assert rad["site"].notna().all()


def test_ieee8023_counts_cross_checked(everything, shared_data: Path) -> None:
    df, summary = everything
    root = shared_data / "ieee8023-covid-chestxray"
    ieee = df[df["source"] == "ieee8023"]
    ok = ieee[ieee["status"] == "ok"]
    # The same filter, computed independently from metadata.csv
    m = pd.read_csv(root / "metadata.csv")
    m = m[~m["filename"].duplicated()]
    m = m[(m["modality"] == "X-ray") & m["view"].fillna("").str.match(r"^(PA|AP)")]
    m = m[[(root / f / n).is_file() for f, n in zip(m["folder"], m["filename"], strict=True)]]
    m = m[~m["finding"].isin(["todo", "ARDS"])]
    covid = m["finding"].str.contains("COVID-19")
    normal = m["finding"] == "No Finding"
    assert len(ok) == len(m) == 431
    assert int(ok["COVID_19"].sum()) == int(covid.sum()) == 343
    assert int(ok["NORMAL"].sum()) == int(normal.sum()) == 11
    assert int(ok["PNEUMONIA"].sum()) == int((~covid & ~normal).sum()) == 77
    # nothing disappears: every metadata line is a row, with a reason when unusable
    assert len(ieee) == 659
    assert summary["per_source"]["ieee8023"]["rejects"] == {
        "excluded: CT": 84,
        "excluded: lateral view": 57,
        "excluded: view unknown": 39,
        "unlabelled: todo": 28,
        "missing file": 11,
        "excluded: repeated metadata row": 5,
        "unmapped label: ARDS": 4,
    }


def test_summary_counts_everything(everything) -> None:
    df, summary = everything
    assert summary["rows"] == len(df) == 41820 + 188
    assert summary["ok"] == 5840 + 2500 + 1289 + 650 + 431 + 188
    assert sum(summary["per_status"].values()) == len(df)
    assert summary["per_source"]["covidx"] == {
        "rows": 30882,
        "ok": 0,
        "positives": {},
        "rejects": {"missing file": 30882},
    }
    notes = "\n".join(summary["notes"])
    assert "README.md: a file" in notes and "fixtures: no known layout" in notes
    assert summary["per_class"]["COVID_19"] == 2000 + 343 + 188
    assert df["patient_id"].dropna().str.contains(":").all()


@pytest.mark.slow
def test_parent_folder_is_searched_one_level(shared_data: Path) -> None:
    df, summary = ingest(shared_data, hash_images=False)
    assert set(df["source"]) == {"kaggle-pediatric", "covid19-radiography", "nih", "tbx11k", "ieee8023", "covidx"}  # fmt: skip
    assert any("not a dataset itself" in n for n in summary["notes"])
