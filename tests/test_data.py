"""Stage 5, data: the cached dataset, the epoch-seeded sampler and radiograph augmentation."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxrad.cli import main
from cxrad.data import (
    AUGMENT_PRESETS,
    AugmentConfig,
    CachedDataset,
    EpochSampler,
    RadiographAugment,
    augment_preset,
    make_dataloaders,
    single_label_mask,
    trainable_classes,
)
from cxrad.errors import TrainError
from cxrad.labels import CLASSES


class FakeCache:
    """A cache holding ``n`` images whose pixel value is their row number; rows by image_id."""

    def __init__(self, n: int, size: int = 8, path: Path | None = None) -> None:
        if path is None:
            self.images = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones(
                (1, size, size), np.uint8
            )
        else:
            mm = np.memmap(path, np.uint8, "w+", shape=(n, size, size))
            mm[:] = np.arange(n, dtype=np.uint8)[:, None, None]
            mm.flush()
            self.images = np.memmap(path, np.uint8, "r", shape=(n, size, size))
        self.n = n

    def rows_for(self, df: pd.DataFrame) -> np.ndarray:
        ids = df["image_id"].str.removeprefix("img").astype(int).to_numpy()
        return np.where(ids < self.n, ids, -1).astype(np.int64)


def frame(n: int, labels: dict[str, list[float]], split: list[str] | None = None) -> pd.DataFrame:
    df = pd.DataFrame({"image_id": [f"img{i}" for i in range(n)]})
    for c in CLASSES:
        df[c] = np.float32(np.nan)
    for c, v in labels.items():
        df[c] = np.asarray(v, np.float32)
    df["split"] = split or ["train"] * n
    return df


def test_dataset_items_and_dropped_rows(caplog: pytest.LogCaptureFixture) -> None:
    df = frame(5, {"NORMAL": [1, 0, 1, 0, 1], "PNEUMONIA": [0, 1, np.nan, 1, 0]})
    cache = FakeCache(3)  # img3, img4 are not cached
    ds = CachedDataset(df, cache, ["NORMAL", "PNEUMONIA"])
    assert len(ds) == 3 and ds.dropped == 2
    assert "2 of 5 rows are not in the cache" in caplog.text
    x, y = ds[2]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full((1, 8, 8), 2 / 255))
    assert y[0] == 1 and torch.isnan(y[1])
    assert [float(ds[i][0][0, 0, 0]) * 255 for i in (1, 0)] == pytest.approx([1, 0])
    raw = CachedDataset(df, cache, ["NORMAL", "PNEUMONIA"], uint8=True)[2][0]
    assert raw.dtype == torch.uint8 and torch.equal(raw.float() / 255, x)


def test_memmap_dataset_pickles_by_file_name(tmp_path: Path) -> None:
    df = frame(4, {"NORMAL": [1, 0, 1, 0]})
    ds = CachedDataset(df, FakeCache(4, path=tmp_path / "img.u8"), ["NORMAL"])
    blob = pickle.dumps(ds)
    assert b"img.u8" in blob  # reopened by name, not copied
    ds2 = pickle.loads(blob)
    assert isinstance(ds2.images, np.memmap)
    assert torch.equal(ds2[3][0], ds[3][0])


def test_trainable_classes_and_single_label() -> None:
    df = frame(4, {"NORMAL": [1, 0, 1, 0], "PNEUMONIA": [0, 1, 0, 1], "EDEMA": [1, 1, np.nan, 1]})
    assert trainable_classes(df) == ["NORMAL", "PNEUMONIA"]  # EDEMA has no negative
    y = np.array([[1, 0, np.nan], [1, 1, 0], [0, 0, np.nan], [np.nan, np.nan, 1]], np.float32)
    assert single_label_mask(y).tolist() == [True, False, False, True]


def test_epoch_sampler_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochSampler(50, seed=1), EpochSampler(50, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_loaders_softmax_keeps_single_label_rows_and_limit() -> None:
    df = frame(
        8,
        {"NORMAL": [1, 0, 1, 0, 1, 0, 0, 1], "PNEUMONIA": [0, 1, 1, 1, 0, 0, 1, 0]},
        split=["train"] * 6 + ["val"] * 2,
    )
    cache = FakeCache(8)
    loaders = make_dataloaders(df, cache, ["NORMAL", "PNEUMONIA"], batch_size=2, single_label=True)
    kept = loaders.train.dataset.df["image_id"].tolist()
    assert kept == ["img0", "img1", "img3", "img4"]  # img2 has two positives, img5 none
    assert len(loaders.val.dataset) == 2
    lim = make_dataloaders(df, cache, ["NORMAL", "PNEUMONIA"], batch_size=2, limit_train=3, seed=5)
    assert len(lim.train.dataset) == 3
    x, y = next(iter(lim.train))
    assert x.shape == (2, 1, 8, 8) and y.shape == (2, 2)


def marked(size: int = 32) -> torch.Tensor:
    """A mid-grey film with a bright mark on the left side, as a batch of 8."""
    x = torch.full((8, 1, size, size), 0.3)
    x[:, :, size // 2 - 4 : size // 2 + 4, 2:8] = 1.0
    return x


def test_augment_deterministic_per_seed_and_differs_across_seeds() -> None:
    x = marked()
    a = RadiographAugment(AugmentConfig(noise_std=0.02), seed=0)
    out1, out2 = a(x, epoch=2, step=5), a(x, epoch=2, step=5)
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, RadiographAugment(AugmentConfig(noise_std=0.02), seed=1)(x, 2, 5))
    assert not torch.equal(out1, a(x, epoch=3, step=5))
    assert not torch.equal(out1, x)
    assert out1.min() >= 0 and out1.max() <= 1 and out1.shape == x.shape
    state = torch.get_rng_state()
    a(x, epoch=0, step=0)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched


def test_augment_never_flips_by_default() -> None:
    x = marked()
    for seed in range(20):
        out = RadiographAugment(AugmentConfig(), seed=seed)(x, epoch=seed, step=0)
        col = out[:, 0].sum(dim=1).argmax(dim=1)  # brightest column per image
        assert (col < 16).all(), f"seed {seed}: the left mark moved right"
    flipped = RadiographAugment(AugmentConfig(hflip=True), seed=0)(x, epoch=0, step=0)
    cols = flipped[:, 0].sum(dim=1).argmax(dim=1)
    assert (cols >= 16).any() and (cols < 16).any()  # the option exists and does flip


def test_augment_identity_when_ranges_are_zero() -> None:
    zero = AugmentConfig(rotate_deg=0, scale=0, translate=0, brightness=0, contrast=0, gamma=0)
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(RadiographAugment(zero)(x), x, atol=1e-5)


def test_augment_presets() -> None:
    assert augment_preset("default") == AugmentConfig()
    strong = augment_preset("strong")
    assert not strong.hflip and strong.noise_std > 0
    for field in ("rotate_deg", "scale", "brightness", "contrast", "gamma"):
        assert getattr(strong, field) > getattr(AugmentConfig(), field)
    assert augment_preset("none").rotate_deg == 0 and set(AUGMENT_PRESETS) == {
        "default",
        "strong",
        "site",
        "none",
    }
    site = augment_preset("site")
    assert site.site and not AugmentConfig().site
    with pytest.raises(TrainError, match="Did you mean 'strong'"):
        augment_preset("strng")


def test_cli_train_rejects_an_unknown_preset_before_any_work(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        ["cxrad", "train", str(tmp_path), "--out", str(tmp_path / "r"), "--augment", "strng"],
    )
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert "Did you mean 'strong'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
