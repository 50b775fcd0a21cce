"""Stage 5, data: a Dataset over manifest rows and the preprocessed cache, loaders, augmentation.

Augmentation runs batch-wise on the device (see :mod:`cxrad.data.augment`), so the loaders only
slice the memory-mapped cache.
"""

from __future__ import annotations

from cxrad.data.augment import AUGMENT_PRESETS, AugmentConfig, RadiographAugment, augment_preset
from cxrad.data.dataset import CachedDataset, EpochSampler, mix_seed
from cxrad.data.loaders import Loaders, make_dataloaders, single_label_mask, trainable_classes

__all__ = [
    "AUGMENT_PRESETS",
    "AugmentConfig",
    "CachedDataset",
    "EpochSampler",
    "Loaders",
    "RadiographAugment",
    "augment_preset",
    "make_dataloaders",
    "mix_seed",
    "single_label_mask",
    "trainable_classes",
]
