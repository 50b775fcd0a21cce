"""Stage 8, evaluate: the HTML of the localisation and counterfactual sections of the report."""

from __future__ import annotations

import html
from typing import Any


def _ci(s: dict[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    ci = s.get("ci")
    return f"{s['mean']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _auc(s: dict[str, Any]) -> str:
    if s.get("auroc") is None:
        return "n/a"
    ci = s.get("ci")
    return f"{s['auroc']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_where(m: dict[str, Any]) -> str:
    """HTML for ``m["localisation"]`` and ``m["counterfactual"]`` ('' when absent)."""
    parts: list[str] = []
    loc = m.get("localisation")
    if loc:
        parts.append("<h2>Where: heatmaps scored</h2>")
        parts.append(
            f"<p>Grad-CAM maps against radiologists' boxes and the lung fields (lung segmenter). "
            f"Chance: {html.escape(loc['chance'])}. Means with 95% patient-bootstrap CIs.</p>"
        )
        boxes = loc["boxes"]
        if boxes.get("per_class"):
            parts.append(
                _table(
                    [
                        "class",
                        "source",
                        "films",
                        "pointing game",
                        "chance",
                        "mass in box",
                        "chance",
                        "box area",
                    ],
                    [
                        [
                            r["class"],
                            r["source"],
                            str(r["n_films"]),
                            _ci(r["hit"]),
                            _ci(r["chance_hit"]),
                            _ci(r["mass"]),
                            _ci(r["chance_mass"]),
                            _ci(r["box_area"]),
                        ]
                        for r in boxes["per_class"]
                    ],
                )
            )
        else:
            parts.append(f"<p>Boxes: {html.escape(str(boxes.get('status')))}.</p>")
        lungs = loc["lungs"]
        if lungs.get("status") == "ok":
            parts.append(
                f"<p>Share of heatmap mass inside the lungs, for {html.escape(loc['explained_class'])}"
                f" (a flat map scores the lung area):</p>"
            )
            rows = [
                [
                    "all",
                    str(lungs["all"]["n_films"]),
                    _ci(lungs["all"]["mass"]),
                    _ci(lungs["all"]["chance_mass"]),
                    _ci(lungs["all"]["lung_area"]),
                ]
            ]
            rows += [
                [
                    r["class"],
                    str(r["n_films"]),
                    _ci(r["mass"]),
                    _ci(r["chance_mass"]),
                    _ci(r["lung_area"]),
                ]
                for r in lungs["per_class"]
            ]
            parts.append(_table(["class", "films", "mass in lungs", "chance", "lung area"], rows))
    cf = m.get("counterfactual")
    if cf:
        parts.append("<h2>Shortcut counterfactuals</h2>")
        parts.append(
            "<p>AUROC when the lung fields are blanked (a model that reads the lungs falls "
            "towards 0.5) and when everything outside them is blanked (it should survive). "
            "Blanked regions are filled with one grey, the region's mean over the split.</p>"
        )
        cls = "warn" if cf["flagged"] else "summary"
        parts.append(f"<div class='{cls}'>{html.escape(cf['text'])}</div>")
        parts.append(
            _table(
                ["class", "full film", "lungs blanked", "outside blanked", "verdict"],
                [
                    [
                        r["class"],
                        _auc(r["full"]),
                        _auc(r["lungs_blanked"]),
                        _auc(r["outside_blanked"]),
                        r["text"],
                    ]
                    for r in cf["per_class"]
                    if r["status"] == "ok"
                ],
            )
        )
    return "\n".join(parts)
