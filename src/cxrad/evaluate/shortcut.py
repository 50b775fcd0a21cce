"""Stage 8, evaluate: the shortcut audit, does the model recognise the source instead of the disease?

In these collections class and source are confounded (all TB images come from TBX11K, almost
all children from one hospital). Two checks make that visible:

1. a linear probe: can the source dataset be predicted from the model's features alone? It is
   cross-validated with whole patients / duplicate groups held out, so it cannot memorise;
2. per-class AUROC *within* one source, wherever a source has both positives and negatives,
   against the pooled AUROC. Pooled far above within-source means the ranking mostly
   separates sources, not findings.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrad.evaluate.metrics import MIN_COUNT, eligibility, point_auroc

logger = logging.getLogger(__name__)

GAP_FLAG = 0.1
"""Pooled minus within-source AUROC at or above this flags a class as source-driven."""

PROBE_FLAG = 0.2
"""Probe balanced accuracy this far above chance flags the features as source-identifying."""


def source_probe(
    features: np.ndarray | None,
    sources: Sequence[str],
    groups: np.ndarray,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated balanced accuracy of predicting the source from features.

    A standardised logistic regression, evaluated with ``GroupKFold`` so that all images of a
    patient (or duplicate group) fall in the same fold.

    Args:
        features: ``(N, F)`` from ``model.forward_features`` (None: only the source counts).
        sources: ``(N,)`` source name of each image.
        groups: ``(N,)`` cluster ids (patients merged with duplicate groups).
        n_splits: folds (reduced when there are fewer groups).
        seed: seeds the logistic regression's solver.

    Returns:
        ``balanced_accuracy`` vs ``chance`` (1 / number of sources), the confusion matrix and
        a ``status``; ``"n/a: ..."`` when fewer than two sources are present.
    """
    src = np.asarray(sources, dtype=object)
    names, y = np.unique(src, return_inverse=True)
    counts = {str(n): int(np.sum(y == i)) for i, n in enumerate(names)}
    out: dict[str, Any] = {"sources": counts, "n": len(y)}
    n_groups = len(np.unique(groups))
    if len(names) < 2:
        out["status"] = f"n/a: only one source ({names[0] if len(names) else 'none'})"
        return out
    if features is None:
        out["status"] = "n/a: no features were computed"
        return out
    k = min(n_splits, n_groups)
    if k < 2:
        out["status"] = "n/a: fewer than two patient groups"
        return out
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed),
    )
    x = np.nan_to_num(np.asarray(features, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence / single-class folds on tiny sets
        pred = cross_val_predict(clf, x, y, groups=groups, cv=GroupKFold(n_splits=k))
    bal = float(balanced_accuracy_score(y, pred))
    chance = 1.0 / len(names)
    out.update(
        status="ok",
        folds=k,
        balanced_accuracy=bal,
        accuracy=float(np.mean(pred == y)),
        chance=chance,
        majority_accuracy=float(max(counts.values()) / len(y)),
        confusion=confusion_matrix(y, pred, labels=list(range(len(names)))).tolist(),
        labels=[str(n) for n in names],
        flag=bool(bal - chance >= PROBE_FLAG),
    )
    return out


def site_labels(df: Any) -> np.ndarray:
    """``"<source>/<site>"`` where the manifest knows the site (a sub-source), else ``"<source>"``.

    The Radiography COVID and Normal folders gather films from BIMCV, RSNA, Kermany, SIRM ...;
    a probe over these finer labels asks whether the model can tell those sites apart too.
    """
    src = df["source"].astype("string").fillna("<unknown>").to_numpy(dtype=object)
    if "site" not in df.columns:
        return src
    site = df["site"].astype("string")
    known = site.notna().to_numpy()
    out = src.copy()
    out[known] = src[known] + "/" + site[known].to_numpy(dtype=object)
    return out


def site_probe(
    features: np.ndarray | None, df: Any, groups: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """:func:`source_probe` over :func:`site_labels`; ``"n/a: ..."`` when no row has a site."""
    if "site" not in df.columns or not df["site"].notna().any():
        return {"status": "n/a: the manifest has no site column or no site values", "n": len(df)}
    return source_probe(features, site_labels(df), groups, seed=seed)


def within_source_auroc(
    y: np.ndarray,
    p: np.ndarray,
    classes: Sequence[str],
    sources: Sequence[str],
    min_count: int = MIN_COUNT,
    gap_flag: float = GAP_FLAG,
) -> list[dict[str, Any]]:
    """Per class: pooled AUROC, AUROC inside each source that has both classes, and the gap.

    The within-source summary is the mean over eligible sources weighted by their annotated
    images. Classes whose positives all come from sources without negatives cannot be checked,
    and say so with where the positives come from.
    """
    src = np.asarray(sources, dtype=object)
    names = [str(s) for s in np.unique(src)]
    out = []
    for j, name in enumerate(classes):
        yj, pj = y[:, j], p[:, j]
        m = ~np.isnan(yj)
        n_pos = int(np.sum(yj[m] == 1))
        row: dict[str, Any] = {
            "class": name,
            "pooled": point_auroc(yj, pj, min_count),
            "pooled_status": eligibility(n_pos, int(m.sum()) - n_pos, min_count),
            "by_source": {},
            "positives_by_source": {},
        }
        weighted, weights = [], []
        for s in names:
            ms = m & (src == s)
            sp = int(np.sum(yj[ms] == 1))
            sn = int(ms.sum()) - sp
            if sp:
                row["positives_by_source"][s] = sp
            if sp + sn == 0:
                continue
            auc = point_auroc(yj[src == s], pj[src == s], min_count)
            row["by_source"][s] = {"auroc": auc, "n_pos": sp, "n_neg": sn}
            if auc is not None:
                weighted.append(auc * (sp + sn))
                weights.append(sp + sn)
        row["within"] = float(sum(weighted) / sum(weights)) if weights else None
        row["gap"] = (
            float(row["pooled"] - row["within"])
            if row["pooled"] is not None and row["within"] is not None
            else None
        )
        row["flag"] = bool(row["gap"] is not None and row["gap"] >= gap_flag)
        row["note"] = _note(row, min_count)
        out.append(row)
    return out


def _note(row: dict[str, Any], min_count: int) -> str:
    if row["pooled"] is None:
        return row["pooled_status"]
    if row["within"] is None:
        where = ", ".join(f"{s} ({n})" for s, n in row["positives_by_source"].items())
        return (
            f"cannot be checked: no source has >= {min_count} positives and negatives; "
            f"positives come from {where}, so pooled AUROC may measure the source"
        )
    if row["flag"]:
        return f"pooled exceeds within-source AUROC by {row['gap']:.2f}: likely source shortcut"
    return "ok"


def audit_verdict(probe: dict[str, Any], within: list[dict[str, Any]]) -> dict[str, Any]:
    """A plain-language verdict combining the probe and the within-source gaps."""
    flagged = [r["class"] for r in within if r["flag"]]
    unchecked = [r["class"] for r in within if r["pooled"] is not None and r["within"] is None]
    reasons = []
    if probe.get("status") == "ok" and probe["flag"]:
        reasons.append(
            f"the source is predictable from the model's features (balanced accuracy "
            f"{probe['balanced_accuracy']:.2f} vs chance {probe['chance']:.2f})"
        )
    if flagged:
        reasons.append(
            f"pooled AUROC exceeds within-source AUROC by >= {GAP_FLAG} for {', '.join(flagged)}"
        )
    if reasons:
        text = (
            "The model may have learned the source, not only the disease: "
            + "; ".join(reasons)
            + "."
        )
    elif probe.get("status") != "ok":
        text = f"Source probe not possible ({probe.get('status')}); no within-source gaps flagged."
    else:
        text = "No sign of a source shortcut: the probe is near chance and within-source AUROCs match pooled."
    if unchecked:
        text += (
            f" Caveat: {', '.join(unchecked)} cannot be checked within a single source (every source"
            " has only positives or only negatives), so their AUROC may measure the source."
        )
    return {
        "shortcut_suspected": bool(reasons),
        "flagged_classes": flagged,
        "unchecked_classes": unchecked,
        "text": text,
    }
