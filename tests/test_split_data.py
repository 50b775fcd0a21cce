"""Stage 3, split: the real data, ingested and split; overlaps found, no leaks (needs ../shared/data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cxrad.ingest import ingest
from cxrad.manifest import read_manifest, write_manifest
from cxrad.split import leak_checks, split_work

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def split_real(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    work = tmp_path_factory.mktemp("work")
    roots = sorted(p for p in shared_data.iterdir() if p.is_dir() and p.name != "fixtures")
    df, _ = ingest(roots, workers=2)
    write_manifest(df, work)
    return work, split_work(work, seed=0, workers=2)


def test_real_overlaps_found(split_real: tuple[Path, dict[str, Any]]) -> None:
    _, s = split_real
    pairs = s["duplicates"]["source_pairs"]
    # measured: 62 pediatric NORMAL films in Radiography "Normal", 6 NIH (RSNA) films there,
    # 182 ieee8023 images in Radiography "COVID" (all-pairs 256-bit phash, README overlaps)
    assert 55 <= pairs.get("covid19-radiography + kaggle-pediatric", 0) <= 70
    assert 6 <= pairs.get("covid19-radiography + nih", 0) <= 8
    assert 165 <= pairs.get("covid19-radiography + ieee8023", 0) <= 200
    # no false merges between collections that do not overlap
    assert set(pairs) == {
        "covid19-radiography + ieee8023",
        "covid19-radiography + kaggle-pediatric",
        "covid19-radiography + nih",
    }
    assert s["duplicates"]["conflicting_groups"] >= 1  # e.g. ieee8023 "prior" NORMAL vs COVID


def test_real_split_has_no_leaks(split_real: tuple[Path, dict[str, Any]]) -> None:
    work, s = split_real
    assert s["leaks"] == {"patients_in_several_splits": 0, "dup_groups_in_several_splits": 0}
    m = read_manifest(work)
    assert leak_checks(m) == s["leaks"]
    frac = m["split"].value_counts(normalize=True)
    assert frac["train"] == pytest.approx(0.6, abs=0.02)
    assert frac["test"] == pytest.approx(0.3, abs=0.02)
    for name in ("train", "val", "test"):
        assert s["counts"][name]["TUBERCULOSIS"] > 0 and s["counts"][name]["HERNIA"] > 0
