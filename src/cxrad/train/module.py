"""Stage 7, train: the LightningModule around a pure ``Classifier`` (losses, augmentation, AUROC).

The network itself stays a plain ``nn.Module`` from :mod:`cxrad.models`; this wrapper adds only
what training needs, so prediction never imports Lightning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from cxrad.data.augment import AugmentConfig, RadiographAugment
from cxrad.models import Classifier, probabilities
from cxrad.train.domain import DomainAdversary, logits_and_features
from cxrad.train.losses import masked_bce_with_logits, single_label_cross_entropy
from cxrad.train.metrics import macro_auroc, per_class_auroc

logger = logging.getLogger(__name__)

LOSSES = ("bce", "softmax")


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """``uint8`` images to float32 in [0, 1]; float input passes through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class CxrModule(pl.LightningModule):
    """Trains a :class:`~cxrad.models.Classifier` with masked BCE (or softmax) and AdamW + OneCycle.

    Args:
        model: the pure network with its input normalisation.
        classes: its output classes, in order.
        loss: ``"bce"`` (multi-label, NaN-masked) or ``"softmax"`` (single-label rows only).
        pos_weight: ``(C,)`` BCE positive weights, or None.
        lr: peak learning rate of the one-cycle schedule.
        weight_decay: AdamW decoupled weight decay.
        augment: augmentation ranges; None disables augmentation.
        seed: keys the augmentation generator.
        adversary: a training-only source head (``--dg adversarial``); train batches then carry
            source codes. It sits beside ``model``, never in it, so the saved run is unchanged.
    """

    def __init__(
        self,
        model: Classifier,
        classes: Sequence[str],
        loss: str = "bce",
        pos_weight: np.ndarray | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        adversary: DomainAdversary | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.model = model
        self.classes = list(classes)
        self.loss_name = loss
        pw = torch.ones(len(classes)) if pos_weight is None else torch.as_tensor(pos_weight)
        self.register_buffer("pos_weight", pw.float(), persistent=False)
        self.lr = lr
        self.weight_decay = weight_decay
        self.augment = RadiographAugment(augment, seed=seed) if augment is not None else None
        self.adversary = adversary
        self.activation = "softmax" if loss == "softmax" else "sigmoid"
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self.val_auroc: dict[str, float | None] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Loaders may send uint8 images (4x fewer bytes to copy); scale them here, on the device.
        x, *rest = batch
        return (to_unit_float(x), *rest)

    def compute_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "softmax":
            return single_label_cross_entropy(logits, y)
        return masked_bce_with_logits(logits, y, self.pos_weight)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, *domains = batch
        if self.augment is not None:
            # The batch is already on the device: augment it there, keyed on its position.
            x = self.augment(x, epoch=self.current_epoch, step=batch_idx, rank=self.global_rank)
        if self.adversary is None:
            loss = self.compute_loss(self.model(x), y)
        else:
            logits, features = logits_and_features(self.model, x, self.adversary.tap)
            loss = self.compute_loss(logits, y)
            progress = self.global_step / max(int(self.trainer.estimated_stepping_batches), 1)
            d_loss = self.adversary.loss(features, domains[0], progress)
            self.log("train_domain_loss", d_loss, on_step=True, on_epoch=True, batch_size=len(x))
        # train_loss stays the classification loss, comparable with runs without a source head.
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss if self.adversary is None else loss + d_loss

    def on_validation_epoch_start(self) -> None:
        self._val_probs, self._val_labels = [], []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log(
            "val_loss",
            self.compute_loss(logits, y),
            on_epoch=True,
            sync_dist=True,
            batch_size=len(x),
        )
        probs = probabilities(logits.float(), {"activation": self.activation})
        self._val_probs.append(probs.detach())
        self._val_labels.append(y.detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs)
        labels = torch.cat(self._val_labels)
        if self.trainer.world_size > 1:
            probs = self.all_gather(probs).flatten(0, 1)
            labels = self.all_gather(labels).flatten(0, 1)
        self.val_auroc = per_class_auroc(
            probs.float().cpu().numpy(), labels.float().cpu().numpy(), self.classes
        )
        self.log("val_macro_auroc", macro_auroc(self.val_auroc), prog_bar=True, sync_dist=False)

    def configure_optimizers(self) -> Any:
        # AdamW + linear warm-up then cosine decay (one-cycle shape): robust from scratch. The
        # length is read from this trainer, not restored from a checkpoint, so a run resumed with
        # more epochs stretches its schedule instead of failing.
        params = [*self.model.parameters()]
        if self.adversary is not None:
            params += self.adversary.parameters()
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Dropout draws from the global RNG: carry its state so a resumed run continues exactly.
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["cxrad_rng"] = rng

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("cxrad_rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        if (
            "cuda" in rng
            and torch.cuda.is_available()
            and len(rng["cuda"]) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(rng["cuda"])


def warmup_cosine(total: int, warmup: float = 0.1, start: float = 0.1, end: float = 0.01) -> Any:
    """LR factor per step: linear ``start -> 1`` over ``warmup`` of the steps, then cosine to ``end``.

    A plain function (not a callable object), so ``LambdaLR`` does not store it in checkpoints.
    """
    n_warm = max(1, round(warmup * total))

    def factor(step: int) -> float:
        if step < n_warm:
            return start + (1.0 - start) * step / n_warm
        p = min(1.0, (step - n_warm) / max(1, total - n_warm))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * p))

    return factor
