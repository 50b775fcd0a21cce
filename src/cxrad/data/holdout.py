"""Stage 5, data: hold whole sources out of training, to measure how a model does at a new site.

A source held out is dropped from train and val, and so is every film linked to it by a
duplicate group or a patient (the Radiography "Normal" folder holds pediatric and NIH/RSNA
films, ieee8023 holds re-crops of other collections): otherwise the "unseen" site would leak
into training through its copies elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrad.errors import TrainError
from cxrad.manifest import STATUS_OK
from cxrad.options import suggest

logger = logging.getLogger(__name__)


def parse_sources(text: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> sorted unique names; None or ``""`` -> ``[]``."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    return sorted({s.strip() for s in items if s and s.strip()})


def check_sources(df: pd.DataFrame, sources: Iterable[str]) -> None:
    """Raise if a name is not a source of ``df``.

    Raises:
        TrainError: an unknown source name, with the known ones and "did you mean".
    """
    known = sorted(df["source"].dropna().astype(str).unique())
    for s in sources:
        if s not in known:
            raise TrainError(
                f"--hold-out: no source {s!r} in this manifest; known sources: "
                f"{', '.join(known)}.{suggest(s, known)}"
            )


def linked_to(df: pd.DataFrame, sources: Iterable[str]) -> np.ndarray:
    """Boolean mask of rows that are in ``sources`` or share a patient or duplicate group with one."""
    held = df["source"].astype(str).isin(list(sources)).to_numpy()
    mask = held.copy()
    for col in ("patient_id", "dup_group"):
        if col not in df.columns:
            continue
        key = df[col].astype("string")
        bad = set(key[held].dropna())
        if bad:
            mask |= key.isin(bad).fillna(False).to_numpy(dtype=bool)
    return mask


def drop_held_out(df: pd.DataFrame, sources: Sequence[str]) -> pd.DataFrame:
    """``df`` without the train/val rows of ``sources`` or linked to them; test rows are kept.

    Test rows stay so that the in-distribution test of the other sources is unchanged; the
    held-out films themselves are what the evaluation scores as the new site.
    """
    if not sources:
        return df
    check_sources(df, sources)
    fit = df["split"].isin(["train", "val"]).to_numpy()
    drop = fit & linked_to(df, sources)
    own = fit & df["source"].astype(str).isin(list(sources)).to_numpy()
    logger.info(
        "hold-out %s: dropped %d train/val rows (%d of them linked by patient or duplicate "
        "group from other sources)",
        ",".join(sources),
        int(drop.sum()),
        int(drop.sum() - own.sum()),
    )
    return df[~drop]


def held_out_sources(config: Any) -> list[str]:
    """A run's held-out sources (``held_out_sources`` in config.json, else ``train.hold_out``)."""
    return list(config.held_out_sources or (config.train or {}).get("hold_out") or [])


def fit_rows(df: pd.DataFrame, config: Any, split: str) -> pd.DataFrame:
    """The ``ok`` rows of ``split`` that the run of ``config`` trained on, or may fit on.

    Whatever is fitted for a run after its weights (temperatures, operating points, the OOD
    Gaussian) must see only the films training saw: a held-out source, and the films linked
    to it, stay out, or the "unseen" site would shape the run's own cut-offs.
    """
    ok = df[df["status"] == STATUS_OK]
    present = set(ok["source"].dropna().astype(str))
    kept = drop_held_out(ok, [s for s in held_out_sources(config) if s in present])
    return kept[kept["split"] == split]


__all__ = [
    "check_sources",
    "drop_held_out",
    "fit_rows",
    "held_out_sources",
    "linked_to",
    "parse_sources",
]
