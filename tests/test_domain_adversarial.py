"""Stage 7: ``--dg adversarial``, the training-only source head behind gradient reversal (DANN)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cxrad.data import CachedDataset
from cxrad.errors import TrainError
from cxrad.manifest import read_manifest, write_manifest
from cxrad.models import create_model, load_run
from cxrad.predict import export_onnx
from cxrad.preprocess import PreprocessConfig, open_cache
from cxrad.train import train
from cxrad.train.domain import (
    DomainAdversary,
    build_adversary,
    check_dg,
    dann_lambda,
    grad_reverse,
    logits_and_features,
)
from helpers import make_tiny_work

REPO = Path(__file__).resolve().parents[1]
TINY = {"batch_size": 8, "size": 32, "progress": False, "seed": 3, "threads": 1}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny work folder whose films come from three sources."""
    work = make_tiny_work(tmp_path_factory.mktemp("dg"), n_per_class=8, size=32)
    df = read_manifest(work)
    df["source"] = np.array(["sitea", "siteb", "sitec"])[np.arange(len(df)) % 3]
    write_manifest(df, work)
    return work


@pytest.fixture(scope="module")
def runs(work: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain run and an adversarial one, same data, seed and budget."""
    out = tmp_path_factory.mktemp("dg-runs")
    return {
        "plain": train(work, out=out / "plain", max_epochs=2, **TINY),
        "adv": train(work, out=out / "adv", max_epochs=2, dg="adversarial", dg_weight=0.5, **TINY),
    }


def test_grad_reverse_is_identity_forward_and_negates_scaled_gradients() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)
    x.grad = None
    (grad_reverse(x, 2.0) ** 2).sum().backward()
    assert torch.allclose(x.grad, -2.0 * 2 * x.detach())


def test_dann_lambda_ramps_from_zero_to_one() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0) == pytest.approx(0.99991, abs=1e-5)
    assert dann_lambda(-1.0) == 0.0 and dann_lambda(3.0) == dann_lambda(1.0)
    ramp = [dann_lambda(p / 10) for p in range(11)]
    assert ramp == sorted(ramp)


def test_adversary_trains_its_head_and_reverses_the_features_gradient() -> None:
    torch.manual_seed(0)
    adv = DomainAdversary(8, ["a", "b", "c"], [6, 3, 1], weight=0.5)
    f = torch.randn(10, 8, requires_grad=True)
    d = torch.tensor([0] * 6 + [1] * 3 + [2])
    adv.loss(f, d, progress=0.5).backward()
    rev_f, rev_head = f.grad.clone(), adv.head[0].weight.grad.clone()
    # The same loss without reversal: the head's gradient is the same, the features' is
    # -0.5 * lambda(0.5) times it.
    f.grad = None
    adv.zero_grad()
    F.cross_entropy(adv.head(f), d, weight=adv.class_weight).backward()
    assert torch.allclose(adv.head[0].weight.grad, rev_head)
    assert torch.allclose(rev_f, -0.5 * dann_lambda(0.5) * f.grad, atol=1e-7)
    # inverse source frequency: each source weighs the same in total
    assert torch.allclose(adv.class_weight * torch.tensor([6.0, 3.0, 1.0]), torch.tensor(10 / 3))


def test_features_are_what_the_linear_head_reads() -> None:
    ds = SimpleNamespace(domains=["a", "b"], domain_codes=np.array([0, 1, 1]))
    loader = SimpleNamespace(dataset=ds, sampler=None)
    for name in ("cxr-fast", "seed-fcn"):
        model = create_model(name, num_classes=3).eval()
        adv = build_adversary(model, loader, 0.1, size=128)
        x = torch.rand(2, 1, 128, 128)
        with torch.no_grad():
            logits, feats = logits_and_features(model, x, adv.tap)
            assert torch.allclose(logits, model(x)) and torch.allclose(
                feats, model.forward_features(x)
            )
        assert adv.head[0].in_features == feats.shape[1]
        assert adv.class_weight.tolist() == pytest.approx([1.5, 0.75])
        assert (adv.tap is None) == (name == "seed-fcn")
        assert not model.net._forward_pre_hooks and not any(
            m._forward_pre_hooks for m in model.modules()
        )  # the hook lived for that call only
    # A balanced sampler draws source a as often as b: the head then weighs them alike.
    loader.sampler = SimpleNamespace(weights=torch.tensor([0.5, 0.25, 0.25]))
    adv = build_adversary(create_model("cxr-fast", num_classes=3), loader, 0.1, size=64)
    assert adv.class_weight.tolist() == pytest.approx([1.0, 1.0])


def test_dataset_codes_only_the_sources_of_its_rows(work: Path) -> None:
    df = read_manifest(work)
    rows = df[df["source"] != "siteb"]
    ds = CachedDataset(
        rows, open_cache(work, PreprocessConfig(size=32)), ["NORMAL"], domain="source"
    )
    assert ds.domains == ["sitea", "sitec"]
    assert ds.domain_codes.tolist() == (ds.df["source"] == "sitec").astype(int).tolist()
    *_, d = ds[1]
    assert d.dtype == torch.int64 and int(d) == ds.domain_codes[1]
    assert len(CachedDataset(rows, open_cache(work, PreprocessConfig(size=32)), ["NORMAL"])[0]) == 2


def test_adversarial_run_logs_the_domain_loss_and_saves_a_plain_model(
    runs: dict[str, Path],
) -> None:
    run = runs["adv"]
    log = (run / "logs" / "metrics.csv").read_text().splitlines()
    col = log[0].split(",").index("train_domain_loss_epoch")
    losses = [float(r.split(",")[col]) for r in log[1:] if r.split(",")[col]]
    assert len(losses) == 2 and all(0 < v < 5 for v in losses)
    cfg = json.loads((run / "config.json").read_text())
    plain = json.loads((runs["plain"] / "config.json").read_text())
    assert cfg["train"]["dg"] == "adversarial" and cfg["train"]["dg_weight"] == 0.5
    assert plain["train"]["dg"] == "none"
    assert set(cfg) == set(plain)  # no new top-level key: the decision contract is unchanged
    assert set(cfg["decision"]) == set(plain["decision"])
    keys = set(load_file(run / "model.safetensors"))
    assert keys == set(create_model("cxr-fast", num_classes=len(cfg["classes"])).state_dict())
    model, config = load_run(run)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, len(config.classes))
    # the Lightning checkpoint does hold the head, so a resumed run continues it
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("adversary.") for k in ckpt["state_dict"])


def test_adversarial_onnx_graph_is_that_of_a_plain_run(runs: dict[str, Path]) -> None:
    graphs = {k: onnx.load(str(export_onnx(r))).graph for k, r in runs.items()}
    ops = {k: [n.op_type for n in g.node] for k, g in graphs.items()}
    shapes = {k: sorted(tuple(i.dims) for i in g.initializer) for k, g in graphs.items()}
    assert ops["adv"] == ops["plain"] and shapes["adv"] == shapes["plain"]


def test_resuming_an_adversarial_run_without_dg_says_so(
    runs: dict[str, Path], work: Path, tmp_path: Path
) -> None:
    run = shutil.copytree(runs["adv"], tmp_path / "adv")
    with pytest.raises(TrainError, match="does not fit"):
        train(work, out=run, max_epochs=3, **TINY)


def test_bad_dg_options_fail_before_training(work: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="Did you mean 'adversarial'"):
        check_dg("adversrial", 0.1)
    for w in (0.0, -1.0, float("nan")):
        with pytest.raises(TrainError, match="--dg-weight"):
            check_dg("adversarial", w)
    with pytest.raises(TrainError, match="Did you mean"):
        train(work, out=tmp_path / "r", max_epochs=1, dg="dann", **TINY)
    one_source = make_tiny_work(tmp_path / "one", n_per_class=4, size=32)
    with pytest.raises(TrainError, match="at least two sources"):
        train(one_source, out=tmp_path / "r", max_epochs=1, dg="adversarial", **TINY)
    with pytest.raises(TrainError, match="--dg read the memmap cache"):
        train(
            work, out=tmp_path / "r", max_epochs=1, dg="adversarial", data_format="webdataset",
            **TINY,
        )  # fmt: skip
    assert not (tmp_path / "r" / "config.json").exists()


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    from cxrad.cli import main

    monkeypatch.setattr(sys, "argv", ["cxrad", "train", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code or 0), capsys.readouterr().err


def test_cli_dg_errors_are_one_line(work: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r"
    code, err = cli(monkeypatch, capsys, work, "--out", out, "--dg", "adversaril")
    assert code == 2 and "Did you mean 'adversarial'" in err
    code, err = cli(
        monkeypatch, capsys, work, "--out", out, "--dg", "adversarial", "--dg-weight", "0"
    )
    assert code == 2 and "--dg-weight" in err
    code, err = cli(
        monkeypatch, capsys, work, "--out", out, "--dg", "adversarial", "--task", "one-class"
    )
    assert code == 2 and "--task multilabel" in err
    assert not out.exists()


def test_bench_sites_trains_the_adversarial_lever(work: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_sites", REPO / "benchmarks" / "bench_sites.py"
    )
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    args = argparse.Namespace(size=32, epochs=1, limit_train=None, seed=0, threads=1)
    kw = bench.train_kwargs("adversarial", args)
    assert kw["dg"] == "adversarial"
    run = train(work, out=tmp_path / "run", hold_out=["sitec"], **kw)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["dg"] == "adversarial" and cfg["held_out_sources"] == ["sitec"]
