"""Stage 4, preprocess: intensity normalisation (``cxrad preprocess --normalise clahe|histeq``).

Every site has its own grey-level look (detector, look-up table, post-processing). Equalising
the histogram after the resize maps each film to a common intensity distribution, so the
model cannot read the site from the grey levels: ``histeq`` globally (scikit-image
``equalize_hist``), ``clahe`` locally with a clip limit (``equalize_adapthist``), which keeps
the contrast of small structures. Letterbox padding stays black: only the film is equalised.
"""

from __future__ import annotations

import numpy as np
from skimage import exposure

from cxrad.errors import PreprocessConfigError
from cxrad.options import suggest

NORMALISE = ("none", "clahe", "histeq")
"""Choices of :attr:`cxrad.preprocess.PreprocessConfig.normalise`."""

CLAHE_CLIP = 0.01
"""``equalize_adapthist`` clip limit (scikit-image's default)."""


def check_normalise(name: str) -> str:
    """``name`` if known.

    Raises:
        PreprocessConfigError: unknown name, with "did you mean".
    """
    if name not in NORMALISE:
        raise PreprocessConfigError(
            f"unknown normalisation {name!r}; expected one of {NORMALISE}.{suggest(name, NORMALISE)}"
        )
    return name


def normalise_image(img: np.ndarray, method: str) -> np.ndarray:
    """Equalise a square ``uint8`` image (``"none"`` returns it unchanged); padding stays 0."""
    check_normalise(method)
    if method == "none":
        return img
    content = img > 0
    if content.sum() < 16:
        return img
    if method == "histeq":
        out = exposure.equalize_hist(img, nbins=256, mask=content)
    else:
        out = exposure.equalize_adapthist(img, clip_limit=CLAHE_CLIP)
    res = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    res[~content] = 0
    return res


__all__ = ["CLAHE_CLIP", "NORMALISE", "check_normalise", "normalise_image"]
