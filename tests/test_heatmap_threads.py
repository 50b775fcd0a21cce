"""Stage 9, predict: Grad-CAM gives each thread its own maps when calls overlap (the REST API)."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from cxrad.models import Classifier, ModelSpec
from cxrad.predict import grad_cam
from test_heatmap import Detectors, S, scene


class SlowDetectors(Detectors):
    """The toy detectors with a pause after the hooked layer, so concurrent calls interleave."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        time.sleep(0.02)
        return self.act(a).mean(dim=(2, 3))


def test_concurrent_grad_cam_matches_serial() -> None:
    spec = ModelSpec(name="toy-slow", input_size=S, mean=0.5, std=0.5, cam_layer="conv")
    model = Classifier(SlowDetectors(), spec).eval()
    layouts = [("tl", "br"), ("br", "tl"), ("tr", "bl"), ("bl", "tr")] * 2
    xs = [torch.from_numpy(scene(b, d)[None, None] / 255.0).float() for b, d in layouts]
    targets = [[0, 1] if i % 2 else [1] for i in range(len(xs))]
    serial = [grad_cam(model, x, [t])[0] for x, t in zip(xs, targets, strict=True)]
    results: list[dict[int, np.ndarray] | BaseException | None] = [None] * len(xs)
    start = threading.Barrier(len(xs))

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = grad_cam(model, xs[i], [targets[i]])[0]
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in enumerate(results):
        assert isinstance(got, dict), f"thread {i}: {got!r}"
        assert sorted(got) == sorted(serial[i])
        for c, cam in got.items():
            np.testing.assert_allclose(cam, serial[i][c], atol=1e-6)
    assert not model.get_submodule("net.conv")._forward_hooks  # every hook removed


def test_predictor_records_heatmap_mass_in_lungs_and_draws_the_contour(
    tmp_path, monkeypatch
) -> None:
    from PIL import Image

    import cxrad.segment.crop as crop_mod
    from cxrad.predict import Predictor
    from test_heatmap import CLASSES, toy_model
    from test_segment import stub_segmenter

    monkeypatch.setattr(crop_mod, "default_segmenter", stub_segmenter)  # dark = lung
    config = {
        "model": {"name": "toy-detectors", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": S, "mode": "letterbox"},
        "thresholds": dict.fromkeys(CLASSES, 0.5),
    }
    Image.fromarray(scene("tr", "bl")).save(tmp_path / "both.png")
    (rec,) = Predictor(toy_model(), config).predict_many([tmp_path / "both.png"], tmp_path / "h")
    share = rec["heatmap_lung_mass"]
    assert sorted(share) == ["MASS", "PNEUMOTHORAX"]
    assert share["PNEUMOTHORAX"] > 0.5 > share["MASS"]  # the dark blob is the "lung" here
    png = np.asarray(Image.open(tmp_path / "h" / "both__MASS.png"))
    assert (png == 255).all(axis=2).any()  # white lung contour
