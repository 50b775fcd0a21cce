"""Stage 5, data: photometric augmentation aimed at site shift (``cxrad train --augment site``).

A new hospital changes how a film *looks* long before it changes the anatomy: its detector and
look-up table (gamma, window), its post-processing (edge enhancement or smoothing), its dose
(noise), its archive (JPEG re-compression, lower resolution), and its habits at the edges
(collimation borders, lead "L"/"R" markers and text burnt into a corner). Each change below
imitates one of those, so the model cannot use them to recognise the source:

- **window**: a random grey window (stretches or compresses the range, like another LUT);
- **gamma**: log-uniform in ``[1/1.5, 1.5]``;
- **blur or sharpen**: Gaussian smoothing, or unsharp masking (vendors' edge enhancement);
- **noise**: Gaussian, std up to 0.03;
- **JPEG**: re-encoded at quality 30-90 (per image, with Pillow);
- **down-then-up**: resampled to 35-80% of the side and back;
- **border crop**: up to 8% cut from each edge, then resized back (collimation, borders);
- **marker**: a bright block (a lead marker or burnt-in text) pasted near a random corner.

Each is applied to a random subset of the batch (probability ``p``). Batch-wise torch ops,
except JPEG; every draw comes from the ``torch.Generator`` passed in, never a global RNG.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

P_EACH = 0.3
"""Probability that each change is applied to an image."""


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _pick(n: int, g: torch.Generator, p: float = P_EACH) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def _col(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.device, x.dtype).view(-1, 1, 1, 1)


def window(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random grey window: values between ``lo`` and ``hi`` map to a random output range."""
    n = len(x)
    lo, hi = _u(n, 0.0, 0.15, g), _u(n, 0.85, 1.0, g)
    olo, ohi = _u(n, 0.0, 0.1, g), _u(n, 0.9, 1.0, g)
    y = ((x - _col(lo, x)) / _col(hi - lo, x)).clamp(0, 1)
    return y * _col(ohi - olo, x) + _col(olo, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (pixels) per image."""
    r = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / _col(sigma, x).view(-1, 1)) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    n = x.shape[0]
    y = F.pad(x.transpose(0, 1), (r, r, 0, 0), mode="replicate")  # (1, N, H, W + 2r)
    y = F.conv2d(y, k.view(n, 1, 1, -1), groups=n)
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, k.view(n, 1, -1, 1), groups=n)
    return y.transpose(0, 1)


def blur_or_sharpen(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur (sigma 0.5-1.5 px) or unsharp-mask (amount 0.5-1.5) each image, half and half."""
    n = len(x)
    sigma = _u(n, 0.5, 1.5, g)
    sharpen = torch.rand(n, generator=g) < 0.5
    amount = _u(n, 0.5, 1.5, g)
    b = gaussian_blur(x, sigma)
    sharp = (x + _col(amount, x) * (x - b)).clamp(0, 1)
    return torch.where(_col(sharpen, x).bool(), sharp, b)


def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise, std 0.005-0.03 per image."""
    std = _u(len(x), 0.005, 0.03, g)
    e = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return (x + _col(std, x) * e).clamp(0, 1)


def jpeg(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Re-encode each image as JPEG at quality 30-90 (on the CPU, with Pillow)."""
    q = torch.randint(30, 91, (len(x),), generator=g).tolist()
    out = []
    for img, quality in zip(x.detach().float().cpu().numpy(), q, strict=True):
        buf = io.BytesIO()
        Image.fromarray(np.clip(img[0] * 255 + 0.5, 0, 255).astype(np.uint8)).save(
            buf, format="JPEG", quality=int(quality)
        )
        buf.seek(0)
        out.append(np.asarray(Image.open(buf), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(out)[:, None]).to(x.device, x.dtype)


def down_up(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Resample to a random 35-80% of the side and back (one factor per batch call)."""
    s = x.shape[-1]
    f = float(_u(1, 0.35, 0.8, g))
    small = F.interpolate(x, size=max(8, round(s * f)), mode="area")
    return F.interpolate(small, size=s, mode="bilinear", align_corners=False)


def border_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Cut up to 8% from each edge and resize back to the full side."""
    n, s = len(x), x.shape[-1]
    m = _u(4 * n, 0.0, 0.08, g).view(n, 4)  # left, right, top, bottom
    sx, sy = 1.0 - m[:, 0] - m[:, 1], 1.0 - m[:, 2] - m[:, 3]
    cx, cy = m[:, 0] - m[:, 1], m[:, 2] - m[:, 3]  # centre shift in normalised units
    z = torch.zeros(n)
    theta = torch.stack([torch.stack([sx, z, cx], 1), torch.stack([z, sy, cy], 1)], 1).to(
        x.device, x.dtype
    )
    grid = F.affine_grid(theta, [n, 1, s, s], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def marker(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Paste a bright block of 4-9% of the side near a random corner (a lead marker, text)."""
    n, s = len(x), x.shape[-1]
    out = x.clone()
    side = (_u(n, 0.04, 0.09, g) * s).long().clamp(min=2)
    corner = torch.randint(0, 4, (n,), generator=g)
    off = (_u(2 * n, 0.02, 0.15, g) * s).long().view(n, 2)
    level = _u(n, 0.8, 1.0, g)
    for i in range(n):
        k = int(side[i])
        r = int(off[i, 0]) if corner[i] < 2 else s - k - int(off[i, 0])
        c = int(off[i, 1]) if corner[i] % 2 == 0 else s - k - int(off[i, 1])
        out[i, :, r : r + k, c : c + k] = float(level[i])
    return out


STEPS = (window, blur_or_sharpen, noise, jpeg, down_up, border_crop, marker)
"""The changes, in the order they are applied (gamma sits inside :func:`site_augment`)."""


@torch.no_grad()
def site_augment(x: torch.Tensor, g: torch.Generator, p: float = P_EACH) -> torch.Tensor:
    """Apply each change of this module to a random subset (probability ``p``) of ``x``.

    Args:
        x: ``(B, 1, S, S)`` float in [0, 1].
        g: the CPU generator for this batch (e.g. keyed on seed, epoch, step).
        p: probability of each change per image.

    Example:
        >>> y = site_augment(x, torch.Generator().manual_seed(0))
    """
    n = len(x)
    gam = torch.exp(_u(n, -math.log(1.5), math.log(1.5), g))
    sel = _pick(n, g, p)
    x = torch.where(_col(sel, x).bool(), x.clamp(0, 1).pow(_col(gam, x)), x)
    for step in STEPS:
        sel = _pick(n, g, p)
        if sel.any():
            idx = torch.nonzero(sel).ravel().to(x.device)
            x = x.index_copy(0, idx, step(x[idx], g).to(x.dtype))
    return x.clamp(0, 1)


__all__ = ["P_EACH", "STEPS", "gaussian_blur", "site_augment"]
