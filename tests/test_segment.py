"""Segment stage: mask geometry, the U-Net round trip, records for good and bad files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from cxrad.cli import app
from cxrad.errors import SegmentError
from cxrad.segment import (
    Segmenter,
    SegmenterConfig,
    bounding_box,
    build_unet,
    clean_mask,
    dice,
    expand_box,
    load_segmenter,
    save_segmenter,
    segment_files,
    split_sides,
)
from helpers import make_dicom, synthetic_xray


class DarkIsLung(nn.Module):
    """A stand-in network: dark pixels are lung (the synthetic films' lungs are dark)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (0.4 - x)


def stub_segmenter() -> Segmenter:
    return Segmenter.from_net(DarkIsLung(), SegmenterConfig(size=32))


def two_lungs(side: int = 64) -> np.ndarray:
    return synthetic_xray("NORMAL", np.random.default_rng(0), side).astype(np.float32) / 255.0


def test_clean_mask_keeps_two_largest_and_fills_holes() -> None:
    m = np.zeros((40, 40), bool)
    m[5:30, 3:15] = m[5:30, 22:36] = True
    m[10, 8] = False  # a hole
    m[36:38, 36:38] = True  # a speck
    m[0:3, 18:21] = True  # a third, small blob
    out = clean_mask(m)
    assert out[10, 8] and not out[37, 37] and not out[1, 19]
    assert out.sum() == 25 * 12 + 25 * 14


def test_split_sides_by_components_and_by_midline() -> None:
    m = np.zeros((20, 20), bool)
    m[2:18, 1:8] = True
    m[2:18, 12:19] = True
    sides = split_sides(m)
    assert sides.by == "components"
    assert sides.image_left[:, :10].sum() == 16 * 7 and not sides.image_left[:, 10:].any()
    merged = np.zeros((20, 20), bool)
    merged[2:18, 2:18] = True
    sides = split_sides(merged)
    assert sides.by == "midline"
    assert sides.image_left.sum() == sides.image_right.sum() == 16 * 8


def test_box_expand_and_dice() -> None:
    m = np.zeros((10, 20), bool)
    m[2:6, 4:14] = True
    assert bounding_box(m) == (4, 2, 14, 6)
    assert bounding_box(np.zeros((3, 3), bool)) is None
    assert expand_box((4, 2, 14, 6), 0.1, 20, 10) == (3, 1, 15, 7)
    assert expand_box((0, 0, 20, 10), 0.5, 20, 10) == (0, 0, 20, 10)
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[:, :2] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_segment_synthetic_film_finds_both_lungs() -> None:
    img = two_lungs(64)
    lungs = stub_segmenter().segment(img)
    truth = img < 0.4
    assert lungs.mask.shape == img.shape
    assert dice(lungs.mask, truth) > 0.9
    s = lungs.summary()
    assert s["split_by"] == "components"
    assert 0.4 < s["image_left_share"] < 0.6
    assert s["lung_area_fraction"] == pytest.approx(truth.mean(), abs=0.03)
    x0, y0, x1, y1 = s["box"]
    assert x0 < 16 and x1 > 48 and y0 < 20 and y1 > 44


def test_save_load_round_trip(tmp_path: Path) -> None:
    config = SegmenterConfig(size=32, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    torch.manual_seed(0)
    net = build_unet(config).eval()
    save_segmenter(net, config, tmp_path / "seg")
    again, cfg = load_segmenter(tmp_path / "seg")
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))
    assert cfg == config
    with pytest.raises(SegmentError, match="not a segmenter folder"):
        load_segmenter(tmp_path / "nowhere")
    weights = tmp_path / "seg" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])  # a copy cut short
    with pytest.raises(SegmentError, match="cannot load the segmenter"):
        load_segmenter(tmp_path / "seg")
    (tmp_path / "seg" / "config.json").write_text(json.dumps({"size": 32, "chanels": [4]}))
    with pytest.raises(SegmentError, match="unknown keys"):
        load_segmenter(tmp_path / "seg")


def test_records_for_png_jpeg_dicom_and_a_bad_file(tmp_path: Path) -> None:
    u8 = (two_lungs(64) * 255).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "a.png")
    Image.fromarray(u8).save(tmp_path / "b.jpg", quality=95)
    make_dicom(tmp_path / "c.dcm", (u8.astype(np.uint16) * 16), bits_stored=12)
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    files = [tmp_path / n for n in ("a.png", "b.jpg", "c.dcm", "bad.png")]
    recs = list(segment_files(files, out=tmp_path / "out", segmenter=stub_segmenter()))
    assert [r["status"] for r in recs] == ["ok", "ok", "ok", "error"]
    assert recs[3]["code"] and recs[3]["reason"] and recs[3]["lungs"] is None
    for r in recs[:3]:
        assert r["lungs"]["split_by"] == "components"
        mask = np.asarray(Image.open(r["mask"]))
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
        ov = np.asarray(Image.open(r["overlay"]))
        assert ov.shape == (64, 64, 3) and (ov[..., 0] != ov[..., 2]).any()  # coloured contours
    json.dumps(recs, allow_nan=False)


def test_cli_segment_writes_records_and_exits_1_on_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg_dir = tmp_path / "seg"
    config = SegmenterConfig(size=32, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    save_segmenter(build_unet(config), config, seg_dir)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((two_lungs(48) * 255).astype(np.uint8)).save(src / "a.png")
    (src / "b.png").write_bytes(b"")
    res = CliRunner().invoke(
        app,
        ["segment", str(src), "--out", str(tmp_path / "out"), "-m", str(seg_dir), "--no-progress"],
    )
    assert res.exit_code == 1, res.output
    lines = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["ok", "error"]
    assert lines[1]["code"] == "empty"  # cxrad.image's stable code
    assert (tmp_path / "out" / "a__lungs.png").is_file()
