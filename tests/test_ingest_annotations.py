"""Ingest: TBX11K box files and COVIDx label lists, well formed, malformed and byte-mutated.

A malformed box file for one image leaves that image usable (its label is its folder) with the
reason in ``meta.boxes_error``; a COCO json that is not one is a one-line LabelFileError (exit
2); a COVIDx line that can't be parsed is that line's row. Never a traceback or a lost image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import synth_layouts as synth
from cxrad.errors import LabelFileError
from cxrad.ingest import ADAPTERS
from fuzzing import mutate
from synth_layouts import tiny_images
from test_fuzz_labels import check_one

TBX, COVIDX = "tbx11k", "covidx"


def test_a_malformed_box_file_keeps_its_film_and_says_why(tmp_path: Path) -> None:
    root = synth.tbx11k(tmp_path)
    (root / "annotations" / "xml" / "tb0003.xml").write_text("<annotation><size>")
    (root / "annotations" / "xml" / "tb0004.xml").write_text(
        synth.TBX_XML.format(stem="tb0004").replace("<xmin>1446", "<xmin>left")
    )
    df = ADAPTERS[TBX].read(root).set_index("image_id")
    assert (df["status"] == "ok").all() and (df["TUBERCULOSIS"] == 1).all()
    for stem, why in (("tb0003", "no element found"), ("tb0004", "could not convert")):
        meta = json.loads(df.loc[f"{TBX}/imgs/tb/{stem}.png", "meta"])
        assert meta["boxes"] == [] and why in meta["boxes_error"], meta
        assert meta["boxes_error"].startswith(f"{stem}.xml: ")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"images": [', "line 1 column 13"),
        ('{"images": [{"id": 1}]}', "KeyError 'file_name'"),
        (
            '{"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 1}]}',
            "KeyError 'category_id'",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": 3}]}',
            "TypeError",
        ),
        ("[1, 2]", "AttributeError"),
    ],
)
def test_a_coco_json_that_is_not_one_is_a_one_line_error(
    tmp_path: Path, text: str, where: str
) -> None:
    synth.tbx11k_json(tmp_path)
    js = tmp_path / "TBX11K" / "annotations" / "json" / "TBX11K_train.json"
    js.write_text(text)
    with pytest.raises(LabelFileError) as e:
        ADAPTERS[TBX].read(tmp_path)
    msg = str(e.value)
    assert str(js) in msg and where in msg and "expected a COCO json" in msg and "\n" not in msg


def test_cli_exits_2_on_a_broken_coco_json(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from cxrad.cli import main

    synth.tbx11k_json(tmp_path / "data")
    (tmp_path / "data" / "TBX11K" / "annotations" / "json" / "TBX11K_train.json").write_text("{")
    monkeypatch.setattr(sys, "argv", ["cxrad", "ingest", str(tmp_path / "data"), "--out", str(tmp_path / "w")])  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "TBX11K_train.json: line 1 column 2" in err
    assert "Traceback" not in err and not (tmp_path / "w" / "manifest.parquet").exists()


def test_tbx11k_official_lists_set_the_split(tmp_path: Path) -> None:
    root = synth.tbx11k(tmp_path)
    lists = root / "lists"
    lists.mkdir()
    (lists / "TBX11K_train.txt").write_text("tb/tb0003.png\n")
    (lists / "TBX11K_val.txt").write_text("tb/tb0004.png\n")
    (lists / "TBX11K_trainval.txt").write_text("tb/tb0003.png\ntb/tb0004.png\n")  # a union: ignored
    df = ADAPTERS[TBX].read(root).set_index("image_id")
    assert df["official_split"].to_dict() == {f"{TBX}/imgs/tb/tb0003.png": "train", f"{TBX}/imgs/tb/tb0004.png": "val"}  # fmt: skip


def _covidx(tmp: Path) -> Path:
    tiny_images(tmp, ["train/a.png", "train/b.png", "test/c.png"])
    (tmp / "train_COVIDx9B.txt").write_text(
        "5 a.png positive cohen\nbroken\n6 b.png negative rsna\n"
    )
    (tmp / "test_COVIDx9B.txt").write_text("7 c.png positive sirm\n")
    return tmp


def test_covidx_bad_lines_and_repeats_are_rows_with_their_reason(tmp_path: Path) -> None:
    root = _covidx(tmp_path)
    (root / "train_COVIDx8B.txt").write_text("5 a.png positive cohen\n")  # an older release
    df = ADAPTERS[COVIDX].read(root).set_index("image_id")
    assert df.loc[f"{COVIDX}/train_COVIDx9B.txt#line2", "status"] == "unmapped label: bad line 2 of train_COVIDx9B.txt"  # fmt: skip
    assert df.loc[f"{COVIDX}/train_COVIDx9B.txt#line2", "raw_label"] == "broken"
    again = df.loc[f"{COVIDX}/train/a.png#train_COVIDx9B.txt"]  # files are read in name order
    assert again["status"] == "excluded: listed again in another label file"
    assert df.loc[f"{COVIDX}/train/a.png", "status"] == "ok" and len(df) == 5


# -- fuzz: seeded byte mutations of each annotation file ------------------------------------


def fuzz(tmp: Path, seeds: range) -> dict[str, int]:
    counts = {"ok": 0, "error": 0}
    for seed in seeds:
        xml_root = synth.tbx11k(tmp / f"x{seed}")
        xml = xml_root / "annotations" / "xml" / "tb0003.xml"
        xml.write_bytes(mutate(xml.read_bytes(), seed))
        counts[check_one(xml_root, 2, TBX)] += 1
        synth.tbx11k_json(tmp / f"j{seed}")
        js = tmp / f"j{seed}" / "TBX11K" / "annotations" / "json" / "TBX11K_train.json"
        js.write_bytes(mutate(js.read_bytes(), seed))
        counts[check_one(tmp / f"j{seed}", 4, TBX)] += 1
        cx = _covidx(tmp / f"c{seed}")
        label = cx / "train_COVIDx9B.txt"
        label.write_bytes(mutate(label.read_bytes(), seed))
        counts[check_one(cx, 1, COVIDX)] += 1
    return counts


def test_mutated_annotation_files(tmp_path: Path) -> None:
    counts = fuzz(tmp_path, range(40))
    assert sum(counts.values()) == 120 and counts["ok"] and counts["error"]


@pytest.mark.slow
def test_slow_mutated_annotation_files(tmp_path: Path) -> None:
    counts = fuzz(tmp_path, range(2000, 2400))
    assert sum(counts.values()) == 1200
    print(counts)  # recorded in BENCHMARKS.md
