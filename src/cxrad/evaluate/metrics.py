"""Stage 8, evaluate: per-class AUROC/AUPRC with patient-bootstrap CIs, thresholds, averages.

Only annotated labels count: a NaN label means the source never looked for that finding, so
it is skipped, never read as "absent". A class with too few positives or negatives gets a
reason ("n/a: 3 positives") instead of a number that would look precise and mean nothing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrad.evaluate.bootstrap import Resamples, bootstrap_metrics, percentile_ci
from cxrad.progress import Progress

logger = logging.getLogger(__name__)

MIN_COUNT = 5
"""Default minimum number of annotated positives and of negatives for a class to get a number."""


def eligibility(n_pos: int, n_neg: int, min_count: int = MIN_COUNT) -> str:
    """``"ok"``, or why the class gets no AUROC (``"n/a: 3 positives"``, ``"n/a: not annotated"``)."""
    if n_pos + n_neg == 0:
        return "n/a: not annotated"
    if n_pos < min_count:
        return f"n/a: {n_pos} positive{'s' if n_pos != 1 else ''} (need {min_count})"
    if n_neg < min_count:
        return f"n/a: {n_neg} negative{'s' if n_neg != 1 else ''} (need {min_count})"
    return "ok"


def point_auroc(y: np.ndarray, p: np.ndarray, min_count: int = 1) -> float | None:
    """AUROC over annotated rows (NaN labels skipped), or None when a class is too rare."""
    m = ~np.isnan(y)
    n_pos = int(np.sum(y[m] == 1))
    if eligibility(n_pos, int(m.sum()) - n_pos, min_count) != "ok":
        return None
    return float(roc_auc_score(y[m], p[m]))


def sens_spec(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """Sensitivity and specificity of ``p >= threshold`` on annotated rows (None if undefined)."""
    m = ~np.isnan(y)
    yt, called = y[m] == 1, p[m] >= threshold
    sens = float(np.mean(called[yt])) if yt.any() else None
    spec = float(np.mean(~called[~yt])) if (~yt).any() else None
    return sens, spec


def classification_metrics(
    y: np.ndarray,
    p: np.ndarray,
    classes: Sequence[str],
    clusters: np.ndarray,
    thresholds: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_COUNT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Per-class, macro and micro AUROC/AUPRC with 95% patient-bootstrap CIs.

    All classes share the same resamples (a paired bootstrap), so the macro average gets a CI
    too: its value in each resample is the mean over the eligible classes of that resample.

    Args:
        y: ``(N, C)`` labels, 1 / 0 / NaN (not annotated).
        p: ``(N, C)`` probabilities in the order of ``classes``.
        classes: the model's class names.
        clusters: ``(N,)`` cluster of each row, from :func:`cxrad.evaluate.bootstrap.cluster_ids`.
        thresholds: ``{class: threshold}`` picked on validation; 0.5 where a class is missing.
        n_boot: number of bootstrap resamples (0 = point estimates only).
        seed: seeds the resamples.
        min_count: fewest annotated positives and negatives for a class to get a number.
        progress: called as ``progress(done, total)`` once per class.

    Returns:
        ``{"per_class": [...], "macro": {...}, "micro": {...}, "n_boot", "seed", "min_count"}``.

    Example:
        >>> m = classification_metrics(y, p, ["NORMAL", "PNEUMONIA"], np.arange(len(y)))
        >>> m["per_class"][1]["auroc"], m["per_class"][1]["auroc_ci"]
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.shape[1] != len(classes):
        raise ValueError(
            f"labels {y.shape}, probabilities {p.shape} and {len(classes)} classes differ"
        )
    clusters = np.asarray(clusters, dtype=np.int64)
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    counts = Resamples(n_clusters, n_boot, seed)
    tasks: dict[tuple[str, str], tuple[str, np.ndarray, np.ndarray, np.ndarray]] = {}
    thresholds = dict(thresholds or {})
    per_class: list[dict[str, Any]] = []
    boot_auc: dict[str, np.ndarray] = {}
    boot_ap: dict[str, np.ndarray] = {}
    for j, name in enumerate(classes):
        yj, pj = y[:, j], p[:, j]
        m = ~np.isnan(yj)
        n_pos = int(np.sum(yj[m] == 1))
        n_neg = int(m.sum()) - n_pos
        thr = float(thresholds.get(name, 0.5))
        sens, spec = sens_spec(yj, pj, thr)
        row: dict[str, Any] = {
            "class": name,
            "n": int(m.sum()),
            "n_pos": n_pos,
            "n_neg": n_neg,
            "n_unlabelled": int((~m).sum()),
            "prevalence": float(n_pos / m.sum()) if m.any() else None,
            "status": eligibility(n_pos, n_neg, min_count),
            "auroc": None,
            "auroc_ci": None,
            "auprc": None,
            "auprc_ci": None,
            "threshold": thr,
            "threshold_from": "validation" if name in thresholds else "default 0.5",
            "sensitivity": sens,
            "specificity": spec,
        }
        if row["status"] == "ok":
            ya, pa, ca = yj[m], pj[m], clusters[m]
            row["auroc"] = float(roc_auc_score(ya, pa))
            row["auprc"] = float(average_precision_score(ya, pa))
            tasks[(name, "auroc")] = ("auroc", pa, ya, ca)
            tasks[(name, "auprc")] = ("auprc", pa, ya, ca)
        per_class.append(row)
        if progress is not None:
            progress(j + 1, len(classes) + 1)
    ok = [r for r in per_class if r["status"] == "ok"]
    micro, micro_rows = _micro(y, p, classes, clusters, [r["class"] for r in ok])
    if micro_rows is not None:
        tasks[("<micro>", "auroc")] = ("auroc", *micro_rows)
        tasks[("<micro>", "auprc")] = ("auprc", *micro_rows)
    boot = bootstrap_metrics(tasks, counts) if n_boot and tasks else {}
    for row in ok:
        if boot:
            boot_auc[row["class"]] = boot[(row["class"], "auroc")]
            boot_ap[row["class"]] = boot[(row["class"], "auprc")]
            row["auroc_ci"] = percentile_ci(boot_auc[row["class"]])
            row["auprc_ci"] = percentile_ci(boot_ap[row["class"]])
    if boot and micro_rows is not None:
        micro["auroc_ci"] = percentile_ci(boot[("<micro>", "auroc")])
        micro["auprc_ci"] = percentile_ci(boot[("<micro>", "auprc")])
    macro = _macro(ok, boot_auc, boot_ap, n_boot)
    if progress is not None:
        progress(len(classes) + 1, len(classes) + 1)
    return {
        "per_class": per_class,
        "macro": macro,
        "micro": micro,
        "n_boot": n_boot,
        "seed": seed,
        "min_count": min_count,
        "excluded_classes": {r["class"]: r["status"] for r in per_class if r["status"] != "ok"},
    }


def _macro(
    ok: list[dict[str, Any]],
    boot_auc: dict[str, np.ndarray],
    boot_ap: dict[str, np.ndarray],
    n_boot: int,
) -> dict[str, Any]:
    names = [r["class"] for r in ok]
    out: dict[str, Any] = {"classes": names, "auroc": None, "auroc_ci": None, "auprc": None}
    out["auprc_ci"] = None
    if not ok:
        return out
    out["auroc"] = float(np.mean([r["auroc"] for r in ok]))
    out["auprc"] = float(np.mean([r["auprc"] for r in ok]))
    if n_boot:
        with warnings.catch_warnings():  # a resample may lack a class: mean of empty slice
            warnings.simplefilter("ignore", RuntimeWarning)
            out["auroc_ci"] = percentile_ci(np.nanmean(np.stack([boot_auc[c] for c in names]), 0))
            out["auprc_ci"] = percentile_ci(np.nanmean(np.stack([boot_ap[c] for c in names]), 0))
    return out


def _micro(
    y: np.ndarray,
    p: np.ndarray,
    classes: Sequence[str],
    clusters: np.ndarray,
    names: list[str],
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Pool every annotated (image, class) pair of the eligible classes into one problem.

    Returns the point estimates and the pooled ``(scores, y, clusters)`` for the bootstrap.
    """
    out: dict[str, Any] = {"classes": names, "auroc": None, "auroc_ci": None, "auprc": None}
    out["auprc_ci"] = None
    out["n_pairs"] = 0
    if not names:
        return out, None
    idx = [list(classes).index(c) for c in names]
    ys, ps = y[:, idx], p[:, idx]
    m = ~np.isnan(ys)
    rows = np.nonzero(m)[0]
    ya, pa, ca = ys[m], ps[m], clusters[rows]
    out["n_pairs"] = len(ya)
    out["auroc"] = float(roc_auc_score(ya, pa))
    out["auprc"] = float(average_precision_score(ya, pa))
    return out, (pa, ya, ca)


def format_ci(value: float | None, ci: Sequence[float] | None, status: str = "ok") -> str:
    """``"0.873 (0.851–0.894)"``, or the reason when there is no number."""
    if value is None:
        return status if status != "ok" else "n/a"
    if not ci:
        return f"{value:.3f}"
    return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"
