"""Stage 1, ingest: adapters whose labels come from a table (NIH ChestX-ray14, ieee8023).

Only the label files are read; images are only listed (NIH) or checked for existence
(ieee8023), never opened.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from cxrad.ingest.base import (
    MISSING_FILE,
    Adapter,
    detector,
    list_images,
    normal_labels,
    positive_labels,
    require_base,
    row,
)
from cxrad.ingest.labeltable import read_table
from cxrad.manifest import STATUS_OK, make_rows

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- NIH ChestX-ray14

NIH = "nih"
_NIH_LAYOUT = "{images/*.png | images_0NN/images/*.png} + Data_Entry_2017*.csv[.gz]"
NIH_FINDINGS: dict[str, str] = {
    "Atelectasis": "ATELECTASIS",
    "Cardiomegaly": "CARDIOMEGALY",
    "Consolidation": "CONSOLIDATION",
    "Edema": "EDEMA",
    "Effusion": "EFFUSION",
    "Emphysema": "EMPHYSEMA",
    "Fibrosis": "FIBROSIS",
    "Hernia": "HERNIA",
    "Infiltration": "INFILTRATION",
    "Mass": "MASS",
    "Nodule": "NODULE",
    "Pleural_Thickening": "PLEURAL_THICKENING",
    "Pneumonia": "PNEUMONIA",
    "Pneumothorax": "PNEUMOTHORAX",
}
"""NIH finding name -> class. ``No Finding`` -> NORMAL. COVID_19 and TUBERCULOSIS stay NaN."""


def _nih_label_files(base: Path) -> list[Path]:
    """Every ``Data_Entry_2017*.csv[.gz]``, the one to use first: the 2020 revision
    (``_v2020``) beats the original, a plain CSV beats its ``.gz``, then by name."""
    files = list(base.glob("Data_Entry_2017*.csv")) + list(base.glob("Data_Entry_2017*.csv.gz"))
    return sorted(files, key=lambda f: ("v2020" not in f.name.lower(), f.suffix == ".gz", f.name))


def _nih_label_file(base: Path) -> Path | None:
    files = _nih_label_files(base)
    return files[0] if files else None


def _nih_ok(base: Path) -> bool:
    return _nih_label_file(base) is not None


def _nih_images(base: Path) -> list[Path]:
    found = list_images(base / "images")
    for d in sorted(base.glob("images_*")):
        found += list_images(d / "images") + list_images(d)
    return found


def _nih_splits(base: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        f = base / name
        if f.is_file():
            out.update(dict.fromkeys(f.read_text().split(), split))
    return out


def _nih_boxes(base: Path) -> dict[str, list[dict[str, Any]]]:
    files = sorted(base.glob("BBox_List_2017.csv*"))
    if not files:
        return {}
    bb = pd.read_csv(files[0])
    out: dict[str, list[dict[str, Any]]] = {}
    for r in bb.itertuples(index=False):
        xywh = [round(float(v), 1) for v in r[2:6]]
        out.setdefault(r[0], []).append({"label": r[1], "xywh": xywh})
    return out


def _nih_labels(findings: str) -> tuple[dict[str, float] | None, str]:
    names = [f.strip() for f in findings.split("|") if f.strip()]
    if not names:
        return None, "unlabelled: empty Finding Labels"
    unknown = [n for n in names if n != "No Finding" and n not in NIH_FINDINGS]
    if unknown:
        return None, f"unmapped label: {'|'.join(unknown)}"
    if "No Finding" in names and len(names) > 1:
        return None, f"unmapped label: 'No Finding' together with findings ({findings})"
    if names == ["No Finding"]:
        labels = normal_labels()
        for c in ("COVID_19", "TUBERCULOSIS"):  # NIH never annotates these two
            labels[c] = float("nan")
        return labels, STATUS_OK
    labels = {c: 0.0 for c in NIH_FINDINGS.values()}
    labels["NORMAL"] = 0.0
    labels.update({NIH_FINDINGS[n]: 1.0 for n in names})
    return labels, STATUS_OK


def read_nih(root: Path) -> pd.DataFrame:
    """NIH ChestX-ray14: one row per image present; all 14 findings + NORMAL are annotated."""
    base = require_base(root, _nih_ok, [], _NIH_LAYOUT)
    label_file = _nih_label_file(base)
    assert label_file is not None
    cols = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age"]
    cols += ["Patient Gender", "View Position"]
    images = _nih_images(base)
    notes = _nih_precedence(base)
    table = read_table(label_file, cols)[cols]
    table = table[table["Image Index"].isin({p.name for p in images})]  # 112k rows -> present
    dups = int(table["Image Index"].duplicated().sum())
    if dups:
        notes.append(
            f"{label_file}: {dups} repeated row(s) for an image already listed; the first "
            "row of each image was used"
        )
    table = table.drop_duplicates("Image Index").set_index("Image Index")
    no_patient = int((table["Patient ID"].str.strip() == "").sum())
    if no_patient:
        notes.append(
            f"{label_file}: {no_patient} row(s) with an empty Patient ID; their patient_id is "
            "null (each is split as its own patient)"
        )
    entries = table.to_dict("index")
    splits = _nih_splits(base)
    boxes = _nih_boxes(base)
    records = []
    for path in images:
        name = path.name
        r = entries.get(name)
        if r is None:
            records.append(
                row(
                    NIH,
                    base,
                    path,
                    status="unmapped label: not in Data_Entry",
                    split=splits.get(name),
                )
            )
            continue
        labels, status = _nih_labels(r["Finding Labels"])
        meta: dict[str, Any] = {
            "follow_up": r["Follow-up #"],
            "age": r["Patient Age"],
            "sex": r["Patient Gender"],
        }
        if name in boxes:
            meta["boxes"] = boxes[name]
        records.append(
            row(
                NIH,
                base,
                path,
                labels,
                status=status,
                patient=r["Patient ID"].strip() or None,
                split=splits.get(name),
                view=r["View Position"],
                label_source=label_file.name,
                raw_label=r["Finding Labels"],
                meta=meta,
            )
        )
    out = make_rows(records)
    out.attrs["notes"] = notes
    return out


def _nih_precedence(base: Path) -> list[str]:
    files = _nih_label_files(base)
    if len(files) < 2:
        return []
    others = ", ".join(f.name for f in files[1:])
    return [f"{base}: several NIH label files; used {files[0].name} (newest), not {others}"]


# ---------------------------------------------------------------- ieee8023

IEEE = "ieee8023"
_IEEE_LAYOUT = "metadata.csv (finding, view, modality, patientid, folder, filename) + images/"
FRONTAL_VIEWS = ("PA", "AP")
"""A view is frontal when it starts with one of these (``AP Supine``, ``AP semi erect`` too)."""

# Every token (flat "A, B" or hierarchical "Pneumonia/Viral/X") that means a pneumonia.
IEEE_PNEUMONIA = {
    "pneumonia", "viral", "bacterial", "fungal", "lipoid", "aspiration", "sars", "mers",
    "mers-cov", "streptococcus", "pneumocystis", "klebsiella", "legionella", "mycoplasma",
    "mycoplasma bacterial pneumonia", "chlamydophila", "influenza", "varicella", "e.coli",
    "staphylococcus", "staphylococcus aureus", "nocardia", "herpes", "h1n1",
    "bacterial pneumonia", "viral pneumonia", "fungal pneumonia",
}  # fmt: skip
IEEE_UNLABELLED = {"todo", "unknown"}


def ieee_labels(finding: str | None) -> tuple[dict[str, float] | None, str]:
    """Map an ieee8023 ``finding`` (flat or hierarchical spelling) to labels and a status.

    COVID-19 -> COVID_19=1 (PNEUMONIA left unannotated, as in the other COVID sources);
    other pneumonias and SARS -> PNEUMONIA=1, COVID_19=0; ``No Finding`` -> NORMAL;
    ``todo`` -> unlabelled.
    """
    if finding is None or not str(finding).strip():
        return None, "unlabelled: empty finding"
    tokens = {t.strip().lower() for t in re.split(r"[/,]", str(finding)) if t.strip()}
    if tokens & IEEE_UNLABELLED:
        return None, "unlabelled: todo"
    if "covid-19" in tokens:
        return positive_labels("COVID_19"), STATUS_OK
    if tokens == {"no finding"}:
        return normal_labels(), STATUS_OK
    if "tuberculosis" in tokens:
        return positive_labels("TUBERCULOSIS", absent=["COVID_19"]), STATUS_OK
    if tokens & IEEE_PNEUMONIA:
        return positive_labels("PNEUMONIA", absent=["COVID_19"]), STATUS_OK
    return None, f"unmapped label: {finding}"


def _view_status(view: str | None, frontal: Iterable[str]) -> str | None:
    if view is None or not str(view).strip() or str(view).strip() == "?":
        return "excluded: view unknown"
    v = str(view).strip().upper()
    if any(v.startswith(f.upper()) for f in frontal):
        return None
    if v in {"L", "LL", "LATERAL", "RL"}:
        return "excluded: lateral view"
    return f"excluded: view {view}"


def _ieee_ok(base: Path) -> bool:
    f = base / "metadata.csv"
    if not f.is_file():
        return False
    with f.open(errors="replace") as fh:
        header = fh.readline().lower()
    return "finding" in header and "filename" in header


def read_ieee8023(root: Path, frontal: Iterable[str] = FRONTAL_VIEWS) -> pd.DataFrame:
    """ieee8023 covid-chestxray-dataset; CT, non-frontal and ``todo`` rows kept as excluded.

    Args:
        root: the repository folder (with ``metadata.csv``).
        frontal: view prefixes kept; others become ``excluded: ...`` rows.
    """
    base = require_base(root, _ieee_ok, ["covid-chestxray-dataset"], _IEEE_LAYOUT)
    meta_df = read_table(base / "metadata.csv", ["finding", "filename"])
    frontal = tuple(frontal)
    seen: dict[str, str | None] = {}
    records = []
    for i, r in enumerate(meta_df.to_dict("records")):
        folder = r.get("folder") or "images"
        filename = r["filename"]
        key = f"{folder}/{filename}"
        path = base / folder / filename
        labels, label_status = ieee_labels(r.get("finding"))
        modality = (r.get("modality") or "").strip()
        meta = {k: r.get(k) for k in ("offset", "sex", "age", "license") if r.get(k)}
        if key in seen:
            status = "excluded: repeated metadata row"
            meta["first_patient"] = seen[key]
            key = f"{key}#row{i + 2}"  # line number in metadata.csv
        elif modality.lower() != "x-ray":
            status = f"excluded: {modality or 'modality unknown'}"
        elif (vs := _view_status(r.get("view"), frontal)) is not None:
            status = vs
        elif not path.is_file():
            status = MISSING_FILE
        else:
            status = label_status
        seen.setdefault(f"{folder}/{filename}", r.get("patientid"))
        records.append(
            row(
                IEEE,
                base,
                path,
                labels,
                status=status,
                patient=r.get("patientid") or None,
                view=r.get("view") or None,
                label_source="metadata.csv:finding",
                raw_label=r.get("finding") or None,
                meta=meta,
                key=key,
            )
        )
    return make_rows(records)


TABLE_ADAPTERS: list[Adapter] = [
    Adapter(NIH, "NIH ChestX-ray14", _NIH_LAYOUT, detector(_nih_ok), read_nih),
    Adapter(
        IEEE,
        "ieee8023 covid-chestxray-dataset",
        _IEEE_LAYOUT,
        detector(_ieee_ok, ["covid-chestxray-dataset"]),
        read_ieee8023,
    ),
]
