"""bench_adabn's AdaBN: BatchNorm statistics re-estimated on a site's films, weights and labels untouched."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_adabn.py"
_spec = importlib.util.spec_from_file_location("bench_adabn", BENCH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
MIN_FILMS, has_batchnorm, restat_batchnorm = (
    bench.MIN_FILMS,
    bench.has_batchnorm,
    bench.restat_batchnorm,
)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())


def films(n: int, mean: float, std: float, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = mean + std * torch.randn(n, 1, 8, 8, generator=g)
    return TensorDataset(x, torch.full((n, 3), float("nan")))  # labels are never read


def test_statistics_become_the_sites_and_the_original_is_untouched() -> None:
    model = net().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = restat_batchnorm(model, films(256, mean=3.0, std=2.0))
    bn = adapted[0]
    assert float(bn.running_mean) == pytest.approx(3.0, abs=0.05)
    assert float(bn.running_var) == pytest.approx(4.0, rel=0.05)
    assert not adapted.training
    for k, v in model.state_dict().items():  # the run's own model keeps its statistics
        assert torch.equal(v, before[k]), k
    for k, v in adapted.state_dict().items():  # weights are the same; only statistics move
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k


def test_only_the_given_rows_count() -> None:
    ds = films(64, mean=0.0, std=1.0)
    ds.tensors[0][32:] += 10.0  # the second half is another site
    adapted = restat_batchnorm(net(), ds, rows=np.arange(32, 64))
    assert float(adapted[0].running_mean) == pytest.approx(10.0, abs=0.5)


def test_a_short_last_batch_does_not_weigh_as_much_as_a_full_one() -> None:
    ds = films(33, mean=0.0, std=1.0)
    ds.tensors[0][32] += 1000.0  # one outlier film alone in a last batch of one
    adapted = restat_batchnorm(net(), ds, batch_size=32)
    assert abs(float(adapted[0].running_mean)) < 1.0


def test_adapted_outputs_on_the_site_match_the_source_outputs_on_the_source() -> None:
    """A site whose pixels are a gain and offset of the source's gets the source's features back."""
    model = restat_batchnorm(net(), films(512, mean=0.0, std=1.0, seed=1))
    site = films(512, mean=0.0, std=1.0, seed=2)
    shifted = TensorDataset(site.tensors[0] * 3.0 + 5.0, site.tensors[1])
    x = site.tensors[0][:16]
    with torch.no_grad():
        ref = model(x)
        raw = model(x * 3.0 + 5.0)
        fixed = restat_batchnorm(model, shifted)(x * 3.0 + 5.0)
    assert (fixed - ref).abs().mean() < 0.1 * (raw - ref).abs().mean()


def test_refuses_a_model_without_batchnorm_and_too_few_films() -> None:
    assert not has_batchnorm(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no BatchNorm"):
        restat_batchnorm(nn.Sequential(nn.Flatten()), films(64, 0.0, 1.0))
    with pytest.raises(ValueError, match=f"at least {MIN_FILMS}"):
        restat_batchnorm(net(), films(MIN_FILMS - 1, 0.0, 1.0))


def test_the_default_model_adapts() -> None:
    """The shipped cxr-fast run has BatchNorm layers, and its adapted copy still decides."""
    from cxrad.models import DecisionStep, load_run

    model, cfg = load_run("default")
    size = cfg.preprocess.size
    x = torch.rand(MIN_FILMS, 1, size, size)
    adapted = restat_batchnorm(model, TensorDataset(x, torch.zeros(MIN_FILMS)))
    with torch.no_grad():
        d = DecisionStep(cfg)(adapted(x[:4]).numpy())
    assert np.isfinite(d.probabilities).all() and d.probabilities.shape == (4, len(cfg.classes))
