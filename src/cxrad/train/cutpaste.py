"""Stage 7, train: CutPaste and CutPaste-scar, the synthetic anomalies of one-class training.

Li et al. (CVPR 2021): cut a rectangle from the image and paste it elsewhere (``cutpaste``), or
paste a thin, long one (``scar``); a network that learns to tell these from untouched images
learns features in which local irregularities stand out, with no real anomaly ever shown.
Sizes follow the paper's (for 256 px images: area 2-15 %, aspect 0.3-3.3; scars 2-16 px wide,
10-25 px long), scaled to the image side; the pasted patch gets a small intensity jitter.
Every draw comes from the caller's ``torch.Generator``, never the global RNG.
"""

from __future__ import annotations

import math

import torch

AS_IS, CUTPASTE, SCAR = 0, 1, 2


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _paste(img: torch.Tensor, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Copy an ``h x w`` patch of ``img`` (``(1, S, S)``) to another random place, jittered."""
    s = img.shape[-1]
    h, w = max(1, min(h, s - 1)), max(1, min(w, s - 1))

    def at(n: int) -> int:
        return int(torch.randint(0, s - n + 1, (1,), generator=g))

    y0, x0, y1, x1 = at(h), at(w), at(h), at(w)
    patch = img[:, y0 : y0 + h, x0 : x0 + w] * _u(g, 0.8, 1.2) + _u(g, -0.1, 0.1)
    out = img.clone()
    out[:, y1 : y1 + h, x1 : x1 + w] = patch.clamp(0.0, 1.0)
    return out


def cutpaste(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One image ``(1, S, S)`` in [0, 1] with a rectangle of itself pasted elsewhere."""
    s = img.shape[-1]
    area = _u(g, 0.02, 0.15) * s * s
    aspect = math.exp(_u(g, math.log(0.3), math.log(1 / 0.3)))
    return _paste(img, round(math.sqrt(area / aspect)), round(math.sqrt(area * aspect)), g)


def scar(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One image with a thin long patch of itself pasted elsewhere (horizontal or vertical)."""
    s = img.shape[-1]
    width = max(1, round(_u(g, 2, 16) * s / 256))
    length = max(2, round(_u(g, 10, 25) * s / 256))
    if float(torch.rand((), generator=g)) < 0.5:
        return _paste(img, width, length, g)
    return _paste(img, length, width, g)


def synthetic_anomalies(x: torch.Tensor, kinds: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply ``kinds[i]`` (:data:`AS_IS`, :data:`CUTPASTE` or :data:`SCAR`) to image ``i``."""
    out = []
    for img, k in zip(x, kinds.tolist(), strict=True):
        out.append(img if k == AS_IS else cutpaste(img, g) if k == CUTPASTE else scar(img, g))
    return torch.stack(out) if out else x


def local_opacity(
    img: torch.Tensor,
    g: torch.Generator,
    *,
    region: tuple[float, float] = (0.25, 0.75),
    sigma: tuple[float, float] = (0.05, 0.15),
    amplitude: tuple[float, float] = (0.15, 0.35),
) -> torch.Tensor:
    """Brighten a smooth Gaussian blob inside the central region of ``img`` ``(C, H, W)``.

    A stand-in for a local opacity (a consolidation, a mass) that CutPaste never makes: the
    centre is uniform in ``region`` (fractions of the side, the lung fields of a centred film),
    the blob's standard deviation is ``sigma`` of the side, and a pixel ``v`` becomes
    ``v + a * blob * (1 - v)`` (dark lung brightens most; nothing clips), ``a`` in ``amplitude``.
    """
    _, h, w = img.shape
    cy, cx = _u(g, *region) * (h - 1), _u(g, *region) * (w - 1)
    s = _u(g, *sigma) * min(h, w)
    a = _u(g, *amplitude)
    yy = torch.arange(h, dtype=img.dtype)[:, None]
    xx = torch.arange(w, dtype=img.dtype)[None, :]
    blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return (img + a * blob * (1 - img)).clamp(0, 1)


__all__ = ["AS_IS", "CUTPASTE", "SCAR", "cutpaste", "local_opacity", "scar", "synthetic_anomalies"]
