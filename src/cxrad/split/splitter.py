"""Stage 3, split: assign train/val/test, grouped by patient and duplicate group, stratified.

A component is every row connected by a shared ``patient_id`` or ``dup_group``; it is never
divided, so no patient and no picture is on both sides. Components are stratified over the 17
class columns (NaN = unknown, not negative).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrad.errors import SplitError
from cxrad.labels import CLASSES
from cxrad.manifest import STATUS_OK
from cxrad.split.graph import components, same_value_edges
from cxrad.split.stratify import iterative_stratify

logger = logging.getLogger(__name__)

RATIOS = (0.6, 0.3, 0.1)
"""Default (train, test, val) fractions: the original project's 60/30/10."""
_ORDER = ("train", "test", "val")  # the order ratios are given in


def check_ratios(ratios: Sequence[float]) -> np.ndarray:
    """Validate ``(train, test, val)`` fractions.

    Raises:
        SplitError: not three numbers, negative, or not summing to 1.
    """
    try:
        r = np.asarray([float(x) for x in ratios], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SplitError(f"ratios must be three numbers (train, test, val), got {ratios!r}") from e
    if r.shape != (3,):
        raise SplitError(
            f"ratios must be three numbers (train, test, val), e.g. 0.6,0.3,0.1; got {_fmt(r)}"
        )
    if (r < 0).any() or not np.isfinite(r).all():
        raise SplitError(f"ratios must be non-negative, got {_fmt(r)}")
    if abs(r.sum() - 1.0) > 1e-6:
        raise SplitError(f"ratios must sum to 1 (train, test, val), got {_fmt(r)} = {r.sum():g}")
    return r


def _fmt(r: np.ndarray) -> str:
    return ",".join(f"{x:g}" for x in r)


def split_components(df: pd.DataFrame) -> np.ndarray:
    """Component id per row (-1 for rows that are not ``ok``): rows sharing a patient or dup group."""
    ok = (df["status"] == STATUS_OK).to_numpy()
    sub = df[ok].reset_index(drop=True)
    pi, pj = same_value_edges(sub["patient_id"])
    if "dup_group" in sub.columns:
        gi, gj = same_value_edges(sub["dup_group"])
    else:
        logger.warning("no dup_group column: splitting by patient only (run dedup first)")
        gi = gj = np.zeros(0, dtype=np.int64)
    comp = components(len(sub), np.r_[pi, gi], np.r_[pj, gj], sub["image_id"])
    out = np.full(len(df), -1, dtype=np.int64)
    out[ok] = comp
    return out


def assign_splits(
    df: pd.DataFrame,
    ratios: Sequence[float] = RATIOS,
    seed: int = 0,
    keep_official: bool = False,
) -> pd.DataFrame:
    """Add ``split`` (``train``/``val``/``test`` for ``ok`` rows, null for the rest).

    Example:
        >>> df = assign_splits(assign_dup_groups(manifest), ratios=(0.6, 0.3, 0.1), seed=0)

    Args:
        df: a manifest, ideally with ``dup_group`` (see :func:`assign_dup_groups`).
        ratios: ``(train, test, val)`` fractions of images.
        seed: the same seed gives the same split.
        keep_official: rows whose ``official_split`` is ``test`` go to test with everything
            connected to them; official train/val rows are split into train/val only.

    Raises:
        SplitError: invalid ratios.
    """
    r = check_ratios(ratios)
    out = df.reset_index(drop=True).copy()
    comp = split_components(out)
    ok = comp >= 0
    k = int(comp.max()) + 1 if ok.any() else 0
    lab = (out.loc[ok, list(CLASSES)].to_numpy(dtype=np.float64) == 1).astype(np.float64)
    positives = np.zeros((k, len(CLASSES)))
    np.add.at(positives, comp[ok], lab)
    sizes = np.bincount(comp[ok], minlength=k).astype(np.float64)
    assigned = np.full(k, -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pools: list[tuple[np.ndarray, np.ndarray]] = []
    if keep_official:
        # Null official splits (most sources have none) must compare as "no split", not NA.
        off = out["official_split"].str.lower().fillna("").to_numpy(dtype=object)[ok]
        in_test = np.zeros(k, dtype=bool)
        in_test[comp[ok][off == "test"]] = True
        in_trval = np.zeros(k, dtype=bool)
        in_trval[comp[ok][(off == "train") | (off == "val")]] = True
        assigned[in_test] = _ORDER.index("test")
        trval = np.array([r[0], 0.0, r[2]])
        if trval.sum() == 0:
            trval = np.array([1.0, 0.0, 0.0])
        pools.append((np.flatnonzero(in_trval & ~in_test), trval / trval.sum()))
        pools.append((np.flatnonzero(~in_trval & ~in_test), r))
        logger.info("keep_official: %d components fixed to test", int(in_test.sum()))
    else:
        pools.append((np.arange(k), r))
    for items, ratio in pools:
        assigned[items] = iterative_stratify(positives[items], sizes[items], ratio, rng)
    names = np.array(_ORDER, dtype=object)
    split = np.full(len(out), None, dtype=object)
    split[ok] = names[assigned[comp[ok]]]
    out["split"] = pd.array(split, dtype="string")
    return out
