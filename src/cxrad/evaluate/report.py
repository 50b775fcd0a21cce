"""Stage 8, evaluate: write metrics.json, the PNG plots and one self-contained report.html.

The HTML inlines every plot as base64 so the single file can be mailed or attached to a
paper review. It opens with a plain-language summary: the headline numbers next to the
baselines they must beat, and the shortcut-audit verdict.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

from cxrad.evaluate.decisions import decisions_html
from cxrad.evaluate.metrics import format_ci
from cxrad.evaluate.report_where import render_where
from cxrad.evaluate.sites import site_lines
from cxrad.evaluate.subgroups import subgroup_lines

logger = logging.getLogger(__name__)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def headline(m: dict[str, Any]) -> list[str]:
    """The few lines the CLI prints and the report opens with."""
    cls, t1 = m["classification"], m["top1"]
    macro, micro = cls["macro"], cls["micro"]
    data = (m.get("header") or {}).get("data") or {}
    lines = [] if data.get("is_test", True) else [f"WARNING: these are {data['role']}"]
    lines.append(
        f"macro AUROC {format_ci(macro['auroc'], macro['auroc_ci'])} over "
        f"{len(macro['classes'])} classes; micro AUROC {format_ci(micro['auroc'], micro['auroc_ci'])}"
    )
    if t1.get("status") == "ok":
        maj, prior = t1["majority"], t1["prior"]
        ci = t1.get("accuracy_ci")
        if t1["accuracy"] <= maj["accuracy"]:
            beats = "does NOT beat"
        elif ci and ci[0] <= maj["accuracy"]:
            beats = "is not clearly better than (95% CI overlaps)"
        else:
            beats = "beats"
        acc = _pct(t1["accuracy"]) + (f" ({_pct(ci[0])}–{_pct(ci[1])})" if ci else "")
        lines.append(
            f"top-1 accuracy {acc} on {t1['n']} single-label images {beats} the majority "
            f"baseline (always {maj['class']}) {_pct(maj['accuracy'])}; prior baseline "
            f"{_pct(prior['accuracy'])}"
        )
        lines.append(
            f"balanced accuracy {_pct(t1['balanced_accuracy'])} vs majority "
            f"{_pct(maj['balanced_accuracy'])} and prior {_pct(prior['balanced_accuracy'])}"
        )
    else:
        lines.append(f"top-1 view: {t1.get('status')}")
    lines.append("shortcut audit: " + m["shortcut"]["verdict"]["text"])
    sp = m["shortcut"].get("site_probe") or {}
    if sp.get("status") == "ok":
        lines.append(
            f"site probe (source/site labels): balanced accuracy {sp['balanced_accuracy']:.2f} "
            f"vs chance {sp['chance']:.2f} over {len(sp['labels'])} sites"
        )
    if m.get("sites"):
        lines.extend(site_lines(m["sites"]))
    return lines


def _summary(m: dict[str, Any]) -> list[str]:
    lines = headline(m)
    data = m["header"]["data"] if "header" in m else {}
    if data:
        same = data["same_manifest_as_training"]
        lines.append(
            f"data: {data['n_images']} images of split '{data['split']}'; manifest "
            + (
                "is the one the model was trained on"
                if same
                else "differs from the training manifest (expected for an external set; "
                "otherwise check for leakage)"
            )
        )
    excl = m["classification"]["excluded_classes"]
    if excl:
        lines.append(
            "not scored (too few labels): " + ", ".join(f"{c} ({r})" for c, r in excl.items())
        )
    cal = m["calibration"]
    lines.append(
        f"calibration: mean ECE {_num(cal['mean_ece'])}, mean Brier {_num(cal['mean_brier'])}"
    )
    return lines


def _table(header: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: str | None, alt: str) -> str:
    if not path:
        return f"<p><i>{html.escape(alt)}: nothing to plot.</i></p>"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.summary{background:#f6f8fa;border-left:4px solid #0366d6;padding:.6em 1.2em}
.warn{background:#fff5f5;border-left:4px solid #d73a49;padding:.6em 1.2em}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}code{background:#f3f3f3;padding:1px 4px}
"""


