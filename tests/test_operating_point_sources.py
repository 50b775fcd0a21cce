"""Stage 6, models: ``spec=0.95@source`` holds the target on every source's val negatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxrad.errors import ModelError
from cxrad.models import create_model, get_spec, load_run, save_run
from cxrad.models.calibrate import MIN_SOURCE_ROWS, Rule, fit_point, parse_rule, recalibrate
from cxrad.models.config import RunConfig
from cxrad.train import refit_run
from helpers import TINY_CLASSES, make_tiny_work


def _two_sources(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clean source with 900 negatives and a noisy one with 100, whose negatives score high."""
    rng = np.random.default_rng(seed)
    clean, noisy = rng.normal(0.0, 1.0, 900), rng.normal(1.5, 1.0, 100)
    pos = rng.normal(3.0, 1.0, 200)
    s = 1 / (1 + np.exp(-np.r_[clean, noisy, pos]))
    y = np.r_[np.zeros(1000), np.ones(200)]
    g = np.array(["clean"] * 900 + ["noisy"] * 100 + ["clean"] * 100 + ["noisy"] * 100)
    return s, y, g


def _spec(s: np.ndarray, y: np.ndarray, m: np.ndarray, t: float) -> float:
    return float(np.mean(s[m & (y == 0)] < t))


def test_parse_and_print_round_trip() -> None:
    assert parse_rule("spec=0.95@source") == Rule("spec", 0.95, per_source=True)
    assert str(parse_rule("SENS=0.9@source")) == "sens=0.9@source"
    assert str(parse_rule("spec=0.95")) == "spec=0.95"
    with pytest.raises(ModelError, match="youden has no per-source form"):
        parse_rule("youden@source")
    with pytest.raises(ModelError, match="optionally @source"):
        parse_rule("specificity=0.9@source")
    with pytest.raises(ModelError, match="the only scope after @ is @source"):
        parse_rule("spec=0.95@site")


def test_pooled_cut_fails_the_noisy_source_and_per_source_holds_both() -> None:
    s, y, g = _two_sources()
    pooled = fit_point(s, y, "spec=0.95", g)  # groups are ignored without @source
    each = fit_point(s, y, "spec=0.95@source", g)
    noisy, clean = g == "noisy", g == "clean"
    assert pooled.method == "spec" and _spec(s, y, noisy, pooled.threshold) < 0.8
    assert each.method == "spec@source" and each.target == 0.95
    assert _spec(s, y, noisy, each.threshold) >= 0.95
    assert _spec(s, y, clean, each.threshold) >= 0.95
    # the stricter cut costs sensitivity, and the point records it on all annotated rows
    assert each.threshold > pooled.threshold
    assert each.val_sensitivity < pooled.val_sensitivity
    assert each.val_specificity == pytest.approx(float(np.mean(s[y == 0] < each.threshold)))
    assert (each.n_pos, each.n_neg) == (200, 1000)


def test_sensitivity_per_source_takes_the_lowest_cut() -> None:
    s, y, g = _two_sources()
    each = fit_point(s, y, "sens=0.9@source", g)
    for src in ("clean", "noisy"):
        m = (g == src) & (y == 1)
        assert np.mean(s[m] >= each.threshold) >= 0.9


def test_small_sources_are_pooled_not_trusted_alone() -> None:
    s, y, g = _two_sources()
    g = g.copy()
    tiny = np.flatnonzero((g == "noisy") & (y == 0))[: MIN_SOURCE_ROWS - 1]
    g[tiny] = "tiny"  # 19 negatives: too few for a 0.95 cut of its own
    alone = fit_point(s[g != "noisy"], y[g != "noisy"], "spec=0.95@source", g[g != "noisy"])
    # with only clean + tiny, tiny is pooled into the rest, which is clean and tiny together
    rest = fit_point(s[g != "noisy"], y[g != "noisy"], "spec=0.95")
    assert alone.threshold >= rest.threshold - 1e-12
    assert _spec(s, y, g == "clean", alone.threshold) >= 0.95


def test_no_groups_falls_back_to_the_pooled_cut() -> None:
    s, y, _ = _two_sources()
    assert fit_point(s, y, "spec=0.95@source").threshold == fit_point(s, y, "spec=0.95").threshold


def test_recalibrate_holds_triage_per_source_too() -> None:
    s, y, g = _two_sources(seed=1)
    p = np.c_[1 - s, s]  # NORMAL and one finding
    labels = np.c_[1 - y, y]
    z = np.log(p / (1 - p))
    cfg = RunConfig.from_dict({"model": {"name": "cxr-fast"}, "classes": ["NORMAL", "PNEUMONIA"]})
    fitted = recalibrate(cfg, z, labels, "spec=0.95@source", fit_temperature=False, groups=g)
    op = fitted.operating_points["PNEUMONIA"]
    assert op.method == "spec@source"
    assert _spec(s, y, g == "noisy", op.threshold) >= 0.95
    tri = fitted.decision.triage
    if fitted.decision.score != "finding_margin":
        assert tri.method == "spec@source"


def test_refit_run_records_the_per_source_rule(tmp_path: Path) -> None:
    """The rule travels from refit_run through finalise into config.json, with each val source."""
    torch.manual_seed(0)
    work = make_tiny_work(tmp_path, n_per_class=8, size=32)
    spec = get_spec("cxr-fast")
    model = create_model("cxr-fast", num_classes=len(TINY_CLASSES)).eval()
    config = {"model": {"name": spec.name}, "classes": list(TINY_CLASSES),
              "preprocess": {"size": 32, "mode": "letterbox"}}  # fmt: skip
    run = save_run(tmp_path / "run", model, config)
    out = refit_run(run, work, tmp_path / "refit", "spec=0.95@source")
    _, cfg = load_run(out)
    assert cfg.extra["operating_point_rule"] == "spec=0.95@source"
    assert {op.method for op in cfg.operating_points.values()} == {"spec@source"}
