"""Stage 8, evaluate: the site gap of a run trained with sources held out.

A run trained with ``cxrad train --hold-out SOURCE`` never saw that source (nor films linked to
it by patient or duplicate group). Its AUROC on the other sources' test films is the
in-distribution number; its AUROC on the held-out source's films is what a new hospital gets.
The difference is the site gap. The held-out source's normal films also show whether the
operating points picked on validation still hold there: the specificity a new site sees.
Every cut-off is the run's own, applied by :class:`~cxrad.models.DecisionStep`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrad.data.holdout import held_out_sources, linked_to
from cxrad.evaluate.bootstrap import cluster_ids
from cxrad.evaluate.metrics import MIN_COUNT
from cxrad.evaluate.rates import auroc_ci, difference, public, rate_ci
from cxrad.labels import NORMAL
from cxrad.models import Decisions, RunConfig
from cxrad.models.calibrate import triage_labels

TRIAGE = "triage"
"""The row name of abnormal-vs-normal: the run's triage score against the film's triage label."""


def site_rows(
    df: pd.DataFrame, sources: Sequence[str], split: str = "test", held_out_split: str = "all"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(in_distribution, held_out)`` ``ok`` rows.

    In-distribution: ``split`` rows of the other sources that are not linked to a held-out
    source. Held out: the held-out sources' rows of ``held_out_split`` (``"all"``: every split,
    since none of them was trained on).
    """
    ok = df[df["status"] == "ok"].reset_index(drop=True)
    linked = linked_to(ok, sources)
    own = ok["source"].astype(str).isin(list(sources)).to_numpy()
    ind = ok[~linked & (ok["split"] == split).to_numpy()]
    out = (
        ok[own] if held_out_split == "all" else ok[own & (ok["split"] == held_out_split).to_numpy()]
    )
    return ind.reset_index(drop=True), out.reset_index(drop=True)


def _labels(df: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """``(N, C)`` labels 1 / 0 / NaN of ``classes`` (NaN where the manifest lacks a column)."""
    cols = [
        df[c].to_numpy(dtype=np.float64) if c in df.columns else np.full(len(df), np.nan)
        for c in classes
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))


