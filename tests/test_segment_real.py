"""The shipped lung segmenter on real films: held-out v7labs masks, DICOM, JPEG, and the crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrad.preprocess import PreprocessConfig, decode_image, prepare
from cxrad.segment import Segmenter, dice, segment_files

pytestmark = pytest.mark.data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter()


def test_shipped_segmenter_matches_held_out_masks(shared_data: Path, seg: Segmenter) -> None:
    held = pd.read_csv(REPO / "benchmarks/results/segmenter/heldout_dice.csv")
    pairs = pd.read_csv(shared_data / "v7labs-lung-masks/pairs.csv").set_index("image_path")
    scores = []
    for image in held["image"].iloc[:6]:
        truth = np.asarray(Image.open(shared_data / pairs.loc[image, "mask_path"])) > 127
        scores.append(dice(seg.segment(decode_image(shared_data / image)).mask, truth))
    assert np.mean(scores) > 0.9, scores


def test_real_dicom_jpeg_png_records(shared_data: Path, seg: Segmenter, tmp_path: Path) -> None:
    fx = shared_data / "fixtures/xrv-tests"
    files = [
        fx / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
        fx / "covid-19-pneumonia-58-prior.jpg",
        fx / "00000001_000.png",
    ]
    recs = list(segment_files(files, out=tmp_path, segmenter=seg))
    for r in recs:
        assert r["status"] == "ok", r
        lungs = r["lungs"]
        assert 0.1 < lungs["lung_area_fraction"] < 0.6, r
        assert 0.3 < lungs["image_left_share"] < 0.7, r
        x0, y0, x1, y1 = lungs["box"]
        w, h = lungs["width"], lungs["height"]
        assert x0 < 0.3 * w and x1 > 0.7 * w and y1 - y0 > 0.3 * h, r


def test_crop_lungs_on_a_real_film(shared_data: Path) -> None:
    path = shared_data / "fixtures/xrv-tests/00000001_000.png"
    plain = prepare(path, PreprocessConfig(size=64))
    cropped = prepare(path, PreprocessConfig(size=64, crop="lungs"))
    assert cropped.shape == plain.shape == (64, 64)
    assert not np.array_equal(plain, cropped)
