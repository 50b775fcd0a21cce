"""Stage 6, models: each operating-point rule picks the cut-off it promises, checked by brute force.

Every distinct val score (and +inf) is a candidate cut; a rule's cut-off must give the rates it
reports and be the best candidate under the rule: ``spec`` the most sensitive cut that keeps
the target specificity, ``sens`` the most specific that keeps the target sensitivity, ``youden``
the highest J.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrad.errors import ModelError
from cxrad.models.config import UNFITTED
from cxrad.models.operating_points import fit_point, parse_rule


@st.composite
def val_scores(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Scores on a coarse grid (so ties happen) and 1/0/NaN labels with both classes present."""
    n = draw(st.integers(4, 60))
    s = np.array(draw(st.lists(st.integers(1, 19), min_size=n, max_size=n))) / 20.0
    y = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, np.nan]), min_size=n, max_size=n)))
    y[:2] = [0.0, 1.0]
    return s, y


def rates(s: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float]:
    """Sensitivity and specificity of calling ``s >= t`` positive, on the annotated rows."""
    m = ~np.isnan(y)
    s, y = s[m], y[m]
    return float(np.mean(s[y == 1] >= t)), float(np.mean(s[y == 0] < t))


def candidates(s: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    return [rates(s, y, t) for t in [*np.unique(s), np.inf]]


def check_reported(point, s: np.ndarray, y: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    sens, spec = rates(s, y, point.threshold)
    assert point.val_sensitivity == pytest.approx(sens) and point.val_specificity == pytest.approx(
        spec
    )
    assert point.n_pos == int((y == 1).sum()) and point.n_neg == int((y == 0).sum())
    return sens, spec


@settings(max_examples=150, deadline=None)
@given(val_scores(), st.sampled_from([0.5, 0.8, 0.9, 0.95]))
def test_spec_is_the_most_sensitive_cut_that_keeps_the_specificity(data, target: float) -> None:  # type: ignore[no-untyped-def]
    s, y = data
    sens, spec = check_reported(fit_point(s, y, f"spec={target}"), s, y)
    assert spec >= target - 1e-12
    assert sens == max(se for se, sp in candidates(s, y) if sp >= target - 1e-12)


@settings(max_examples=150, deadline=None)
@given(val_scores(), st.sampled_from([0.5, 0.8, 0.9, 0.95]))
def test_sens_is_the_most_specific_cut_that_keeps_the_sensitivity(data, target: float) -> None:  # type: ignore[no-untyped-def]
    s, y = data
    sens, spec = check_reported(fit_point(s, y, f"sens={target}"), s, y)
    assert sens >= target - 1e-12
    assert spec == max(sp for se, sp in candidates(s, y) if se >= target - 1e-12)


@settings(max_examples=150, deadline=None)
@given(val_scores())
def test_youden_is_the_cut_with_the_highest_j(data) -> None:  # type: ignore[no-untyped-def]
    s, y = data
    point = fit_point(s, y, "youden")
    sens, spec = check_reported(point, s, y)
    assert point.method == "youden" and point.target is None
    assert sens + spec == pytest.approx(max(se + sp for se, sp in candidates(s, y)))


def test_the_cut_sits_strictly_inside_the_gap_it_was_found_in() -> None:
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    y = np.array([0.0, 0.0, 0.0, 1.0, 1.0])
    for rule in ("youden", "spec=0.95", "sens=0.9"):
        t = fit_point(s, y, rule).threshold
        assert 0.3 < t < 0.8, rule  # not on either bounding score: a margin both ways


def test_non_finite_scores_and_unannotated_rows_take_no_part() -> None:
    s = np.array([0.1, 0.9, np.nan, np.inf, 0.2, 0.8])
    y = np.array([0.0, 1.0, 0.0, 0.0, np.nan, np.nan])
    point = fit_point(s, y, "youden")
    assert (point.n_pos, point.n_neg) == (1, 1) and 0.1 < point.threshold < 0.9


@pytest.mark.parametrize(
    ("rule", "y", "why"),
    [
        ("spec=0.95", [1.0, 1.0, np.nan], "unfitted: no val negatives"),
        ("sens=0.9", [0.0, 0.0, np.nan], "unfitted: no val positives"),
        ("youden", [0.0, np.nan, np.nan], "unfitted: no val positives"),
        ("youden", [1.0, 1.0, 1.0], "unfitted: no val negatives"),
    ],
)
def test_a_rule_without_the_rows_it_needs_is_unfitted_and_says_so(
    rule: str, y: list, why: str
) -> None:
    point = fit_point(np.array([0.2, 0.5, 0.7]), np.array(y), rule)
    assert point.method == why and point.threshold == UNFITTED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec", "needs a target, e.g. spec=0.95"),
        ("sens=high", "needs a target, e.g. sens=0.95"),
        ("spec=1.0", r"must be in \(0, 1\)"),
        ("sens=0", r"must be in \(0, 1\)"),
        ("spec=0.95@site", "the only scope after @ is @source"),
        ("spce=0.95", "Did you mean 'spec'"),
    ],
)
def test_bad_rules_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_rule(text)


@pytest.mark.parametrize("text", ["spec=0.95", "sens=0.9", "youden", "spec=0.95@source"])
def test_rules_print_as_they_parse(text: str) -> None:
    assert str(parse_rule(text)) == text
