"""Stage 8, evaluate: the original project's view, top-1 accuracy on single-label images.

The original project reported one accuracy over its 17 classes. To compare with it honestly,
this view keeps only images with exactly one annotated positive among the model's classes,
takes the arg-max class as the prediction, and puts two baselines beside it on the same
images: always predicting the majority class, and guessing at random with the training
class frequencies. A model that does not beat these has learned nothing useful.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from cxrad.evaluate.bootstrap import Resamples, count_blocks, percentile_ci

logger = logging.getLogger(__name__)


def single_label_targets(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows carry exactly one positive (others 0 or NaN), and that positive's column.

    Returns:
        ``(mask, target)``: ``(N,)`` bool and ``(N,)`` int (``-1`` where the mask is False).
    """
    pos = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0) == 1
    mask = pos.sum(axis=1) == 1
    target = np.where(mask, pos.argmax(axis=1), -1)
    return mask, target


def class_frequencies(target: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of single-label rows in each class (zeros if there are none)."""
    counts = np.bincount(target[target >= 0], minlength=n_classes).astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


def top1_view(
    y: np.ndarray,
    p: np.ndarray,
    classes: Sequence[str],
    y_train: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    counts: np.ndarray | Resamples | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy, balanced accuracy, confusion matrix and the two baselines.

    Args:
        y: ``(N, C)`` labels of the evaluated images (1 / 0 / NaN).
        p: ``(N, C)`` probabilities.
        classes: the model's class names.
        y_train: labels of the TRAIN split of the same work folder, for the baselines' class
            frequencies. None (or no single-label train rows) falls back to the evaluated set.
        clusters: ``(N,)`` cluster per row, for bootstrap CIs (optional).
        counts: ``(B, K)`` bootstrap cluster counts or a :class:`Resamples` (optional).

    Returns:
        A JSON-able dict; ``n == 0`` when no image is single-label.
    """
    c = len(classes)
    mask, target = single_label_targets(y)
    out: dict[str, Any] = {"n": int(mask.sum()), "classes": list(classes)}
    if not mask.any():
        out["status"] = "n/a: no image has exactly one positive among the model's classes"
        return out
    t = target[mask]
    pred = np.asarray(p, dtype=np.float64)[mask].argmax(axis=1)
    present = sorted(set(t.tolist()))
    out["status"] = "ok"
    out["accuracy"] = float(np.mean(pred == t))
    out["balanced_accuracy"] = _balanced(t, pred)
    out["classes_in_balanced_accuracy"] = [classes[i] for i in present]
    out["confusion"] = confusion_matrix(t, pred, labels=list(range(c))).tolist()
    out["n_per_class"] = {classes[i]: int(np.sum(t == i)) for i in range(c)}

    freq_eval = class_frequencies(t, c)
    freq_train, basis = freq_eval, "evaluated set (no single-label train images)"
    if y_train is not None:
        m_tr, t_tr = single_label_targets(y_train)
        if m_tr.any():
            freq_train, basis = class_frequencies(t_tr[m_tr], c), "train split"
    major = int(np.argmax(freq_train))
    out["majority"] = {
        "class": classes[major],
        "from": basis,
        "accuracy": float(np.mean(t == major)),
        "balanced_accuracy": _balanced(t, np.full_like(t, major)),
    }
    # Guessing class k with probability q_k is right with probability q_{true class}.
    out["prior"] = {
        "from": basis,
        "accuracy": float(np.sum(freq_train * freq_eval)),
        "balanced_accuracy": float(np.mean(freq_train[present])),
    }
    if clusters is not None and counts is not None and len(counts):
        acc_ci, bal_ci = _bootstrap(t, pred, np.asarray(clusters)[mask], counts, c)
        out["accuracy_ci"], out["balanced_accuracy_ci"] = acc_ci, bal_ci
    return out


def _balanced(t: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``t`` (sklearn's definition, without its warning)."""
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected here
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(t, pred))


def _bootstrap(
    t: np.ndarray,
    pred: np.ndarray,
    clusters: np.ndarray,
    counts: np.ndarray | Resamples,
    c: int,
) -> tuple[list[float] | None, list[float] | None]:
    """Cluster-bootstrap CIs of accuracy and balanced accuracy, by weighted sums per class.

    Rows are summed per (cluster, class) once; each block of resamples then costs
    ``O(b × clusters × classes)``, never a ``(B, n)`` array.
    """
    k = counts.n_clusters if isinstance(counts, Resamples) else np.asarray(counts).shape[1]
    hit = (pred == t).astype(np.float64)
    n_kc = coo_matrix((np.ones(len(t)), (clusters, t)), shape=(k, c)).tocsr()
    hit_kc = coo_matrix((hit, (clusters, t)), shape=(k, c)).tocsr()
    parts_n, parts_hit = [], []
    for block in count_blocks(counts):
        w = block.astype(np.float64)
        parts_n.append(np.asarray((n_kc.T @ w.T).T))
        parts_hit.append(np.asarray((hit_kc.T @ w.T).T))
    per_class_n, per_class_hit = np.concatenate(parts_n), np.concatenate(parts_hit)
    acc = per_class_hit.sum(1) / np.maximum(per_class_n.sum(1), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(per_class_n > 0, per_class_hit / per_class_n, np.nan)
        present = per_class_n > 0
        bal = np.nansum(recall, axis=1) / np.maximum(present.sum(1), 1)
    return percentile_ci(acc), percentile_ci(bal)
