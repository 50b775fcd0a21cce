"""Stage 7, train: losses, positive weights and validation metrics against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss, roc_auc_score, roc_curve

from cxrad.train import (
    macro_auroc,
    masked_bce_with_logits,
    per_class_auroc,
    pos_weight_from_labels,
    single_label_cross_entropy,
    youden_thresholds,
)
from cxrad.train.module import warmup_cosine

NAN = float("nan")


def test_masked_bce_matches_sklearn_on_annotated_entries() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 1.5, -2.0], [0.0, 0.7, 1.1]])
    y = torch.tensor([[1.0, NAN, 0.0], [0.0, 1.0, NAN], [NAN, 0.0, 1.0]])
    got = masked_bce_with_logits(logits, y)
    m = ~torch.isnan(y)
    p = torch.sigmoid(logits)[m].numpy()
    ref = log_loss(y[m].numpy(), p, labels=[0, 1])  # mean over the 6 annotated entries
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_masked_bce_pos_weight_matches_torch_reference() -> None:
    logits = torch.tensor([[2.0, -1.0], [-0.3, 1.5], [0.4, 0.2]])
    y = torch.tensor([[1.0, NAN], [0.0, 1.0], [1.0, 0.0]])
    pw = torch.tensor([3.0, 0.5])
    got = masked_bce_with_logits(logits, y, pw)
    m = ~torch.isnan(y)
    full = F.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(y), pos_weight=pw, reduction="none"
    )
    assert float(got) == pytest.approx(float(full[m].mean()), rel=1e-6)
    # by hand for the first entry: pos_weight * -log(sigmoid(2))
    assert float(full[0, 0]) == pytest.approx(3.0 * -np.log(1 / (1 + np.exp(-2.0))), rel=1e-6)


def test_nan_labels_get_exactly_zero_gradient() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([[1.0, NAN, 0.0], [NAN, NAN, 1.0], [0.0, 1.0, NAN], [NAN, 0.0, 0.0]])
    masked_bce_with_logits(logits, y, torch.tensor([2.0, 1.0, 5.0])).backward()
    nan = torch.isnan(y)
    assert torch.all(logits.grad[nan] == 0)
    assert torch.all(logits.grad[~nan] != 0)
    # and the value ignores whatever the model says on NaN entries
    other = logits.detach().clone()
    other[nan] = 100.0
    assert torch.allclose(
        masked_bce_with_logits(other, y), masked_bce_with_logits(logits.detach(), y)
    )


def test_all_nan_batch_is_zero_not_nan() -> None:
    logits = torch.randn(2, 2, requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.full((2, 2), NAN))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(logits.grad == 0)


def test_pos_weight_is_neg_over_pos_clipped() -> None:
    y = np.array(
        [[1, 0, 1, NAN], [0, 0, 1, NAN], [0, 0, 1, 1], [0, 0, 0, 0], [NAN, 1, NAN, 0]], np.float32
    )
    # col0: 1 pos / 3 neg = 3; col1: 1 / 4 = 4; col2: 3 pos / 1 neg = 0.33 -> 1; col3: 1 / 2 = 2
    assert pos_weight_from_labels(y).tolist() == pytest.approx([3.0, 4.0, 1.0, 2.0])
    many = np.zeros((200, 2), np.float32)
    many[0, 0] = 1  # 1 pos / 199 neg -> clipped at 50; col1 has no positive -> the cap
    assert pos_weight_from_labels(many).tolist() == pytest.approx([50.0, 50.0])


def test_softmax_uses_only_single_label_rows() -> None:
    logits = torch.tensor([[2.0, 0.1, -1.0], [0.3, 0.2, 0.1], [1.0, 1.0, 1.0], [0.0, -1.0, 3.0]])
    y = torch.tensor([[1.0, 0.0, NAN], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [NAN, NAN, 1.0]])
    got = single_label_cross_entropy(logits, y)
    ref = F.cross_entropy(logits[[0, 3]], torch.tensor([0, 2]))
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    lg = logits.clone().requires_grad_(True)
    single_label_cross_entropy(lg, y).backward()
    assert torch.all(lg.grad[[1, 2]] == 0) and torch.any(lg.grad[[0, 3]] != 0)


def test_val_metrics_match_sklearn_and_youden() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (60, 3)).astype(np.float32)
    y[:10, 1] = np.nan
    y[:, 2] = 1  # no negatives: not scorable
    p = np.clip(y * 0.3 + rng.random((60, 3)) * 0.7, 0, 1)
    p[:10, 1] = 0.99  # unannotated rows must not count
    auc = per_class_auroc(p, y, ["A", "B", "C"])
    assert auc["A"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert auc["B"] == pytest.approx(roc_auc_score(y[10:, 1], p[10:, 1]))
    assert auc["C"] is None
    assert macro_auroc(auc) == pytest.approx((auc["A"] + auc["B"]) / 2)
    thr = youden_thresholds(p, y, ["A", "B", "C"])
    assert thr["C"] == 0.5
    ya, pa = y[:, 0], p[:, 0]
    j = lambda t: (pa[ya == 1] >= t).mean() - (pa[ya == 0] >= t).mean()  # noqa: E731
    best = max(j(t) for t in np.unique(pa))
    assert j(thr["A"]) == pytest.approx(best)


def test_youden_threshold_sits_mid_gap_and_keeps_the_val_operating_point() -> None:
    # Separable validation: every threshold in (0.2, 0.8] is perfect; the edge (0.8) would sit
    # against the positives, the logit midpoint of 0.2 and 0.8 is 0.5.
    y = np.array([[0.0], [0.0], [1.0], [1.0]])
    p = np.array([[0.1], [0.2], [0.8], [0.9]])
    assert youden_thresholds(p, y, ["A"])["A"] == pytest.approx(0.5)
    p2 = np.array([[0.01], [0.02], [0.98], [0.99]])  # symmetric in logit space
    assert youden_thresholds(p2, y, ["A"])["A"] == pytest.approx(0.5)
    p3 = np.array([[0.0], [0.0], [1.0], [1.0]])  # saturated scores stay finite
    assert youden_thresholds(p3, y, ["A"])["A"] == pytest.approx(0.5)
    # Random overlapping scores: the same sensitivity and specificity on val as the ROC point.
    rng = np.random.default_rng(1)
    for _ in range(20):
        yy = (rng.random(200) < 0.3).astype(float)
        pp = np.clip(yy * 0.3 + rng.random(200) * 0.7, 0, 1).round(3)  # ties included
        t = youden_thresholds(pp[:, None], yy[:, None], ["A"])["A"]
        fpr, tpr, thr = roc_curve(yy, pp, drop_intermediate=False)
        k = int(np.argmax(tpr - fpr))
        assert (pp[yy == 1] >= t).mean() == pytest.approx(tpr[k])
        assert (pp[yy == 0] >= t).mean() == pytest.approx(fpr[k])
        assert thr[k + 1] < t <= thr[k]


def test_warmup_cosine_schedule_shape() -> None:
    f = warmup_cosine(100)
    assert f(0) == pytest.approx(0.1) and f(10) == pytest.approx(1.0)  # 10% linear warm-up
    assert f(55) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down the cosine
    assert f(100) == pytest.approx(0.01) and f(150) == pytest.approx(0.01)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))
