"""Stage 5, data: radiograph augmentation, batch-wise on the device, with its own seeded RNG.

Why each augmentation, and why not others:

- **Small rotation (±8°)**: patients are never perfectly square to the detector; a few degrees
  of tilt is normal, tens of degrees is not a chest film.
- **Scale and translation (±10%)**: distance to the detector, collimation and letterboxing move
  and resize the thorax from one site to the next.
- **Brightness, contrast, gamma**: exposure, detector type and each vendor's look-up table change
  the grey levels; the model should read anatomy, not a site's window settings (which also
  blunts the source shortcut described in ``../shared/data/README.md``).
- **Light Gaussian noise (off by default)**: quantum mottle of low-dose films.
- **The ``strong`` preset** widens every range (±10°, ±15% zoom, ±0.15 brightness, ±30% contrast,
  gamma 1/1.4..1.4, noise 0.02) for data whose test images come from another site or period than
  the training images (the Kaggle pediatric official test folder is one): it trades a little
  in-distribution fit for invariance to how a film was exposed and processed.
- **No horizontal flip by default**: anatomy is not symmetric (heart on the left, the liver
  lifts the right hemidiaphragm). A flipped film is dextrocardia / situs inversus, and training
  on flips would teach the model that is normal. ``hflip=True`` exists for experiments only.

Randomness comes from a ``torch.Generator`` keyed on ``(seed, epoch, step, rank)``, never from
global reseeding, so an epoch's augmentation is the same whether or not the run was resumed.
Geometric parameters are drawn on the CPU (a few numbers per image), so they do not depend on
the device; the warp runs where the batch is (``affine_grid`` + ``grid_sample``), which is fast
on 2 CPU cores and on GPUs alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cxrad.data.dataset import mix_seed
from cxrad.data.site_augment import site_augment
from cxrad.errors import TrainError
from cxrad.options import suggest


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of each random change; 0 disables it.

    Attributes:
        rotate_deg: max absolute rotation in degrees.
        scale: max relative zoom in or out (0.1 = 90%..110%).
        translate: max shift as a fraction of the image side.
        brightness: max added offset (images are in [0, 1]).
        contrast: max relative change of contrast around each image's mean.
        gamma: gamma drawn log-uniformly in ``[1/(1+gamma), 1+gamma]``.
        noise_std: standard deviation of added Gaussian noise (0 = off).
        hflip: allow horizontal flips (off: anatomy is not symmetric).
        site: also apply :func:`cxrad.data.site_augment.site_augment` (photometric changes
            aimed at site shift), after the others.
    """

    rotate_deg: float = 8.0
    scale: float = 0.10
    translate: float = 0.10
    brightness: float = 0.08
    contrast: float = 0.15
    gamma: float = 0.20
    noise_std: float = 0.0
    hflip: bool = False
    site: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "default": AugmentConfig(),
    "strong": AugmentConfig(
        rotate_deg=10.0,
        scale=0.15,
        translate=0.10,
        brightness=0.15,
        contrast=0.30,
        gamma=0.40,
        noise_std=0.02,
    ),
    "none": AugmentConfig(
        rotate_deg=0.0, scale=0.0, translate=0.0, brightness=0.0, contrast=0.0, gamma=0.0
    ),
    "site": AugmentConfig(site=True),
}
"""Named augmentation settings for ``cxrad train --augment``."""


def augment_preset(name: str) -> AugmentConfig:
    """The :data:`AUGMENT_PRESETS` entry ``name``; unknown names raise with "did you mean".

    Raises:
        TrainError: no preset has that name.
    """
    if name not in AUGMENT_PRESETS:
        raise TrainError(
            f"unknown augmentation preset {name!r}; known: {', '.join(AUGMENT_PRESETS)}."
            f"{suggest(name, AUGMENT_PRESETS)}"
        )
    return AUGMENT_PRESETS[name]


class RadiographAugment:
    """Apply :class:`AugmentConfig` to a batch ``(B, 1, S, S)`` in [0, 1].

    Example:
        >>> aug = RadiographAugment(AugmentConfig(), seed=0)
        >>> x2 = aug(x, epoch=3, step=10)   # same inputs and keys -> same output
    """

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0) -> None:
        self.config = config or AugmentConfig()
        self.seed = seed

    def generator(self, epoch: int, step: int, rank: int = 0) -> torch.Generator:
        """The CPU generator for one batch, keyed on the seed and the batch's position."""
        return torch.Generator().manual_seed(mix_seed(self.seed, epoch, step, rank))

    def params(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw every per-image parameter for ``n`` images (on the CPU)."""
        c = self.config

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=g)

        lg = math.log1p(c.gamma)
        return {
            "angle": u(-c.rotate_deg, c.rotate_deg) * math.pi / 180.0,
            "scale": u(1.0 - c.scale, 1.0 + c.scale),
            "tx": u(-c.translate, c.translate) * 2.0,  # normalised coordinates span 2
            "ty": u(-c.translate, c.translate) * 2.0,
            "flip": (torch.rand(n, generator=g) < 0.5)
            if c.hflip
            else torch.zeros(n, dtype=torch.bool),
            "brightness": u(-c.brightness, c.brightness),
            "contrast": u(1.0 - c.contrast, 1.0 + c.contrast),
            "gamma": torch.exp(u(-lg, lg)),
            "noise_seed": torch.randint(0, 2**62, (1,), generator=g),
        }

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, epoch: int = 0, step: int = 0, rank: int = 0
    ) -> torch.Tensor:
        n = x.shape[0]
        p = self.params(n, self.generator(epoch, step, rank))
        dtype = x.dtype
        x = x.float()
        # affine_grid maps output coordinates to input ones: zooming in by s samples at p / s.
        cos, sin = torch.cos(p["angle"]) / p["scale"], torch.sin(p["angle"]) / p["scale"]
        sx = torch.where(p["flip"], -1.0, 1.0)
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin, p["tx"]], dim=1),
                torch.stack([sin * sx, cos, p["ty"]], dim=1),
            ],
            dim=1,
        ).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Zeros outside the film: the same black as letterbox padding.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        def per_image(t: torch.Tensor) -> torch.Tensor:
            return t.to(x.device).view(n, 1, 1, 1)

        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * per_image(p["contrast"]) + mean + per_image(p["brightness"])
        x = x.clamp_(0.0, 1.0).pow_(per_image(p["gamma"]))
        if self.config.noise_std > 0:
            gn = torch.Generator(device=x.device).manual_seed(int(p["noise_seed"]))
            noise = torch.randn(x.shape, generator=gn, device=x.device, dtype=x.dtype)
            x = (x + self.config.noise_std * noise).clamp_(0.0, 1.0)
        if self.config.site:
            x = site_augment(x, self.generator(epoch, step, rank + 0x517E))
        return x.to(dtype)
