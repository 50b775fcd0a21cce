"""Fuzz: mutated NIH and ieee8023 label files end as a clean LabelFileError (exit 2) or a
manifest with one row per image, never a raw exception or a lost image."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxrad.errors import CxradError
from cxrad.ingest import ingest
from fuzzing import mutate
from test_ingest_labelfiles import GOOD, IEEE_HEADER, NIH_HEADER, ieee, nih

NIH_TEXT = ("\n".join([NIH_HEADER, *GOOD]) + "\n").encode()
IEEE_ROWS = [
    "p1,0,M,50,COVID-19,PA,X-ray,images,x0.png",
    "p2,0,F,40,No Finding,AP,X-ray,images,x1.png",
]
IEEE_TEXT = ("\n".join([IEEE_HEADER, *IEEE_ROWS]) + "\n").encode()

# Text-level edits a person or a spreadsheet makes, besides raw byte mutation.
EDITS = [
    lambda b: b.replace(b",", b";"),
    lambda b: b.replace(b",", b"\t"),
    lambda b: b.replace(b"Finding Labels", b"Findings"),
    lambda b: b.replace(b"Patient ID", b"PatientID"),
    lambda b: b.decode().replace("F,", "Fé,").encode("latin-1"),
    lambda b: b.replace(b"Mass", b"No Finding|Mass"),
    lambda b: b.replace(b",1,", b",,"),
    lambda b: b + b"00000000_000.png,Hernia,0,9,1,M,PA,1,1,0,0\n",
    lambda b: b.replace(b"\n", b"\r\n"),
    lambda b: b"\xef\xbb\xbf" + b,
    lambda b: b.replace(b'"', b"").replace(b"Mass", b'"Mass'),
    lambda b: b[: len(b) // 2],
]


def check_one(root: Path, images: int, source: str) -> str:
    """``"ok"`` or ``"error"``; fails the test on a raw exception or a lost image."""
    try:
        df, _ = ingest(root, hash_images=False)
    except CxradError as e:
        assert str(e) and "\n" not in str(e).strip(), str(e)
        return "error"
    except Exception:
        pytest.fail(f"raw exception for {root}:\n{traceback.format_exc(limit=4)}")
    listed = df[df["source"] == source]
    present = listed[listed["status"] != "missing file"]
    assert present["path"].nunique() >= images, (root, df[["image_id", "status"]])
    return "ok"


def run_seeds(tmp: Path, seeds: range) -> dict[str, int]:
    counts = {"ok": 0, "error": 0}
    for seed in seeds:
        nih_root = nih(tmp / f"nih{seed}", [])
        text = EDITS[seed % len(EDITS)](NIH_TEXT) if seed % 3 == 0 else mutate(NIH_TEXT, seed)
        (nih_root / "Data_Entry_2017_v2020.csv").write_bytes(text)
        counts[check_one(nih_root, 3, "nih")] += 1
        ieee_root = ieee(tmp / f"ieee{seed}", [])
        (ieee_root / "metadata.csv").write_bytes(mutate(IEEE_TEXT, seed))
        try:
            df, _ = ingest(ieee_root, hash_images=False)
            counts["ok"] += 1
            assert len(df) >= 1
        except CxradError:
            counts["error"] += 1
    return counts


def test_mutated_label_files(tmp_path: Path) -> None:
    counts = run_seeds(tmp_path, range(24))
    assert sum(counts.values()) == 48 and counts["ok"] and counts["error"]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(
                ["No Finding", "Mass", "Effusion|Mass", "No Finding|Mass", "", "Foo", "Mass|"]
            ),
            st.text(alphabet="0123456789 ", max_size=4),
        ),
        min_size=3,
        max_size=3,
    )
)
def test_any_label_values_give_one_row_per_image(
    tmp_path: Path, rows: list[tuple[str, str]]
) -> None:
    import uuid

    lines = [
        f"0000000{i}_000.png,{label},0,{pid},40,F,PA,1,1,0,0" for i, (label, pid) in enumerate(rows)
    ]
    root = nih(tmp_path / uuid.uuid4().hex, lines)
    df, summary = ingest(root, hash_images=False)
    assert len(df) == 3 and df["image_id"].is_unique
    for (label, _), status in zip(rows, df.sort_values("image_id")["status"], strict=True):
        good = label in ("No Finding", "Mass", "Effusion|Mass", "Mass|")
        assert (status == "ok") == good, (label, status)
    assert summary["rows"] == 3


@pytest.mark.slow
def test_slow_mutated_label_files(tmp_path: Path) -> None:
    counts = run_seeds(tmp_path, range(1000, 1600))
    assert sum(counts.values()) == 1200
    print(counts)  # recorded in BENCHMARKS.md