def task_columns(df: pd.DataFrame, d: Decisions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (y, score)}`` for every class and triage (the run's triage score)."""
    classes = list(d.classes)
    y = _labels(df, classes)
    out = {c: (y[:, i], d.probabilities[:, i]) for i, c in enumerate(classes)}
    out[TRIAGE] = (triage_labels(y, classes), d.triage_score)
    return out


def normal_specificity(df: pd.DataFrame, d: Decisions, n_boot: int, seed: int) -> dict[str, Any]:
    """Specificity on the normal films (triage label 0) at the run's operating points.

    ``triage``: films the run's triage calls normal; ``no_finding``: films with no finding
    reported (after the run's policy); and per finding, the share under its own cut-off.
    Each with a patient CI.
    """
    classes = list(d.classes)
    m = triage_labels(_labels(df, classes), classes) == 0
    sub = df[m]
    cl = cluster_ids(sub)
    out: dict[str, Any] = {"n": int(m.sum())}
    if not m.any():
        return out
    out[TRIAGE] = rate_ci(~d.abnormal[m], cl, n_boot, seed) | {
        "threshold": float(d.triage_threshold)
    }
    findings = [j for j, c in enumerate(classes) if c != NORMAL]
    if findings:
        out["no_finding"] = rate_ci(~d.findings[m][:, findings].any(axis=1), cl, n_boot, seed)
        out["per_class"] = {
            classes[j]: rate_ci(~d.over[m, j], cl, n_boot, seed)["rate"] for j in findings
        }
    return out


def site_gap(
    ind: pd.DataFrame,
    ind_d: Decisions,
    out: pd.DataFrame,
    out_d: Decisions,
    config: RunConfig,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_COUNT,
) -> dict[str, Any]:
    """In-distribution vs held-out AUROC per class (and triage), their gap, and held-out specificity.

    Rows are scored only where the held-out part has ``min_count`` positives and negatives.

    Returns:
        ``{"held_out_sources", "n_in", "n_held_out", "tasks": {name: {"in", "held_out",
        "gap"}}, "mean": {...}, "specificity_on_normals": {...}}``.
    """
    a, b = task_columns(ind, ind_d), task_columns(out, out_d)
    ca, cb = cluster_ids(ind), cluster_ids(out)
    tasks: dict[str, Any] = {}
    for name, (yb, sb) in b.items():
        ho = auroc_ci(yb, sb, cb, n_boot, seed + 1, min_count)
        if ho["status"] != "ok":
            continue
        ya, sa = a[name]
        inn = auroc_ci(ya, sa, ca, n_boot, seed, min_count)
        tasks[name] = {"in": public(inn), "held_out": public(ho), "gap": difference(inn, ho)}
    scored = [t for t in tasks.values() if t["gap"]["value"] is not None]
    mean = {
        "in": float(np.mean([t["in"]["auroc"] for t in scored])) if scored else None,
        "held_out": float(np.mean([t["held_out"]["auroc"] for t in tasks.values()]))
        if tasks
        else None,
        "gap": float(np.mean([t["gap"]["value"] for t in scored])) if scored else None,
    }
    return {
        "held_out_sources": held_out_sources(config),
        "n_in": len(ind),
        "n_held_out": len(out),
        "held_out_by_source": {str(k): int(v) for k, v in out["source"].value_counts().items()},
        "tasks": tasks,
        "mean": mean,
        "specificity_on_normals": normal_specificity(out, out_d, n_boot, seed),
    }


Scorer = Callable[[pd.DataFrame], tuple[pd.DataFrame, Decisions]]
"""``rows -> (rows found in the cache, the run's decisions on them)``: how the section predicts."""


def site_section(
    df: pd.DataFrame,
    config: RunConfig,
    score: Scorer,
    *,
    split: str = "test",
    held_out_split: str = "all",
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_COUNT,
) -> dict[str, Any] | None:
    """The site-gap section for a run with held-out sources, or None for an ordinary run.

    Args:
        df: the whole manifest of the work folder.
        config: the run's config (``held_out_sources``).
        score: predicts rows through the run's decision step (see :data:`Scorer`).
        split: the in-distribution split.
        held_out_split: which of the held-out sources' films to score (``"all"`` or a split).
    """
    sources = held_out_sources(config)
    if not sources or "split" not in df.columns:
        return None
    ind, out = site_rows(df, sources, split, held_out_split)
    if len(ind) == 0 or len(out) == 0:
        return {"held_out_sources": sources, "status": "n/a: no in-distribution or held-out films"}
    ind, d_in = score(ind)
    out, d_out = score(out)
    res = site_gap(ind, d_in, out, d_out, config, n_boot=n_boot, seed=seed, min_count=min_count)
    res.update(status="ok", split=split, held_out_split=held_out_split)
    return res


def site_lines(section: Mapping[str, Any]) -> list[str]:
    """Plain-text lines of the section, for the CLI headline and the benchmark log."""

    def f(r: Mapping[str, Any], key: str = "auroc") -> str:
        v, ci = r.get(key), r.get("ci")
        if v is None:
            return "n/a"
        return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    if section.get("status", "ok") != "ok":
        return [f"site gap: {section['status']}"]
    held = ",".join(section["held_out_sources"])
    lines = [f"site gap, held out {held} ({section['n_held_out']} films):"]
    for name, t in section["tasks"].items():
        lines.append(
            f"  {name}: in {f(t['in'])}  held-out {f(t['held_out'])}  gap {f(t['gap'], 'value')}"
        )
    spec = section["specificity_on_normals"]
    for key in (TRIAGE, "no_finding"):
        if key in spec:
            lines.append(
                f"  specificity on {spec['n']} held-out normals ({key}): {f(spec[key], 'rate')}"
            )
    return lines


__all__ = [
    "TRIAGE",
    "held_out_sources",
    "normal_specificity",
    "site_gap",
    "site_lines",
    "site_rows",
    "site_section",
    "task_columns",
]
