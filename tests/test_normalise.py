"""Stage 4: intensity-normalising preprocess modes (CLAHE, histogram equalisation)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cxrad.errors import PreprocessConfigError
from cxrad.manifest import read_manifest
from cxrad.preprocess import PreprocessConfig, open_cache, prepare, preprocess_work
from cxrad.preprocess.normalise import normalise_image
from cxrad.preprocess.transform import PREPROCESS_VERSION
from helpers import make_tiny_work


def test_default_key_is_unchanged_and_normalised_caches_get_their_own() -> None:
    blob = json.dumps(
        {"mode": "letterbox", "size": 128, "version": PREPROCESS_VERSION}, sort_keys=True
    )
    old = f"s128-letterbox-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"
    assert PreprocessConfig(128).key == old
    keys = {PreprocessConfig(128, normalise=n).key for n in ("none", "clahe", "histeq")}
    assert len(keys) == 3
    with pytest.raises(PreprocessConfigError, match="Did you mean 'clahe'"):
        PreprocessConfig(128, normalise="clahee")


def test_equalisation_spreads_a_narrow_histogram_and_keeps_padding_black() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.uint8)
    img[8:56] = rng.integers(100, 140, (48, 64))  # a dull film between black letterbox bands
    for method in ("histeq", "clahe"):
        out = normalise_image(img, method)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert (out[:8] == 0).all() and (out[56:] == 0).all()
        assert np.ptp(out[8:56]) > 1.5 * np.ptp(img[8:56])
    assert normalise_image(img, "none") is img


def test_cache_and_prepare_give_the_same_normalised_pixels(tmp_path: Path) -> None:
    work = make_tiny_work(tmp_path, n_per_class=3, size=32, preprocess=False)
    cfg = PreprocessConfig(size=32, normalise="clahe")
    preprocess_work(work, cfg, workers=1)
    cache = open_cache(work, cfg)
    df = read_manifest(work)
    row = cache.rows_for(df.iloc[:1])[0]
    live = prepare(df["path"].iloc[0], cfg)
    assert np.array_equal(np.asarray(cache.images[row]), live)
    plain = prepare(df["path"].iloc[0], PreprocessConfig(size=32))
    assert not np.array_equal(plain, live)


def test_run_config_reads_old_configs_and_writes_normalise_only_when_set() -> None:
    from cxrad.models import RunConfig

    old = RunConfig.from_dict(
        {"model": {"name": "cxr-fast"}, "classes": ["NORMAL"], "preprocess": {"size": 64}}
    )
    assert old.preprocess.normalise == "none"
    assert "normalise" not in old.to_dict()["preprocess"]
    new = RunConfig.from_dict({**old.to_dict(), "preprocess": {"size": 64, "normalise": "clahe"}})
    assert new.preprocess.normalise == "clahe"
    assert RunConfig.from_dict(new.to_dict()).preprocess.normalise == "clahe"
