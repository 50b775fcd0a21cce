"""Evaluate's "where" sections on a synthetic case whose answer is known by construction.

Films have two dark lungs. Positives carry either a bright marker in the top-left corner
(outside the lungs) or a bright blob inside the left lung. One model reads the marker, the
other the blob. Blanking the lungs must leave the marker reader's AUROC intact (flagged as
shortcut-driven) and take the blob reader's to 0.5 (not flagged).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cxrad.evaluate.counterfactual import blank
from cxrad.evaluate.localisation import centred_blob, input_box, mass_inside, pointing_hit
from cxrad.evaluate.where import where_sections
from cxrad.models import Classifier, ModelSpec
from test_segment import stub_segmenter

S = 64
CLASSES = ["NORMAL", "PNEUMONIA"]
BLOB = (20, 30, 6)  # x, y, radius: inside the image-left lung
yy, xx = np.mgrid[0:S, 0:S]
LUNG = np.zeros((S, S), bool)
for cx in (0.3, 0.7):
    LUNG |= ((xx / S - cx) / 0.16) ** 2 + ((yy / S - 0.5) / 0.32) ** 2 < 1


def film(rng: np.random.Generator, marker: bool, blob: bool) -> np.ndarray:
    img = np.where(LUNG, 0.2, 0.55) + rng.normal(0, 0.02, (S, S))
    if marker:
        img[1:7, 1:7] = 1.0
    if blob:
        x, y, r = BLOB
        img[(xx - x) ** 2 + (yy - y) ** 2 < r * r] = 0.9
    return np.clip(img * 255, 0, 255).astype(np.uint8)


class Reader(nn.Module):
    """Logit = how bright a fixed region is: the corner (marker reader) or the lungs' peak."""

    def __init__(self, region: np.ndarray, peak: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))
        self.peak = peak

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)[:, 0]
        if self.peak:
            v = (a * self.region + (self.region - 1) * 10).amax(dim=(1, 2))
        else:
            v = (a * self.region).sum(dim=(1, 2)) / self.region.sum()
        return v[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = 20 * (self.forward_features(x) - 0.7)
        return torch.cat([-v, v], dim=1)


def reader(kind: str) -> Classifier:
    corner = np.zeros((S, S), bool)
    corner[1:7, 1:7] = True
    net = Reader(corner, peak=False) if kind == "marker" else Reader(LUNG, peak=True)
    spec = ModelSpec(name=f"{kind}-reader", input_size=S, mean=0.0, std=1.0, cam_layer="conv")
    return Classifier(net, spec).eval()


def case(kind: str, n: int = 40) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(1)
    y = np.arange(n) % 2
    imgs = np.stack([film(rng, kind == "marker" and t, kind == "blob" and t) for t in y])
    x, yb, r = BLOB
    meta = json.dumps(
        {
            "boxes": [{"label": "Pneumonia", "xywh": [x - r, yb - r, 2 * r, 2 * r]}],
            "annotation_size": [S, S],
        }
    )
    rows = pd.DataFrame(
        {
            "source": "synthetic",
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "meta": [meta if (t and kind == "blob") else "{}" for t in y],
            "NORMAL": (1 - y).astype(float),
            "PNEUMONIA": y.astype(float),
        }
    )
    return imgs, rows


CONFIG = {"classes": CLASSES, "preprocess": {"size": S, "mode": "letterbox"}}


@pytest.mark.parametrize(("kind", "flagged"), [("marker", True), ("blob", False)])
def test_shortcut_counterfactual_flags_the_marker_reader_only(kind: str, flagged: bool) -> None:
    imgs, rows = case(kind)
    out = where_sections(reader(kind), imgs, rows, CONFIG, stub_segmenter(), n_boot=200)
    cf = {r["class"]: r for r in out["counterfactual"]["per_class"]}["PNEUMONIA"]
    assert cf["full"]["auroc"] == pytest.approx(1.0)
    assert cf["shortcut_likely"] is flagged
    assert ("likely shortcut-driven" in cf["text"]) is flagged
    if flagged:
        assert cf["lungs_blanked"]["auroc"] > 0.95
        assert cf["outside_blanked"]["auroc"] < 0.6
        assert "PNEUMONIA" in out["counterfactual"]["flagged"]
    else:
        assert cf["lungs_blanked"]["auroc"] == pytest.approx(0.5, abs=0.05)
        assert cf["outside_blanked"]["auroc"] > 0.95
        boxes = out["localisation"]["boxes"]["per_class"]
        assert [b["class"] for b in boxes] == ["PNEUMONIA"]
        assert boxes[0]["hit"]["mean"] == 1.0 and boxes[0]["chance_hit"]["mean"] == 0.0
        assert boxes[0]["mass"]["mean"] > boxes[0]["box_area"]["mean"]  # denser than flat
    lungs = out["localisation"]["lungs"]["all"]
    assert 0 < lungs["mass"]["mean"] < 1 and lungs["mass"]["ci"] is not None
    assert out["localisation"]["segmenter_lung_area"] == pytest.approx(LUNG.mean(), abs=0.03)
    json.dumps(out, allow_nan=False)


def test_blank_uses_one_grey_for_every_film() -> None:
    imgs = np.stack([np.full((4, 4), v, np.uint8) for v in (10, 30)])
    lungs = np.zeros((2, 4, 4), bool)
    lungs[:, :2] = True
    out = blank(imgs, lungs, "lungs")
    assert (out[:, :2] == 20).all() and (out[0, 2:] == 10).all() and (out[1, 2:] == 30).all()
    out = blank(imgs, lungs, "outside")
    assert (out[:, 2:] == 20).all() and (out[0, :2] == 10).all()


def test_box_mapping_and_scores() -> None:
    # a 1024 x 512 film letterboxed to 64: scale 1/16, 16 px bars top and bottom
    assert input_box([512, 0, 160, 320], (1024, 512), 64, "letterbox") == (32, 16, 42, 36)
    assert input_box([512, 0, 160, 320], (1024, 512), 64, "stretch") == (32, 0, 42, 40)
    blob = centred_blob(8)
    region = np.zeros((8, 8), bool)
    region[3:5, 3:5] = True
    assert pointing_hit(blob, region) == 1.0 and 0 < mass_inside(blob, region) < 1
    assert np.isnan(mass_inside(np.zeros((8, 8)), region))


def test_report_renders_the_where_sections() -> None:
    from cxrad.evaluate.report_where import render_where

    imgs, rows = case("marker", n=20)
    out = where_sections(reader("marker"), imgs, rows, CONFIG, stub_segmenter(), n_boot=50)
    page = render_where(out)
    assert "Shortcut counterfactuals" in page and "likely shortcut-driven" in page
    assert "mass in lungs" in page
    assert render_where({}) == ""


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA])
def test_film_boxes_reads_a_real_manifests_missing_meta(missing: object) -> None:
    """A real manifest's ``meta`` column holds ``pd.NA`` for films without boxes; that is no box."""
    from cxrad.evaluate.localisation import film_boxes

    assert film_boxes(missing, "kaggle-pediatric") == ([], None)
    boxes, ref = film_boxes(json.dumps({"boxes": [{"label": "Mass", "xywh": [1, 2, 3, 4]}]}), "nih")
    assert boxes[0]["xywh"] == [1, 2, 3, 4] and ref == (1024, 1024)
