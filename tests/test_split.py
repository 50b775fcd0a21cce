"""Stage 3, split: grouped, stratified, seeded splits; keep_official; image_docs; split_work; CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrad.errors import SplitError
from cxrad.labels import CLASSES
from cxrad.manifest import make_rows, read_manifest, write_manifest
from cxrad.manifest.image_docs import write_image_docs
from cxrad.split import assign_splits, check_ratios, leak_checks, split_work
from cxrad.split.work import duplicate_stats


def synthetic(n_patients: int = 300, seed: int = 0) -> pd.DataFrame:
    """Patients with 1-4 images, a rare class (HERNIA, 6 patients), cross-patient dup groups."""
    rng = np.random.default_rng(seed)
    recs = []
    for p in range(n_patients):
        cls = "HERNIA" if p % 50 == 7 else ("PNEUMONIA" if rng.random() < 0.4 else "NORMAL")
        for k in range(int(rng.integers(1, 5))):
            recs.append(
                {
                    "image_id": f"src/p{p:04d}_{k}.png",
                    "path": f"/nowhere/p{p}_{k}.png",
                    "source": "src" if p % 3 else "other",
                    "patient_id": f"src:{p}",
                    "official_split": "test" if p % 10 == 0 else "train",
                    "NORMAL": float(cls == "NORMAL"),
                    "PNEUMONIA": float(cls == "PNEUMONIA"),
                    "HERNIA": float(cls == "HERNIA") if cls == "HERNIA" else np.nan,
                    "sha1": f"{p:030d}{k:010d}",
                    "status": "ok",
                }
            )
    recs.append(
        {"image_id": "src/bad.png", "path": "/x", "source": "src", "status": "unreadable: x"}
    )
    df = make_rows(recs)
    df["dup_group"] = pd.array(np.arange(len(df)), dtype="Int64")
    # every 25th patient's first image duplicates the next patient's first image
    first = df.groupby("patient_id").head(1).index.to_numpy()
    for a, b in zip(first[::25], first[1::25], strict=False):
        df.loc[b, "dup_group"] = df.loc[a, "dup_group"]
    return df


def test_split_is_deterministic_and_seed_dependent() -> None:
    df = synthetic()
    a = assign_splits(df, seed=3)["split"]
    b = assign_splits(df, seed=3)["split"]
    c = assign_splits(df, seed=4)["split"]
    assert a.equals(b)
    assert (a != c).sum() > 20
    shuffled = assign_splits(df.sample(frac=1, random_state=1), seed=3)
    assert shuffled.set_index("image_id").loc[df["image_id"], "split"].tolist() == a.tolist()


@pytest.mark.parametrize("seed", range(5))
def test_no_patient_or_dup_group_in_two_splits(seed: int) -> None:
    df = synthetic(seed=seed)
    out = assign_splits(df, seed=seed)
    assert leak_checks(out) == {"patients_in_several_splits": 0, "dup_groups_in_several_splits": 0}
    # the dup link really crossed patients, so whole chains moved together
    g = out.dropna(subset=["patient_id"]).groupby("dup_group")["patient_id"].nunique()
    assert (g > 1).sum() >= 10
    assert out["split"].isna().tolist() == (out["status"] != "ok").tolist()


def test_ratios_respected_and_rare_class_everywhere() -> None:
    df = synthetic(n_patients=600)
    out = assign_splits(df, ratios=(0.6, 0.3, 0.1), seed=0)
    frac = out["split"].value_counts(normalize=True)
    assert frac["train"] == pytest.approx(0.6, abs=0.02)
    assert frac["test"] == pytest.approx(0.3, abs=0.02)
    assert frac["val"] == pytest.approx(0.1, abs=0.02)
    hernia = out[out["HERNIA"] == 1].groupby("split")["patient_id"].nunique()
    assert set(hernia.index) == {"train", "val", "test"}  # 12 patients, all three splits
    pneu = out[out["PNEUMONIA"] == 1]["split"].value_counts(normalize=True)
    assert pneu["train"] == pytest.approx(0.6, abs=0.03)


def test_zero_ratio_split_stays_empty() -> None:
    out = assign_splits(synthetic(), ratios=(0.8, 0.2, 0.0), seed=0)
    assert set(out["split"].dropna()) == {"train", "test"}


def test_keep_official_pulls_patients_and_duplicates_to_test() -> None:
    df = synthetic()
    # a test-patient image duplicated by an official-train image of another patient
    t = df.index[df["official_split"] == "test"][0]
    tr = df.index[
        (df["official_split"] == "train") & (df["patient_id"] != df.loc[t, "patient_id"])
    ][5]
    df.loc[tr, "dup_group"] = df.loc[t, "dup_group"]
    out = assign_splits(df, seed=0, keep_official=True)
    assert (out.loc[out["official_split"] == "test", "split"] == "test").all()
    assert out.loc[tr, "split"] == "test"
    pulled = out["patient_id"] == df.loc[tr, "patient_id"]
    assert (out.loc[pulled, "split"] == "test").all()
    rest = out[(out["official_split"] == "train") & (out["split"] != "test")]
    assert set(rest["split"]) == {"train", "val"}
    assert (rest["split"] == "val").mean() == pytest.approx(0.1 / 0.7, abs=0.04)
    assert leak_checks(out)["patients_in_several_splits"] == 0


def test_keep_official_with_sources_that_have_no_official_split() -> None:
    # Real manifests mix sources with and without an official split (null): those rows must be
    # split with the normal ratios, not crash on the null.
    df = synthetic()
    other = df["source"] == "other"
    df["official_split"] = df["official_split"].astype("string")
    df.loc[other, "official_split"] = pd.NA
    out = assign_splits(df, seed=0, keep_official=True)
    assert (out.loc[out["official_split"] == "test", "split"] == "test").all()
    assert set(out.loc[other, "split"]) == {"train", "val", "test"}
    assert leak_checks(out)["patients_in_several_splits"] == 0


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.7, 0.3, 0.1), (1.2, -0.1, -0.1), ("a", 0, 1)])
def test_bad_ratios_raise(bad: tuple) -> None:
    with pytest.raises(SplitError, match="ratios"):
        check_ratios(bad)


def test_image_docs_format(tmp_path: Path) -> None:
    df = make_rows(
        [
            {
                "image_id": "b/x.png",
                "path": "/b",
                "source": "b",
                "status": "ok",
                "NORMAL": 1.0,
                "PNEUMONIA": 0.0,
            },
            {
                "image_id": "a/y,1.png",
                "path": "/a",
                "source": "a",
                "status": "ok",
                "MASS": 1.0,
                "EFFUSION": 1.0,
            },
            {"image_id": "c/z.png", "path": "/c", "source": "c", "status": "ok", "PNEUMONIA": 1.0},
            {
                "image_id": "d/n.png",
                "path": "/d",
                "source": "d",
                "status": "excluded: CT",
                "NORMAL": 1.0,
            },
        ]
    )
    df["split"] = pd.array(["train", "test", "val", None], dtype="string")
    n = write_image_docs(df, tmp_path / "image_docs.csv")
    text = (tmp_path / "image_docs.csv").read_text()
    assert text == (
        "image,anomaly,split category\n"
        '"a/y,1.png",EFFUSION,TEST\n'
        '"a/y,1.png",MASS,TEST\n'
        "b/x.png,NORMAL,TRAIN\n"
        "c/z.png,PNEUMONIA,VALIDATION\n"
    )
    assert n == 4
    assert next(csv.reader(text.splitlines()[1:2])) == ["a/y,1.png", "EFFUSION", "TEST"]


def test_split_work_writes_everything(tmp_path: Path) -> None:
    df = synthetic(n_patients=80).drop(columns="dup_group")
    df["phash"] = pd.array(
        [f"{i * 0x9E3779B97F4A7C15 % 2**64:016x}" for i in range(len(df))], dtype="string"
    )
    write_manifest(df, tmp_path)
    s = split_work(tmp_path, ratios=(0.6, 0.3, 0.1), seed=1, workers=1)
    m = read_manifest(tmp_path)
    assert set(m["split"].dropna()) == {"train", "val", "test"}
    assert m["dup_group"].notna().all()
    assert s["leaks"] == {"patients_in_several_splits": 0, "dup_groups_in_several_splits": 0}
    assert sum(c["images"] for c in s["counts"].values()) == s["split_rows"] == len(df) - 1
    assert s["not_split"] == {"unreadable": 1}
    assert json.loads((tmp_path / "split_summary.json").read_text())["seed"] == 1
    docs = (tmp_path / "image_docs.csv").read_text().splitlines()
    assert docs[0] == "image,anomaly,split category" and len(docs) - 1 == s["image_docs_lines"]
    assert set(CLASSES) >= {line.split(",")[1] for line in docs[1:]}


def test_cli_split_rejects_bad_ratios(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrad.cli import app

    write_manifest(synthetic(n_patients=5).drop(columns="dup_group"), tmp_path)
    result = CliRunner().invoke(app, ["split", str(tmp_path), "--ratios", "0.5,0.6,0.1"])
    assert isinstance(result.exception, SplitError)
    assert str(result.exception) == "ratios must sum to 1 (train, test, val), got 0.5,0.6,0.1 = 1.2"
    assert "confirming" not in result.output  # refused before any work or bar


def test_duplicate_stats_count_groups_across_sources() -> None:
    df = make_rows(
        [
            {"image_id": f"{src}/{i}.png", "path": f"/x/{src}{i}", "source": src, "status": "ok"}
            for src, i in [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("c", 0), ("b", 1)]
        ]
    )
    df["dup_group"] = pd.array([0, 0, 1, 1, 2, 2], dtype="Int64")  # a+b, a+a, c+b, and no lone
    s = duplicate_stats(df, pd.DataFrame())
    assert (s["groups"], s["images_in_groups"], s["cross_source_groups"]) == (3, 6, 2)
    assert s["source_pairs"] == {"a + b": 1, "b + c": 1}
