"""Stage 7, train: losses for sparse multi-source labels, and the like-for-like softmax loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pos_weight_from_labels(
    labels: np.ndarray, clip: tuple[float, float] = (1.0, 50.0)
) -> np.ndarray:
    """Per-class BCE positive weight ``neg / pos`` over annotated entries, clipped.

    Rare findings (a few positives among thousands of negatives) would otherwise be drowned by
    the negatives. The clip keeps a class with a handful of positives from dominating the loss,
    and never down-weights positives below 1.

    Args:
        labels: ``(N, C)`` with 1, 0 and NaN (unannotated, ignored).
        clip: ``(low, high)`` bounds of the weight.
    """
    y = np.asarray(labels, dtype=np.float64)
    pos = (y == 1).sum(axis=0)
    neg = (y == 0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(pos > 0, neg / np.maximum(pos, 1), clip[1])
    return np.clip(w, *clip).astype(np.float32)


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy over annotated entries only: NaN targets contribute nothing.

    Each source labels only some classes (the pediatric set says nothing about effusion). Treating
    those as negatives would teach the model false negatives; the NaN entries are masked out with
    ``torch.where`` so their logits get exactly zero gradient. The mean is over annotated entries.

    Args:
        logits: ``(B, C)``.
        targets: ``(B, C)`` with 1, 0 or NaN.
        pos_weight: ``(C,)`` weight of positive examples, or None.
    """
    mask = ~torch.isnan(targets)
    y = torch.where(mask, targets, torch.zeros_like(targets))
    loss = F.binary_cross_entropy_with_logits(
        logits.float(), y.float(), pos_weight=pos_weight, reduction="none"
    )
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    return loss.sum() / mask.sum().clamp(min=1)


def single_label_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The original project's softmax cross-entropy, over rows with exactly one positive.

    Rows with zero or several positives have no single correct class and are skipped (the
    loaders already drop them from training; this also guards validation batches).
    """
    pos = torch.nan_to_num(targets, nan=0.0) == 1
    rows = pos.sum(dim=1) == 1
    if not bool(rows.any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits[rows].float(), pos[rows].float().argmax(dim=1))
