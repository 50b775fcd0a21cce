"""`cxrad ingest` and `ingest()`: errors with one-line reasons, outputs, and root handling.

These build tiny synthetic layouts, so they run without ../shared/data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrad.cli import main
from cxrad.errors import IngestError
from cxrad.ingest import detect_format, ingest
from cxrad.manifest import read_manifest
from helpers import make_dicom


def tiny_tree(root: Path, layout: dict[str, int]) -> Path:
    """``{"Normal": 2, "tb": 1}`` -> 32 px PNGs in those class folders (distinct pixels)."""
    rng = np.random.default_rng(len(str(root)))
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, (32, 32), dtype=np.uint8)
            Image.fromarray(arr).save(root / folder / f"img{i}.png")
    return root


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def test_cli_missing_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = run_cli(["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "w")], monkeypatch, capsys)  # fmt: skip
    assert code == 2
    assert "error:" in err and "does not exist" in err
    assert not (tmp_path / "w").exists()


def test_cli_empty_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, err = run_cli(["ingest", str(tmp_path / "empty"), "--out", str(tmp_path / "w")], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "is empty" in err


def test_cli_unknown_layout_lists_every_layout(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_tree(tmp_path / "leaf", {".": 2})  # images, no label file, no class folders
    code, err = run_cli(["ingest", str(tmp_path / "leaf"), "--out", str(tmp_path / "w")], monkeypatch, capsys)  # fmt: skip
    assert code == 2
    assert "matches no known dataset layout" in err
    for name in ("kaggle-pediatric", "nih", "ieee8023", "covidx", "tbx11k", "class-folders"):
        assert name in err
    assert "[chest_xray/]" in err  # layouts are printed literally, not eaten as markup


def test_cli_unknown_format_suggests(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_tree(tmp_path / "d", {"Normal": 1})
    code, err = run_cli(["ingest", str(tmp_path / "d"), "--format", "nhi", "--out", str(tmp_path / "w")], monkeypatch, capsys)  # fmt: skip
    assert code == 2 and "Did you mean 'nih'?" in err


def test_cli_writes_manifest_and_summary(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_tree(tmp_path / "mine", {"Normal": 2, "TB": 1, "weird": 1})
    work = tmp_path / "work"
    code, err = run_cli(["ingest", str(tmp_path / "mine"), "--out", str(work), "--workers", "1"], monkeypatch, capsys)  # fmt: skip
    assert code == 0, err
    df = read_manifest(work)
    assert len(df) == 4 and df["sha1"].notna().sum() == 3  # the unmapped row is not hashed
    summary = json.loads((work / "ingest_summary.json").read_text())
    assert summary["rows"] == 4 and summary["ok"] == 3
    assert summary["per_class"]["NORMAL"] == 2 and summary["per_class"]["TUBERCULOSIS"] == 1
    assert summary["rejects"] == {"unmapped label: weird": 1}
    assert "class-folders" in err and "unmapped label: weird (1)" in err


def test_cli_no_hash(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_tree(tmp_path / "mine", {"Normal": 1})
    code, _ = run_cli(["ingest", str(tmp_path / "mine"), "--out", str(tmp_path / "w"), "--no-hash"], monkeypatch, capsys)  # fmt: skip
    assert code == 0
    assert read_manifest(tmp_path / "w")["sha1"].isna().all()


def test_detect_format_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="does not exist"):
        detect_format(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(IngestError, match="is a file"):
        detect_format(tmp_path / "f.txt")
    with pytest.raises(IngestError, match="is a file"):
        ingest([tmp_path / "f.txt"], hash_images=False)


def test_parent_folder_and_loose_files(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "parent/a", {"Normal": 1})
    tiny_tree(tmp_path / "parent/b", {"covid": 2})
    tiny_tree(tmp_path / "parent/junk/deeper", {"x": 1})
    df, summary = ingest(tmp_path / "parent", hash_images=False)
    assert len(df) == 3 and df["image_id"].is_unique
    notes = "\n".join(summary["notes"])
    assert "not a dataset itself" in notes and "junk: no known layout; skipped" in notes
    (tmp_path / "README.md").write_text("x")
    df2, summary2 = ingest([tmp_path / "parent/a", tmp_path / "README.md"], hash_images=False)
    assert len(df2) == 1 and "README.md: a file" in summary2["notes"][0]


def test_unknown_folder_errors_alone_but_is_noted_among_others(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "junk/deeper/evendeeper", {"x": 1})
    with pytest.raises(IngestError, match="no known dataset layout"):
        ingest(tmp_path / "junk", hash_images=False)
    tiny_tree(tmp_path / "good", {"Normal": 1})
    df, summary = ingest([tmp_path / "good", tmp_path / "junk"], hash_images=False)
    assert len(df) == 1 and any("junk: no known layout" in n for n in summary["notes"])


def test_same_dataset_twice_gets_distinct_ids(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "copy1", {"Normal": 2})
    tiny_tree(tmp_path / "copy2", {"Normal": 2})
    df, summary = ingest([tmp_path / "copy1", tmp_path / "copy2", tmp_path / "copy1"], hash_images=False)  # fmt: skip
    assert len(df) == 4 and df["image_id"].is_unique
    assert df["image_id"].str.startswith("class-folders@copy2/").sum() == 2
    assert any("given twice" in n for n in summary["notes"])


def test_suffixless_dicom_is_ingested_and_stray_files_are_reported(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    root = tiny_tree(tmp_path / "mine", {"Normal": 1, "TB": 1})
    pixels = np.random.default_rng(0).integers(0, 4095, (32, 32), dtype=np.uint16)
    uid_named = root / "TB" / "1.2.840.113619.2.55.3.604688119"  # a scanner-style name
    make_dicom(uid_named, pixels, bits_stored=12)
    (root / "TB" / "report.docx").write_bytes(b"PK\x03\x04 not an image")
    (root / "Normal" / "labels.csv").write_text("image,label\n")
    (root / "Normal" / ".DS_Store").write_bytes(b"\x00" * 200)
    work = tmp_path / "work"
    code, err = run_cli(["ingest", str(root), "--out", str(work), "--workers", "1"], monkeypatch, capsys)  # fmt: skip
    assert code == 0, err
    df = read_manifest(work)
    row = df[df["path"].str.endswith("604688119")]
    assert len(row) == 1 and row["status"].iloc[0] == "ok" and row["TUBERCULOSIS"].iloc[0] == 1
    summary = json.loads((work / "ingest_summary.json").read_text())
    stray = summary["roots"][0]["not_ingested"]
    assert stray["files"] == 2  # the hidden file is ignored
    assert stray["by_reason"] == {"label or metadata file": 1, "not an image type": 1}
    assert stray["examples"]["not an image type"] == [str(root / "TB" / "report.docx")]
    assert "1 file left out of the manifest (not an image type: 1)" in err
    assert "report.docx" in err and "labels.csv" not in err


def test_reingesting_a_split_work_says_the_split_is_dropped(tmp_path: Path, monkeypatch, capsys) -> None:  # fmt: skip
    data, work = tiny_tree(tmp_path / "mine", {"Normal": 6, "tb": 6}), tmp_path / "work"
    code, err = run_cli(["ingest", str(data), "--out", str(work), "--no-hash"], monkeypatch, capsys)
    assert code == 0 and "split is dropped" not in err  # nothing to drop yet
    assert run_cli(["split", str(work)], monkeypatch, capsys)[0] == 0
    assert read_manifest(work)["split"].notna().all()
    code, err = run_cli(["ingest", str(data), "--out", str(work), "--no-hash"], monkeypatch, capsys)
    err = " ".join(err.split())
    assert code == 0 and "warning:" in err and "the split is dropped" in err
    assert f"rerun `cxrad split {work}`" in err and "train " in err
    assert "split" not in read_manifest(work).columns
    summary = json.loads((work / "ingest_summary.json").read_text())
    assert "the split is dropped" in summary["split_dropped"]
