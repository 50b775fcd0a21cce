"""Stage 9, predict: Grad-CAM finds the region that drives a class, on a model built to know it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cxrad.models import Classifier, ModelSpec, create_model
from cxrad.predict import Predictor, grad_cam, overlay

S = 32
CLASSES = ["MASS", "PNEUMOTHORAX", "NORMAL"]


class Detectors(nn.Module):
    """Class 0 fires on bright pixels, class 1 on dark ones, class 2 on neither, by construction.

    ``conv`` maps a grey image (background 0 after normalisation) to a "bright" channel
    ``relu(x)`` and a "dark" channel ``relu(-x)``; each logit is the global mean of one channel.
    So the bright blob alone drives class 0 and the dark blob alone drives class 1.
    """

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            k = torch.zeros(2, 1, 3, 3)
            k[0, 0, 1, 1], k[1, 0, 1, 1] = 1.0, -1.0
            self.conv.weight.copy_(k)
        self.act = nn.ReLU(inplace=inplace)  # in place, as in real nets: our hook copes
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[100.0, 0.0], [0.0, 100.0], [-50.0, -50.0]]))
            self.head.bias.copy_(torch.tensor([-1.0, -1.0, 2.0]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def toy_model(inplace: bool = True) -> Classifier:
    spec = ModelSpec(name="toy-detectors", input_size=S, mean=0.5, std=0.5, cam_layer="conv")
    return Classifier(Detectors(inplace), spec).eval()


QUADRANTS = {"tl": (0, 0), "tr": (0, 16), "bl": (16, 0), "br": (16, 16)}


def scene(bright: str, dark: str) -> np.ndarray:
    """Grey background, a 6×6 bright square in one quadrant, a dark one in another."""
    img = np.full((S, S), 128, np.uint8)
    for q, value in ((bright, 250), (dark, 5)):
        r, c = QUADRANTS[q]
        img[r + 5 : r + 11, c + 5 : c + 11] = value
    return img


def quadrant_mass(cam: np.ndarray, q: str) -> float:
    r, c = QUADRANTS[q]
    return float(cam[r : r + 16, c : c + 16].sum() / cam.sum())


@pytest.mark.parametrize(
    ("bright", "dark"), [("tl", "br"), ("br", "tl"), ("tr", "bl"), ("bl", "tr")]
)
def test_grad_cam_highlights_the_region_that_drives_each_class(bright: str, dark: str) -> None:
    x = torch.from_numpy(scene(bright, dark)[None, None] / 255.0).float()
    (maps,) = grad_cam(toy_model(), x, [[0, 1]])
    for cls, q in ((0, bright), (1, dark)):
        cam = maps[cls]
        assert cam.shape == (S, S) and cam.min() >= 0
        assert quadrant_mass(cam, q) > 0.9
        peak = np.unravel_index(cam.argmax(), cam.shape)
        r, c = QUADRANTS[q]
        assert r + 4 <= peak[0] <= r + 11 and c + 4 <= peak[1] <= c + 11


def test_batch_of_different_targets_matches_one_by_one() -> None:
    model = toy_model()
    imgs = [scene("tl", "br"), scene("tr", "bl"), scene("bl", "tl")]
    x = torch.from_numpy(np.stack(imgs)[:, None] / 255.0).float()
    batched = grad_cam(model, x, [[1, 0], [], [0]])
    assert [sorted(m) for m in batched] == [[0, 1], [], [0]]
    for i, targets in enumerate([[1, 0], [], [0]]):
        for c in targets:
            (single,) = grad_cam(model, x[i : i + 1], [[c]])
            np.testing.assert_allclose(batched[i][c], single[c], atol=1e-6)


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("name", ["toy", "seed-fcn"])
def test_grad_cam_agrees_with_monai(name: str) -> None:
    from monai.visualize import GradCAM

    torch.manual_seed(0)
    if name == "toy":  # MONAI's backward hooks fail on an in-place op after the layer
        model, x, layer = (
            toy_model(inplace=False),
            torch.from_numpy(scene("tl", "br")[None, None] / 255.0),
            "net.conv",
        )
    else:
        model, x, layer = (
            create_model("seed-fcn", num_classes=3).eval(),
            torch.rand(1, 1, 128, 128),
            "net.features.5",
        )
    x = x.float()
    compared = 0
    for cls in (0, 1, 2):
        (ours,) = grad_cam(model, x, [[cls]], layer)
        o = ours[cls]
        if o.max() - o.min() < 1e-6:  # a flat map: nothing to compare after rescaling
            continue
        theirs = GradCAM(nn_module=model, target_layers=layer)(x, class_idx=cls)[0, 0].numpy()
        o = (o - o.min()) / (o.max() - o.min())
        # MONAI's default normaliser maps (min, max) to (1, 0): hot regions come out near 0
        np.testing.assert_allclose(o, 1.0 - theirs, atol=1e-4)
        compared += 1
    assert compared >= 1


def test_predictor_writes_overlays_for_positive_findings_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cxrad.predict.heatmap.lung_mask", lambda image: None)  # no contour
    config = {
        "model": {"name": "toy-detectors", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": S, "mode": "letterbox"},
        "thresholds": {"MASS": 0.5, "PNEUMOTHORAX": 0.5, "NORMAL": 0.5},
    }
    pred = Predictor(toy_model(), config)
    (tmp_path / "in").mkdir()
    Image.fromarray(scene("tr", "bl")).save(tmp_path / "in" / "both.png")
    bright_only = np.full((S, S), 128, np.uint8)
    Image.fromarray(bright_only).save(tmp_path / "in" / "flat.png")
    out = tmp_path / "heat"
    recs = {
        Path(r["image"]).name: r for r in pred.predict_many([tmp_path / "in"], heatmaps_dir=out)
    }
    both, flat = recs["both.png"], recs["flat.png"]
    assert both["positive"] == ["MASS", "PNEUMOTHORAX"]
    assert flat["positive"] == [] and flat["normal"] is True and flat["heatmaps"] == {}
    assert both["heatmaps"] == {c: str(out / f"both__{c}.png") for c in ("MASS", "PNEUMOTHORAX")}
    assert quadrant_mass(np.load(out / "both__MASS.npy"), "tr") > 0.9
    assert quadrant_mass(np.load(out / "both__PNEUMOTHORAX.npy"), "bl") > 0.9
    png = np.asarray(Image.open(out / "both__MASS.png"))
    assert png.shape == (S, S, 3)
    # the hot region is painted red-ish (jet's top), the cold quadrant stays grey-blue
    assert png[16 + 5 : 16 + 11, 5:11, 0].mean() < png[5:11, 16 + 5 : 16 + 11, 0].mean()
    maps = pred.explain(scene("tr", "bl"))
    assert sorted(maps) == ["MASS", "PNEUMOTHORAX"]
    np.testing.assert_allclose(maps["MASS"], np.load(out / "both__MASS.npy"), atol=1e-6)


def test_overlay_keeps_cold_pixels_grey_and_colours_hot_ones() -> None:
    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    cam = np.zeros((8, 8), np.float32)
    out = overlay(img, cam)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(img[..., None], 3, axis=-1))  # zero map: grey
    cam[2, 3] = 5.0
    out = overlay(img, cam)
    hot = out[2, 3].astype(int)
    assert hot[0] > hot[2] + 50  # jet's top is red
    mask = np.ones((8, 8), bool)
    mask[2, 3] = False
    assert np.all(out[mask] == np.repeat(img[mask][:, None], 3, axis=-1))