def render_html(m: dict[str, Any], images: dict[str, str | None]) -> str:
    """The report as one HTML string with the plots inlined."""
    h = m.get("header", {})
    cls, t1, sh, cal = m["classification"], m["top1"], m["shortcut"], m["calibration"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>cxrad evaluation</title>"]
    parts.append(f"<style>{CSS}</style></head><body>")
    model = h.get("model", {})
    parts.append(f"<h1>Evaluation of {html.escape(str(model.get('name', '?')))}</h1>")
    parts.append(
        "<div class='summary'><b>Summary</b><ul>"
        + "".join(f"<li>{html.escape(s)}</li>" for s in _summary(m))
        + "</ul></div>"
    )
    if sh["verdict"]["shortcut_suspected"]:
        parts.append(
            f"<div class='warn'><b>Shortcut audit.</b> {html.escape(sh['verdict']['text'])}</div>"
        )
    if h:
        d = h["data"]
        rows = [
            ["model", f"{model['name']} ({model['activation']})"],
            ["run kind", _task_text(model.get("task", "multilabel"))],
            ["run", model["run_path"]],
            ["classes", ", ".join(model["classes"])],
            ["preprocess", json.dumps(model["preprocess"])],
            ["temperature", json.dumps(model["temperature"]) if model["temperature"] else "none"],
            ["work folder", d["work"]],
            ["split", d["split"]],
            ["images", f"{d['n_images']} ({d['n_not_in_cache']} not in cache)"],
            ["sources", ", ".join(f"{k}: {v}" for k, v in d["sources"].items())],
            ["manifest hash", d["manifest_hash"]],
            [
                "training manifest hash",
                f"{d['run_manifest_hash']} (same: {d['same_manifest_as_training']})",
            ],
            ["command", h["command"]],
            ["cxrad version", h["cxrad_version"]],
            ["date", h["date"]],
            [
                "bootstrap",
                f"{cls['n_boot']} patient-clustered resamples, seed {cls['seed']}; {m['n_clusters']} clusters",
            ],
        ]
        parts.append("<h2>Model and data</h2>" + _table(["", ""], rows))
    parts.append("<h2>Per class (95% CI, patient bootstrap)</h2>")
    rows = [
        [
            r["class"],
            r["n"],
            r["n_pos"],
            r["n_unlabelled"],
            _num(r["prevalence"]),
            format_ci(r["auroc"], r["auroc_ci"], r["status"]),
            format_ci(r["auprc"], r["auprc_ci"], r["status"]),
            f"{r['threshold']:.3f} ({r['threshold_from']})",
            _num(r["sensitivity"]),
            _num(r["specificity"]),
        ]
        for r in cls["per_class"]
    ]
    hdr = [
        "class",
        "n labelled",
        "positives",
        "unlabelled (skipped)",
        "prevalence",
        "AUROC",
        "AUPRC",
        "threshold",
        "sensitivity",
        "specificity",
    ]
    parts.append(_table(hdr, rows))
    ma, mi = cls["macro"], cls["micro"]
    parts.append(
        "<h2>Averages</h2>"
        + _table(
            ["average", "AUROC", "AUPRC", "classes"],
            [
                [
                    "macro",
                    format_ci(ma["auroc"], ma["auroc_ci"]),
                    format_ci(ma["auprc"], ma["auprc_ci"]),
                    ", ".join(ma["classes"]),
                ],
                [
                    "micro",
                    format_ci(mi["auroc"], mi["auroc_ci"]),
                    format_ci(mi["auprc"], mi["auprc_ci"]),
                    ", ".join(mi["classes"]) + f" ({mi['n_pairs']} labelled pairs)",
                ],
            ],
        )
    )
    parts.append("<h2>The original project's view: top-1 on single-label images</h2>")
    if t1.get("status") == "ok":
        maj, pr = t1["majority"], t1["prior"]
        parts.append(
            _table(
                ["predictor", "top-1 accuracy", "balanced accuracy"],
                [
                    [
                        "this model (arg-max)",
                        format_ci(t1["accuracy"], t1.get("accuracy_ci")),
                        format_ci(t1["balanced_accuracy"], t1.get("balanced_accuracy_ci")),
                    ],
                    [
                        f"majority: always {maj['class']} (from {maj['from']})",
                        _num(maj["accuracy"]),
                        _num(maj["balanced_accuracy"]),
                    ],
                    [
                        f"prior: random with class frequencies (from {pr['from']})",
                        _num(pr["accuracy"]),
                        _num(pr["balanced_accuracy"]),
                    ],
                ],
            )
        )
        parts.append(
            f"<p>{t1['n']} single-label images; balanced accuracy averages recall over "
            f"{html.escape(', '.join(t1['classes_in_balanced_accuracy']))}.</p>"
        )
        parts.append(_img(images.get("confusion"), "confusion matrix"))
    else:
        parts.append(f"<p>{html.escape(t1.get('status', ''))}</p>")
    parts.append(
        "<h2>Per source</h2>"
        + _table(
            [
                "source",
                "n",
                "macro AUROC",
                "classes in macro",
                "single-label n",
                "top-1 accuracy",
                "balanced accuracy",
                "majority accuracy",
            ],
            [
                [
                    s["source"],
                    s["n"],
                    _num(s["macro_auroc"]),
                    ", ".join(s["macro_classes"]) or "none",
                    s["n_single_label"],
                    _num(s["top1_accuracy"]),
                    _num(s["balanced_accuracy"]),
                    _num(s["majority_accuracy"]),
                ]
                for s in m["per_source"]
            ],
        )
    )
    parts.append(decisions_html(m.get("decisions")))
    parts.append("<h2>Shortcut audit</h2>")
    parts.append(f"<p><b>Verdict.</b> {html.escape(sh['verdict']['text'])}</p>")
    pb = sh["probe"]
    if pb.get("status") == "ok":
        parts.append(
            f"<p>Linear probe (standardised logistic regression on the model's features, "
            f"{pb['folds']}-fold GroupKFold by patient/duplicate group) predicts the source with "
            f"balanced accuracy <b>{pb['balanced_accuracy']:.3f}</b> vs chance {pb['chance']:.3f} "
            f"(accuracy {pb['accuracy']:.3f}; majority {pb['majority_accuracy']:.3f}).</p>"
        )
        parts.append(
            _table(
                ["true \\ predicted", *pb["labels"]],
                [[lab, *row] for lab, row in zip(pb["labels"], pb["confusion"], strict=True)],
            )
        )
    else:
        parts.append(f"<p>Source probe: {html.escape(pb.get('status', ''))}</p>")
    parts.append(
        _table(
            [
                "class",
                "pooled AUROC",
                "within-source AUROC (weighted)",
                "gap",
                "per source",
                "note",
            ],
            [
                [
                    r["class"],
                    _num(r["pooled"]),
                    _num(r["within"]),
                    _num(r["gap"]),
                    "; ".join(
                        f"{s}: {_num(v['auroc'])} ({v['n_pos']}+/{v['n_neg']}-)"
                        for s, v in r["by_source"].items()
                    ),
                    r["note"],
                ]
                for r in sh["within_source"]
            ],
        )
    )
    parts.extend(extra_sections(m))
    parts.append("<h2>Calibration</h2>")
    t = cal.get("temperature")
    if t:
        parts.append(
            f"<p>Temperature scaling fitted on {t['n_val']} validation images: T = "
            f"{', '.join(f'{v:.3f}' for v in t['fitted'])} per class, operating points refitted "
            f"(saved to <code>{html.escape(t['saved_to'])}</code>). Mean ECE on this split "
            f"{_num(t['mean_ece_before'])} → {_num(t['mean_ece_after'])}; mean Brier "
            f"{_num(t['mean_brier_before'])} → {_num(t['mean_brier_after'])}.</p>"
        )
    parts.append(
        _table(
            ["class", f"ECE ({cal['n_bins']} bins)", "Brier"],
            [[r["class"], _num(r["ece"]), _num(r["brier"])] for r in cal["per_class"]]
            + [["mean", _num(cal["mean_ece"]), _num(cal["mean_brier"])]],
        )
    )
    parts.append(_img(images.get("reliability"), "reliability diagrams"))
    parts.append(render_where(m))
    parts.append("<h2>ROC curves</h2>" + _img(images.get("roc"), "ROC curves"))
    parts.append("<h2>Precision-recall curves</h2>" + _img(images.get("pr"), "PR curves"))
    parts.append("</body></html>")
    return "\n".join(parts)


def extra_sections(m: dict[str, Any]) -> list[str]:
    """The site-gap and subgroup sections, as preformatted text (absent when not computed)."""
    parts = []
    sp = m["shortcut"].get("site_probe") or {}
    if sp.get("status") == "ok":
        parts.append(
            "<h2>Site probe</h2><p>The same probe over source/site labels (the Radiography "
            f"sub-sources, COVID-CXNet countries): balanced accuracy <b>{sp['balanced_accuracy']:.3f}"
            f"</b> vs chance {sp['chance']:.3f} over {len(sp['labels'])} sites: "
            f"{html.escape(', '.join(sp['labels']))}.</p>"
        )
    if m.get("sites"):
        text = html.escape("\n".join(site_lines(m["sites"])))
        parts.append(f"<h2>Site gap (sources held out of training)</h2><pre>{text}</pre>")
    if m.get("subgroups"):
        text = html.escape("\n".join(subgroup_lines(m["subgroups"])))
        parts.append(
            "<h2>Subgroups (AUROC; sensitivity and specificity at the operating point; 95% "
            f"patient-bootstrap CIs)</h2><pre>{text}</pre>"
        )
    return parts


def _task_text(task: str) -> str:
    if task == "one-class":
        return (
            "one-class: an anomaly detector trained on NORMAL films only; its one output is "
            "p(NORMAL), checkpoint and threshold chosen without abnormal labels"
        )
    return f"{task}: classifier trained on labelled findings"
