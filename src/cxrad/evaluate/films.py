"""Stage 8, evaluate: the per-film table (``predictions.parquet``) behind every number in the report.

``metrics.json`` holds aggregates only. Error analysis, a different operating point, or a
subgroup the report does not slice needs each film's labels, probabilities and decisions. This
table keeps them, keyed by ``image_id`` and carrying ``source``, ``site``, ``patient_id`` and
``split``, so the report never has to be recomputed to be questioned.

Columns: the manifest's identifying columns, ``y_<CLASS>`` (1/0/null as the manifest has it),
``p_<CLASS>`` (calibrated probability), ``triage_score``, ``abnormal`` (triage decision),
``n_findings`` and ``findings`` (the reported findings, most probable first, ``|``-joined).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrad.atomic import replacing
from cxrad.models.decision import Decisions

ID_COLUMNS = ("image_id", "path", "source", "site", "patient_id", "view", "split")


def film_table(rows: pd.DataFrame, decided: Decisions) -> pd.DataFrame:
    """One row per evaluated film: its identity, labels, probabilities and decisions."""
    classes = list(decided.classes)
    out = rows[[c for c in ID_COLUMNS if c in rows.columns]].reset_index(drop=True).copy()
    for c in classes:
        out[f"y_{c}"] = rows[c].to_numpy(dtype=np.float64)
    for j, c in enumerate(classes):
        out[f"p_{c}"] = decided.probabilities[:, j].astype(np.float32)
    out["triage_score"] = np.asarray(decided.triage_score, dtype=np.float32)
    out["abnormal"] = np.asarray(decided.abnormal, dtype=bool)
    out["n_findings"] = decided.findings.sum(axis=1).astype(np.int32)
    out["findings"] = [_names(decided, i) for i in range(len(out))]
    return out


def _names(d: Decisions, i: int) -> str:
    idx = np.flatnonzero(d.findings[i])
    order = idx[np.argsort(-d.probabilities[i, idx], kind="stable")]
    return "|".join(d.classes[j] for j in order)


def write_film_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` as parquet, atomically (a failure never leaves half a file)."""
    with replacing(path) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(path)


__all__ = ["ID_COLUMNS", "film_table", "write_film_table"]
