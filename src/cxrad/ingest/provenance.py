"""Stage 1, ingest: what each dataset rules out, applied to labels its adapter left unannotated.

An adapter maps the labels a dataset *states*. Some absences are known without being stated:
a film taken before COVID-19 existed is not COVID-19, and a film read as normal has none of
the 16 findings. Leaving those NaN hides every adult non-COVID film from the COVID_19 head, so
a model learns "adult film = COVID". Each :class:`Rule` here fills such NaNs with 0, names the
fact it rests on, and never overrides a stated label (a clash is counted, not resolved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxrad.labels import CLASSES, FINDINGS, NORMAL


@dataclass(frozen=True)
class Rule:
    """One known absence.

    Attributes:
        name: stable key, used in the ingest summary.
        classes: the classes set to 0 where a row has them NaN.
        sources: adapter names the rule applies to; empty = every source.
        only_normal: apply only to rows with NORMAL = 1.
        evidence: where the fact comes from (paper, date), for docs/DATASETS.md.
    """

    name: str
    classes: tuple[str, ...]
    sources: tuple[str, ...] = ()
    only_normal: bool = False
    evidence: str = ""


COVID_REPORTED = "2019-12"
"""The first COVID-19 cases were reported in Wuhan in December 2019 (WHO, 31 Dec 2019)."""

RULES: tuple[Rule, ...] = (
    Rule(
        "normal_has_no_finding",
        FINDINGS,
        only_normal=True,
        evidence="the manifest's own rule: a film read as normal has none of the 16 findings",
    ),
    Rule(
        "pre_covid_nih",
        ("COVID_19",),
        ("nih",),
        evidence="NIH ChestX-ray14: films from 1992-2015 at the NIH Clinical Center "
        "(Wang et al., CVPR 2017), before " + COVID_REPORTED,
    ),
    Rule(
        "pre_covid_kermany",
        ("COVID_19",),
        ("kaggle-pediatric",),
        evidence="Kermany et al., Cell 172(5), published February 2018 (Guangzhou Women and "
        "Children's Medical Center), before " + COVID_REPORTED,
    ),
    Rule(
        "pre_covid_tbx11k",
        ("COVID_19",),
        ("tbx11k",),
        evidence="TBX11K: Liu et al., CVPR 2020, whose submission deadline was November 2019, "
        "so every film predates " + COVID_REPORTED,
    ),
    Rule(
        "pre_covid_montgomery_shenzhen",
        ("COVID_19",),
        ("montgomery-shenzhen",),
        evidence="Jaeger et al., Quant Imaging Med Surg 4(6), 2014, before " + COVID_REPORTED,
    ),
)
"""Every rule cxrad applies, in order. Sources not named keep their NaNs: the TB Chest X-ray
Database, COVIDx and the Kaggle COVID mixes draw on collections that are not all dated before
December 2019, so nothing is assumed about them."""


def apply_rules(
    df: pd.DataFrame, rules: Sequence[Rule] = RULES
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fill the NaN labels that ``rules`` rule out with 0; return the frame and what changed.

    Returns:
        ``(manifest, report)``; ``report[source][rule][class]`` counts the labels each rule set,
        and ``report[source]["conflicts"]`` counts stated positives a rule would have contradicted.
    """
    out = df.copy()
    report: dict[str, Any] = {}
    for rule in rules:
        rows = np.ones(len(out), dtype=bool)
        if rule.sources:
            rows &= out["source"].isin(rule.sources).to_numpy()
        if rule.only_normal:
            rows &= (out[NORMAL] == 1).fillna(False).to_numpy(dtype=bool)
        for cls in rule.classes:
            col = out[cls]
            fill = rows & col.isna().to_numpy()
            clash = rows & (col == 1).fillna(False).to_numpy(dtype=bool)
            _count(report, out, fill, rule.name, cls)
            _count(report, out, clash, "conflicts", f"{rule.name}:{cls}")
            out.loc[fill, cls] = np.float32(0.0)
    return out, report


def _count(report: dict[str, Any], df: pd.DataFrame, mask: np.ndarray, key: str, cls: str) -> None:
    if not mask.any():
        return
    for src, n in df.loc[mask, "source"].value_counts().items():
        report.setdefault(str(src), {}).setdefault(key, {})[cls] = int(n)


def label_counts(df: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """Per source and class, how many usable rows say 1, 0 and NaN: what training can see."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for src, g in df.groupby("source", sort=True):
        labels = g[list(CLASSES)].to_numpy(dtype=np.float64)
        out[str(src)] = {
            c: {
                "1": int((labels[:, i] == 1).sum()),
                "0": int((labels[:, i] == 0).sum()),
                "nan": int(np.isnan(labels[:, i]).sum()),
            }
            for i, c in enumerate(CLASSES)
        }
    return out


def rules_table() -> list[dict[str, str]]:
    """The rules as rows (name, classes, sources, evidence), for the summary and the docs."""
    return [
        {
            "name": r.name,
            "classes": "all 16 findings" if r.classes == FINDINGS else ", ".join(r.classes),
            "sources": ", ".join(r.sources) or "every source",
            "applies_to": "NORMAL films" if r.only_normal else "every film",
            "evidence": r.evidence,
        }
        for r in RULES
    ]
