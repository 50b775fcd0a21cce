"""Stage 1, ingest: the COVID-CXNet adapter (web-collected COVID-19 films from ~20 countries).

Layout: ``metadata.csv`` (``filename, patient_id, sex, age, view, label, location, url ...``)
beside ``chest_xray_images/covid19/``. Every film is COVID-19 (``label``); the country is the
site. File extensions do not always match the content (``770.png`` is a JPEG): the reader
decodes by content, so the name is only a key here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrad.ingest.base import MISSING_FILE, Adapter, detector, positive_labels, require_base, row
from cxrad.ingest.sites import site_from_url
from cxrad.ingest.tables import FRONTAL_VIEWS
from cxrad.manifest import STATUS_OK, make_rows

CXNET = "covid-cxnet"
_LAYOUT = (
    "metadata.csv (filename, patient_id, label, view, location, url) + chest_xray_images/covid19/"
)
_IMAGES = Path("chest_xray_images") / "covid19"


def _ok(base: Path) -> bool:
    f = base / "metadata.csv"
    if not f.is_file() or not (base / _IMAGES).is_dir():
        return False
    with f.open(encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline().lower()
    return "filename" in header and "patient_id" in header and "label" in header


def _status(r: dict[str, str], path: Path) -> str:
    if (r.get("label") or "").strip().lower() != "covid-19":
        return f"unmapped label: {r.get('label') or 'empty'}"
    view = (r.get("view") or "").strip().upper()
    if view and not view.startswith(FRONTAL_VIEWS):
        return (
            "excluded: lateral view" if view in {"L", "LL", "LATERAL"} else f"excluded: view {view}"
        )
    return STATUS_OK if path.is_file() else MISSING_FILE


def read_cxnet(root: Path) -> pd.DataFrame:
    """COVID-CXNet: one row per ``metadata.csv`` line; COVID_19 = 1, NORMAL = 0.

    A blank view is kept: the collection holds frontal films only (its README), and the
    input gate rejects a lateral one at prediction time.
    """
    base = require_base(root, _ok, ["COVID-CXNet"], _LAYOUT)
    table = pd.read_csv(
        base / "metadata.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    records = []
    for r in table.to_dict("records"):
        path = base / _IMAGES / r["filename"]
        meta = {k: r.get(k) for k in ("sex", "age", "location", "pcr_test", "url") if r.get(k)}
        records.append(
            row(
                CXNET,
                base,
                path,
                positive_labels("COVID_19"),
                status=_status(r, path),
                patient=r.get("patient_id") or None,
                view=(r.get("view") or None),
                site=(r.get("location") or site_from_url(r.get("url")) or None),
                label_source="metadata.csv:label",
                raw_label=r.get("label") or None,
                meta=meta,
            )
        )
    return make_rows(records)


CXNET_ADAPTER = Adapter(
    CXNET,
    "COVID-CXNet (armiro), web-collected COVID-19 films",
    _LAYOUT,
    detector(_ok, ["COVID-CXNet"]),
    read_cxnet,
)
