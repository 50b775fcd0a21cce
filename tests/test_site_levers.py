"""Stage 5: the site-robust training levers (balanced sampler, site augmentation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cxrad.data import AugmentConfig, RadiographAugment, augment_preset
from cxrad.data.sampling import BalancedSampler, balanced_weights, cell_labels, check_sampler
from cxrad.data.site_augment import STEPS, gaussian_blur, site_augment
from cxrad.errors import TrainError


def test_cells_and_weights_make_every_class_source_cell_equal() -> None:
    df = pd.DataFrame(
        {
            "NORMAL": [1, 1, 1, 0, 0, np.nan],
            "COVID_19": [0, 0, 0, 1, 1, np.nan],
            "source": ["a", "a", "b", "a", "a", "b"],
        }
    )
    cells = cell_labels(df, ["COVID_19", "NORMAL"])
    assert cells.tolist() == [
        "NORMAL|a",
        "NORMAL|a",
        "NORMAL|b",
        "COVID_19|a",
        "COVID_19|a",
        "none|b",
    ]
    w = balanced_weights(cells)
    per_cell = pd.Series(w).groupby(cells).sum()
    assert np.allclose(per_cell.to_numpy(), 0.25)


def test_balanced_sampler_is_seeded_per_epoch_and_balances() -> None:
    df = pd.DataFrame({"NORMAL": [1.0] * 90 + [0.0] * 10, "source": ["a"] * 90 + ["b"] * 10})
    s = BalancedSampler(df, ["NORMAL"], seed=0)
    first = list(s)
    assert list(s) == first and len(first) == 100
    s.set_epoch(1)
    assert list(s) != first
    share_b = np.mean(np.asarray(first) >= 90)
    assert 0.35 < share_b < 0.65  # 10% of the rows, half of the draws
    with pytest.raises(TrainError, match="Did you mean 'balanced'"):
        check_sampler("balance")


def chest(n: int = 4, s: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy = torch.linspace(0, 1, s).view(s, 1).expand(s, s)
    return (0.3 + 0.4 * yy + 0.05 * torch.rand(n, 1, s, s, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("step", STEPS, ids=lambda f: f.__name__)
def test_each_site_change_keeps_shape_and_range_and_changes_pixels(step) -> None:  # type: ignore[no-untyped-def]
    x = chest()
    y = step(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 + 1e-6
    assert float((y - x).abs().mean()) > 1e-3


def test_blur_smooths_and_site_augment_is_reproducible() -> None:
    x = chest()
    b = gaussian_blur(x, torch.full((4,), 1.5))
    assert float(b.diff(dim=-1).abs().mean()) < float(x.diff(dim=-1).abs().mean())
    a1 = site_augment(x, torch.Generator().manual_seed(5), p=1.0)
    a2 = site_augment(x, torch.Generator().manual_seed(5), p=1.0)
    a3 = site_augment(x, torch.Generator().manual_seed(6), p=1.0)
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert torch.equal(site_augment(x, torch.Generator().manual_seed(5), p=0.0), x)


def test_site_preset_runs_inside_radiograph_augment() -> None:
    cfg = augment_preset("site")
    assert cfg.site and cfg.to_dict()["site"] is True
    x = chest()
    base = RadiographAugment(AugmentConfig(), seed=0)(x, epoch=1, step=2)
    site = RadiographAugment(cfg, seed=0)(x, epoch=1, step=2)
    assert site.shape == x.shape and not torch.equal(base, site)
    assert torch.equal(site, RadiographAugment(cfg, seed=0)(x, epoch=1, step=2))


def test_every_benchmark_lever_is_a_train_argument() -> None:
    import argparse
    import importlib.util
    import inspect
    from pathlib import Path

    from cxrad.train import train

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sites.py"
    spec = importlib.util.spec_from_file_location("bench_sites", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(size=128, epochs=2, limit_train=1200, seed=0, threads=1)
    params = inspect.signature(train).parameters
    for lever in bench.LEVERS:
        assert set(bench.train_kwargs(lever, args)) <= set(params), lever
    kw = bench.train_kwargs("lungs", args)
    assert kw["crop"] == "lungs" and kw["size"] == 128 and "normalise" not in kw
    assert bench.train_kwargs("clahe", args)["normalise"] == "clahe"
