"""Stage 8, evaluate: shortcut counterfactuals: AUROC with the lungs blanked, and with all else.

A model that reads the lungs should fall towards 0.5 when the lung fields are blanked, and
keep its AUROC when everything outside them is blanked. A class whose AUROC *survives* blanked
lungs is reading something else (markers, text, borders, the body habitus of one hospital):
it is marked as likely shortcut-driven, in words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxrad.evaluate.bootstrap import bootstrap_metric, percentile_ci
from cxrad.evaluate.metrics import MIN_COUNT, eligibility, point_auroc

WHERE = ("lungs", "outside")
"""Which region a counterfactual blanks: the lung fields, or everything outside them."""

SURVIVES_SHARE = 0.5
"""Blanked-lung AUROC keeps at least this share of the full image's lift over 0.5 ..."""
SURVIVES_LOWER = 0.55
"""... and its CI's lower end stays above this: then the class is flagged."""


def blank(images: np.ndarray, lungs: np.ndarray, where: str) -> np.ndarray:
    """Fill the chosen region of every ``uint8`` image with one grey: the region's mean over
    all the images.

    One value for every film removes texture, edges and brightness differences (what a model
    could read; a per-film mean would leak a bright lesion's brightness) but keeps a plausible
    grey, so the blanked film is not a new kind of image (black holes would be).

    Args:
        images: ``(N, S, S)`` uint8.
        lungs: ``(N, S, S)`` bool lung masks.
        where: ``"lungs"`` or ``"outside"``.
    """
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")
    region = lungs if where == "lungs" else ~lungs
    out = images.copy()
    if region.any():
        out[region] = np.uint8(round(float(images[region].mean())))
    return out


def _auroc_ci(
    p: np.ndarray, y: np.ndarray, clusters: np.ndarray, counts: np.ndarray
) -> dict[str, Any]:
    m = ~np.isnan(y)
    value = point_auroc(y, p)
    if value is None:
        return {"auroc": None, "ci": None}
    vals = bootstrap_metric("auroc", p[m], y[m].astype(np.int64), clusters[m], counts)
    return {"auroc": value, "ci": percentile_ci(vals)}


def verdict(full: float | None, lungs_blanked: dict[str, Any]) -> tuple[bool, str]:
    """Whether a class looks shortcut-driven, and the sentence that says why."""
    b, ci = lungs_blanked["auroc"], lungs_blanked["ci"]
    if full is None or b is None or ci is None:
        return False, "not scored"
    lift = full - 0.5
    if lift <= 0.05:
        return False, f"the model barely separates this class (AUROC {full:.3f}); nothing to test"
    kept = (b - 0.5) / lift
    if kept >= SURVIVES_SHARE and ci[0] > SURVIVES_LOWER:
        return True, (
            f"likely shortcut-driven: with the lung fields blanked the AUROC is still {b:.3f} "
            f"(95% CI {ci[0]:.3f}-{ci[1]:.3f}; {full:.3f} on the full film), so the model finds "
            "this class from something outside the lungs"
        )
    return False, (
        f"reads the lungs: blanking them takes the AUROC from {full:.3f} to {b:.3f} "
        f"(95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    )


def counterfactual_section(
    probs: dict[str, np.ndarray],
    y: np.ndarray,
    classes: list[str],
    clusters: np.ndarray,
    counts: np.ndarray,
    min_count: int = MIN_COUNT,
) -> dict[str, Any]:
    """Per class: AUROC on the full film, with lungs blanked and with the outside blanked.

    Args:
        probs: ``{"full" | "lungs" | "outside": (N, C) probabilities}``.
        y: ``(N, C)`` labels with NaN for not annotated.
        classes: column names.
        clusters: ``(N,)`` patient clusters; ``counts``: bootstrap draws from
            :func:`cxrad.evaluate.bootstrap.resample_counts`.
        min_count: fewest positives/negatives for a class to be scored.
    """
    rows = []
    for j, cls in enumerate(classes):
        yj = y[:, j]
        m = ~np.isnan(yj)
        n_pos = int(np.sum(yj[m] == 1))
        status = eligibility(n_pos, int(m.sum()) - n_pos, min_count)
        if status != "ok":
            rows.append({"class": cls, "status": status, "shortcut_likely": False, "text": status})
            continue
        res = {k: _auroc_ci(probs[k][:, j], yj, clusters, counts) for k in ("full", *WHERE)}
        flagged, text = verdict(res["full"]["auroc"], res["lungs"])
        rows.append(
            {
                "class": cls,
                "status": "ok",
                "n_pos": n_pos,
                "n_neg": int(m.sum()) - n_pos,
                "full": res["full"],
                "lungs_blanked": res["lungs"],
                "outside_blanked": res["outside"],
                "shortcut_likely": flagged,
                "text": f"{cls}: {text}.",
            }
        )
    flagged = [r["class"] for r in rows if r["shortcut_likely"]]
    summary = (
        f"{len(flagged)} class(es) keep their AUROC with the lung fields blanked and are likely "
        f"shortcut-driven: {', '.join(flagged)}."
        if flagged
        else "No scored class keeps its AUROC with the lung fields blanked."
    )
    return {"per_class": rows, "flagged": flagged, "text": summary}
