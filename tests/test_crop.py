"""``preprocess --crop lungs``: its own cache key, the crop itself, the cache and the predictor."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import cxrad.segment.crop as crop_mod
from cxrad.errors import PreprocessConfigError
from cxrad.preprocess import PREPROCESS_VERSION, PreprocessConfig, open_cache, prepare, resize
from cxrad.preprocess.cache import preprocess_work
from helpers import make_tiny_work
from test_segment import stub_segmenter


def framed_film() -> np.ndarray:
    """A 96 px film: bright body with two dark lungs in rows 20..70, cols 16..80, plus a
    bright marker in the top-left corner outside the lungs."""
    img = np.full((96, 96), 200, np.uint8)
    img[20:70, 16:44] = 40
    img[20:70, 52:80] = 40
    img[2:10, 2:10] = 255
    return img


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crop_mod, "default_segmenter", stub_segmenter)


def test_default_key_is_unchanged_and_crop_has_its_own() -> None:
    blob = json.dumps(
        {"size": 256, "mode": "letterbox", "version": PREPROCESS_VERSION}, sort_keys=True
    )
    old = f"s256-letterbox-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"
    assert PreprocessConfig().key == old
    assert "crop" not in PreprocessConfig().to_dict()
    lungs = PreprocessConfig(crop="lungs")
    assert lungs.key.startswith("s256-letterbox-lungs-") and lungs.key != old
    assert lungs.to_dict()["crop"] == "lungs"
    with pytest.raises(PreprocessConfigError, match="lungs"):
        PreprocessConfig(crop="lung")  # type: ignore[arg-type]


def test_prepare_crops_to_the_lung_box_plus_margin(stub: None) -> None:
    img = framed_film()
    out = prepare(img, PreprocessConfig(size=32, mode="stretch", crop="lungs"))
    # lungs 16..80 x 20..70 (64 x 50); 5 % margin: 3.2 and 2.5 px each side
    box = crop_mod.lung_box(img)
    assert box is not None
    np.testing.assert_allclose(box, (12, 17, 84, 73), atol=3)  # the stub works at 32 px
    x0, y0, x1, y1 = box
    expected = resize(img[y0:y1, x0:x1], 32, "stretch")
    np.testing.assert_array_equal(out, expected)
    assert out.max() < 255  # the marker is gone
    plain = prepare(img, PreprocessConfig(size=32, mode="stretch"))
    assert plain.max() == 255


def test_crop_keeps_the_whole_film_when_no_lung_is_found(stub: None) -> None:
    img = np.full((40, 40), 200, np.uint8)
    assert crop_mod.crop_to_lungs(img).shape == (40, 40)


def test_cache_with_crop_matches_prepare(tmp_path: Path, stub: None) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, preprocess=False)
    config = PreprocessConfig(size=32, crop="lungs")
    summary = preprocess_work(work, config, workers=1)
    assert summary.n_failed == 0 and summary.cache_dir.name == config.key
    cache = open_cache(work, config)
    from cxrad.manifest import read_manifest

    rows = read_manifest(work)
    cached = cache.images[cache.rows_for(rows)[0]]
    np.testing.assert_array_equal(cached, prepare(Path(rows["path"].iloc[0]), config))
    plain = prepare(Path(rows["path"].iloc[0]), PreprocessConfig(size=32))
    assert not np.array_equal(cached, plain)  # the crop changed the pixels
