"""Stage 8, evaluate: the operating-point section: what the run's decisions do on the evaluated films.

AUROC ignores thresholds; a person reads decisions. Per class: the operating point, the val
sensitivity / specificity it was chosen for, and the sensitivity / specificity it gets here,
with 95% patient-bootstrap CIs. Per source, on films whose source calls them normal: the share
with no finding flagged, findings flagged per film, and each class's specificity; on abnormal
films: the share triage flags as abnormal. These are the numbers behind "a healthy film stays
clean".
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from cxrad.evaluate.bootstrap import percentile_ci
from cxrad.models import Decisions, RunConfig
from cxrad.models.calibrate import triage_labels


def _rate(values: np.ndarray, rows: np.ndarray, w: np.ndarray | None) -> dict[str, Any]:
    """Mean of ``values`` over ``rows``, with a bootstrap CI from row weights ``w`` (B, N)."""
    n = int(rows.sum())
    if n == 0:
        return {"value": None, "ci": None, "n": 0}
    v = values.astype(np.float64)
    out: dict[str, Any] = {"value": float(v[rows].mean()), "ci": None, "n": n}
    if w is not None and len(w):
        wr = w[:, rows]
        tot = wr.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (wr * v[rows]).sum(axis=1) / tot
        out["ci"] = percentile_ci(boot[tot > 0])
    return out


def decision_section(
    config: RunConfig,
    y: np.ndarray,
    d: Decisions,
    sources: np.ndarray,
    clusters: np.ndarray,
    counts: np.ndarray,
) -> dict[str, Any]:
    """The section as JSON-able data (see the module docstring).

    Args:
        config: the run (operating points and their val numbers).
        y: ``(N, C)`` labels 1 / 0 / NaN for the run's classes.
        d: the decision step's output on the same films.
        sources: ``(N,)`` source of each film.
        clusters: ``(N,)`` bootstrap cluster of each film.
        counts: ``(B, K)`` resample counts per cluster (``B = 0``: no CIs).
    """
    w = counts[:, clusters] if len(counts) else None
    per_class = []
    for j, c in enumerate(config.classes):
        op = config.operating_points.get(c)
        yj = y[:, j]
        pos, neg = yj == 1, yj == 0
        per_class.append(
            {
                "class": c,
                "operating_point": asdict(op) if op else None,
                "threshold": float(d.thresholds[j]),
                "val_sensitivity": op.val_sensitivity if op else None,
                "val_specificity": op.val_specificity if op else None,
                "sensitivity": _rate(d.probabilities[:, j] >= d.thresholds[j], pos, w),
                "specificity": _rate(d.probabilities[:, j] < d.thresholds[j], neg, w),
                "sensitivity_after_triage": _rate(d.findings[:, j], pos, w),
            }
        )
    y_abn = triage_labels(y, config.classes)
    tri = config.decision
    assert tri is not None
    triage = {
        "policy": tri.policy,
        "score": tri.score,
        "operating_point": asdict(tri.triage),
        "sensitivity": _rate(d.abnormal, y_abn == 1, w),
        "specificity": _rate(~d.abnormal, y_abn == 0, w),
    }
    return {
        "per_class": per_class,
        "triage": triage,
        "per_source": per_source_films(config.classes, y, d, y_abn, sources, w),
    }


def per_source_films(
    classes: Sequence[str],
    y: np.ndarray,
    d: Decisions,
    y_abn: np.ndarray,
    sources: np.ndarray,
    w: np.ndarray | None,
) -> list[dict[str, Any]]:
    """Normal-film and abnormal-film numbers of each source (and ``"all"``), with CIs."""
    n_find = d.findings.sum(axis=1)
    out = []
    for s in ["all", *sorted(set(sources.tolist()))]:
        m = np.ones(len(y), bool) if s == "all" else sources == s
        normal, sick = m & (y_abn == 0), m & (y_abn == 1)
        spec = {}
        for j, c in enumerate(classes):
            rows = normal & (y[:, j] == 0) if c != "NORMAL" else np.zeros(len(y), bool)
            if rows.any():
                spec[c] = _rate(~d.findings[:, j], rows, w)
        out.append(
            {
                "source": str(s),
                "n_normal": int(normal.sum()),
                "n_abnormal": int(sick.sum()),
                "normal_no_finding": _rate(n_find == 0, normal, w),
                "findings_per_normal": _rate(n_find, normal, w),
                "normal_called_normal": _rate(~d.abnormal, normal, w),
                "abnormal_flagged": _rate(d.abnormal, sick, w),
                "specificity_on_normals": spec,
            }
        )
    return out


def _ci(r: dict[str, Any] | None) -> str:
    if not r or r.get("value") is None:
        return "n/a"
    ci = r.get("ci")
    text = f"{r['value']:.3f}"
    return text + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "") + f", n={r['n']}"


def _v(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def decisions_html(sec: dict[str, Any] | None) -> str:
    """The section as HTML tables for ``report.html``."""
    if not sec:
        return ""

    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
        )
        return f"<table><tr>{th}</tr>{body}</table>"

    t = sec["triage"]
    op = t["operating_point"]
    parts = [
        "<h2>Operating points (95% CI, patient bootstrap)</h2>",
        f"<p>Decision policy <b>{html.escape(t['policy'])}</b>: triage score "
        f"{html.escape(t['score'])} at {op['threshold']:.4g} ({html.escape(op['method'])}; val "
        f"sensitivity {_v(op['val_sensitivity'])}, specificity {_v(op['val_specificity'])}). "
        f"Here: sensitivity {_ci(t['sensitivity'])}, specificity {_ci(t['specificity'])}.</p>",
        table(
            [
                "class",
                "threshold",
                "chosen by",
                "val sens",
                "val spec",
                "sensitivity",
                "specificity",
                "sensitivity after triage",
            ],
            [
                [
                    r["class"],
                    f"{r['threshold']:.4g}",
                    (r["operating_point"] or {}).get("method", "none"),
                    _v(r["val_sensitivity"]),
                    _v(r["val_specificity"]),
                    _ci(r["sensitivity"]),
                    _ci(r["specificity"]),
                    _ci(r["sensitivity_after_triage"]),
                ]
                for r in sec["per_class"]
            ],
        ),
        "<h3>Normal and abnormal films per source</h3>",
        table(
            [
                "source",
                "normal films",
                "no finding flagged",
                "findings per normal film",
                "abnormal films",
                "flagged abnormal by triage",
            ],
            [
                [
                    s["source"],
                    s["n_normal"],
                    _ci(s["normal_no_finding"]),
                    _ci(s["findings_per_normal"]),
                    s["n_abnormal"],
                    _ci(s["abnormal_flagged"]),
                ]
                for s in sec["per_source"]
            ],
        ),
    ]
    return "\n".join(parts)
