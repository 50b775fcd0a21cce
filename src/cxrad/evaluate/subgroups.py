"""Stage 8, evaluate: AUROC, sensitivity and specificity per patient subgroup.

A model can be good on average and poor for children, for women, or on AP films (taken at the
bedside, of sicker patients). The groups come from what the manifest carries: ``meta`` JSON
(``age``, ``sex``: NIH, ieee8023, COVID-CXNet), ``view`` (PA / AP), and the source or site for
pediatric vs adult (every kaggle-pediatric film, and the Radiography films from Kermany, are
children's). Films without the attribute are left out of that attribute's groups, and counted.
Sensitivity and specificity are at the run's operating points, as its
:class:`~cxrad.models.DecisionStep` applies them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from cxrad.evaluate.bootstrap import cluster_ids
from cxrad.evaluate.metrics import MIN_COUNT
from cxrad.evaluate.rates import auroc_ci, public, rate_ci
from cxrad.evaluate.sites import TRIAGE, task_columns
from cxrad.models import Decisions

PEDIATRIC_SOURCES = ("kaggle-pediatric",)
PEDIATRIC_SITES = ("kaggle:kermany",)
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 200, "60+"))


def _meta(df: pd.DataFrame, key: str) -> pd.Series:
    if "meta" not in df.columns:
        return pd.Series([None] * len(df), index=df.index, dtype=object)

    def get(text: Any) -> Any:
        if not isinstance(text, str) or not text:
            return None
        try:
            return json.loads(text).get(key)
        except (ValueError, AttributeError):
            return None

    return df["meta"].map(get)


def ages(df: pd.DataFrame) -> pd.Series:
    """Age in years from ``meta`` (float, NaN when absent or not a number)."""
    return pd.to_numeric(_meta(df, "age"), errors="coerce").astype(float)


def attributes(df: pd.DataFrame) -> dict[str, pd.Series]:
    """``{attribute: group label per row (None = unknown)}`` for age band, sex, view, population."""
    age = ages(df)
    band = pd.Series([None] * len(df), index=df.index, dtype=object)
    for lo, hi, name in AGE_BANDS:
        band[(age >= lo) & (age < hi)] = name
    sex = _meta(df, "sex").map(
        lambda s: (
            {"m": "M", "male": "M", "f": "F", "female": "F"}.get(str(s).strip().lower())
            if s is not None
            else None
        )
    )
    view = df["view"].astype("string") if "view" in df.columns else pd.Series(pd.NA, index=df.index)
    view = view.map(
        lambda v: (
            None
            if pd.isna(v)
            else "AP"
            if str(v).upper().startswith("AP")
            else "PA"
            if str(v).upper() == "PA"
            else None
        )
    )
    site = df["site"].astype("string") if "site" in df.columns else pd.Series(pd.NA, index=df.index)
    child = df["source"].astype(str).isin(PEDIATRIC_SOURCES) | site.isin(PEDIATRIC_SITES).fillna(
        False
    )
    pop = pd.Series([None] * len(df), index=df.index, dtype=object)
    pop[age >= 18] = "adult"
    pop[(age < 18) | child.to_numpy(dtype=bool)] = "pediatric"
    return {
        "age_band": band,
        "sex": sex.astype(object),
        "view": view.astype(object),
        "population": pop,
    }


def _tasks(df: pd.DataFrame, d: Decisions):
    """``(task, y, score, threshold)`` for every class and triage."""
    cut = dict(zip(d.classes, d.thresholds.tolist(), strict=True)) | {TRIAGE: d.triage_threshold}
    for task, (y, s) in task_columns(df, d).items():
        yield task, y, s, cut[task]


def group_metrics(
    y: np.ndarray, s: np.ndarray, threshold: float | None, clusters: np.ndarray,
    n_boot: int, seed: int, min_count: int,
) -> dict[str, Any]:  # fmt: skip
    """AUROC, and sensitivity / specificity at ``threshold``, each with a patient CI."""
    out = public(auroc_ci(y, s, clusters, n_boot, seed, min_count))
    if out["status"] == "ok" and threshold is not None:
        pos, neg = y == 1, y == 0
        out["threshold"] = float(threshold)
        out["sensitivity"] = rate_ci(s[pos] >= threshold, clusters[pos], n_boot, seed)
        out["specificity"] = rate_ci(s[neg] < threshold, clusters[neg], n_boot, seed)
    return out


def subgroup_section(
    df: pd.DataFrame,
    d: Decisions,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_COUNT,
) -> dict[str, Any]:
    """``{attribute: {"counts": {group: n}, "unknown": n, "groups": {group: {task: metrics}}}}``.

    ``d`` is the run's decisions on ``df``'s rows (in order). Only tasks with ``min_count``
    positives and negatives inside a group are listed.
    """
    df = df.reset_index(drop=True)
    clusters = cluster_ids(df)
    out: dict[str, Any] = {}
    for attr, labels in attributes(df).items():
        lab = labels.reset_index(drop=True)
        known = lab.notna().to_numpy()
        res: dict[str, Any] = {"counts": {str(k): int(v) for k, v in lab.value_counts().items()},
                               "unknown": int((~known).sum()), "groups": {}}  # fmt: skip
        for group in sorted(lab.dropna().unique()):
            m = (lab == group).to_numpy()
            scored = {}
            for task, y, s, thr in _tasks(df[m], _rows(d, m)):
                r = group_metrics(y, s, thr, clusters[m], n_boot, seed, min_count)
                if r["status"] == "ok":
                    scored[task] = r
            if scored:
                res["groups"][str(group)] = scored
        out[attr] = res
    return out


def _rows(d: Decisions, m: np.ndarray) -> Decisions:
    """The decisions of the films selected by mask ``m``."""
    return replace(
        d, probabilities=d.probabilities[m], over=d.over[m], findings=d.findings[m],
        triage_score=d.triage_score[m], abnormal=d.abnormal[m],
    )  # fmt: skip


def subgroup_lines(section: Mapping[str, Any], tasks: Sequence[str] | None = None) -> list[str]:
    """Plain-text lines: one per (attribute, group, task)."""

    def f(r: Mapping[str, Any] | None, key: str) -> str:
        if not r or r.get(key) is None:
            return "n/a"
        ci = r.get("ci")
        return f"{r[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = []
    for attr, res in section.items():
        lines.append(f"{attr}: {res['counts']} (unknown {res['unknown']})")
        for group, scored in res["groups"].items():
            for task, r in scored.items():
                if tasks is not None and task not in tasks:
                    continue
                lines.append(
                    f"  {group} {task}: AUROC {f(r, 'auroc')} (+{r['n_pos']}/-{r['n_neg']}); "
                    f"sens {f(r.get('sensitivity'), 'rate')}; spec {f(r.get('specificity'), 'rate')}"
                )
    return lines


__all__ = ["attributes", "group_metrics", "subgroup_lines", "subgroup_section"]
