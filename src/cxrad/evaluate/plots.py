"""Stage 8, evaluate: ROC/PR curves, the confusion matrix and reliability diagrams as PNG files.

Matplotlib runs on the Agg backend (no display needed). Each function writes one PNG and
returns its path; the HTML report inlines the same files as base64.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

logger = logging.getLogger(__name__)

DPI = 90


def _grid(n: int, size: float = 2.6) -> tuple[plt.Figure, np.ndarray]:
    cols = min(4, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def curves_png(
    y: np.ndarray,
    p: np.ndarray,
    per_class: Sequence[dict[str, Any]],
    classes: Sequence[str],
    kind: str,
    path: Path,
) -> Path | None:
    """ROC (``kind="roc"``) or precision-recall (``"pr"``) curves, one panel per eligible class."""
    ok = [r for r in per_class if r["status"] == "ok"]
    if not ok:
        return None
    fig, axes = _grid(len(ok))
    for ax, r in zip(axes, ok, strict=False):
        j = list(classes).index(r["class"])
        m = ~np.isnan(y[:, j])
        yt, ps = y[m, j], p[m, j]
        if kind == "roc":
            fpr, tpr, _ = roc_curve(yt, ps)
            ax.plot(fpr, tpr, lw=1.5)
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
            ax.set_xlabel("1 - specificity", fontsize=7)
            ax.set_ylabel("sensitivity", fontsize=7)
            title = f"AUROC {r['auroc']:.3f}"
        else:
            prec, rec, _ = precision_recall_curve(yt, ps)
            ax.step(rec, prec, where="post", lw=1.5)
            ax.axhline(r["prevalence"], ls="--", c="grey", lw=0.8)
            ax.set_xlabel("recall", fontsize=7)
            ax.set_ylabel("precision", fontsize=7)
            title = f"AP {r['auprc']:.3f}"
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{r['class']}\n{title} (n+={r['n_pos']})", fontsize=8)
        ax.tick_params(labelsize=6)
    return _save(fig, path)


def confusion_png(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns) with counts in the cells."""
    cm = np.asarray(confusion, dtype=np.float64)
    keep = (cm.sum(axis=1) > 0) | (cm.sum(axis=0) > 0)
    cm = cm[keep][:, keep]
    names = [c for c, k in zip(classes, keep, strict=True) if k]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 1.2 + 0.55 * len(names))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if cm[i, j]:
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted (arg-max)")
    ax.set_ylabel("true (single-label images)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    return _save(fig, path)


def reliability_png(calibration: dict[str, Any], path: Path) -> Path | None:
    """Reliability diagrams: observed positive rate against mean probability, per class."""
    rows = [r for r in calibration["per_class"] if r["ece"] is not None]
    if not rows:
        return None
    fig, axes = _grid(len(rows))
    for ax, r in zip(axes, rows, strict=False):
        b = r["bins"]
        xs = [x for x, n in zip(b["mean_predicted"], b["count"], strict=True) if n]
        ys = [v for v, n in zip(b["fraction_positive"], b["count"], strict=True) if n]
        ns = [n for n in b["count"] if n]
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.scatter(xs, ys, s=[8 + 60 * n / max(ns) for n in ns], alpha=0.8)
        ax.plot(xs, ys, lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{r['class']}\nECE {r['ece']:.3f}  Brier {r['brier']:.3f}", fontsize=8)
        ax.set_xlabel("mean probability", fontsize=7)
        ax.set_ylabel("fraction positive", fontsize=7)
        ax.tick_params(labelsize=6)
    return _save(fig, path)
