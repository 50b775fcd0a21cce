"""Stage 1, ingest: adapters driven by label lists and annotation files (COVIDx, TBX11K).

COVIDx is mostly a list of file names taken from other collections; its rows whose image is
absent are kept as ``missing file`` so dedup can still match them by name.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd

from cxrad.errors import LabelFileError
from cxrad.ingest.base import (
    MISSING_FILE,
    Adapter,
    detector,
    list_images,
    normal_labels,
    positive_labels,
    require_base,
    row,
    split_name,
    subdirs,
)
from cxrad.manifest import STATUS_OK, make_rows

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- COVIDx

COVIDX = "covidx"
COVIDX_LAYOUT = "{train,test,val}/ + {train,test,val}*.txt (`patient_id filename label source`)"
_COVIDX_FILE = re.compile(r"^(train|test|val)[^/]*\.txt$", re.IGNORECASE)
COVIDX_LABELS: dict[str, tuple[dict[str, float], str]] = {
    # COVIDx CXR-2 and later: binary COVID-19 test result.
    "positive": (positive_labels("COVID_19"), STATUS_OK),
    "negative": ({"COVID_19": 0.0}, STATUS_OK),  # normal or non-COVID pneumonia: unknown which
    # COVIDx v1-v5: three classes.
    "covid-19": (positive_labels("COVID_19"), STATUS_OK),
    "normal": (normal_labels(), STATUS_OK),
    "pneumonia": (positive_labels("PNEUMONIA", absent=["COVID_19"]), STATUS_OK),
}
"""COVIDx label (lower-case) -> labels. Both the 2-class and the 3-class forms are accepted."""


def _covidx_files(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_file() and _COVIDX_FILE.match(p.name))


def _parse_covidx_line(line: str) -> tuple[str, str, str, str | None] | None:
    """``patient_id filename label [source]`` -> fields; a file name may contain spaces."""
    t = line.split()
    if len(t) < 3:
        return None
    if t[-1].lower() in COVIDX_LABELS:  # 3 columns, no source
        return t[0], " ".join(t[1:-1]), t[-1], None
    if len(t) >= 4:
        return t[0], " ".join(t[1:-2]), t[-2], t[-1]
    return None


def _covidx_ok(base: Path) -> bool:
    for f in _covidx_files(base):
        with f.open(errors="replace") as fh:
            first = fh.readline()
        parsed = _parse_covidx_line(first)
        if parsed and parsed[2].lower() in COVIDX_LABELS:
            return True
    return False


def read_covidx(root: Path) -> pd.DataFrame:
    """COVIDx: images under ``<split>/`` named by the label files; absent ones -> missing file."""
    base = require_base(root, _covidx_ok, [], COVIDX_LAYOUT)
    first_file: dict[str, str] = {}
    records = []
    for f in _covidx_files(base):
        prefix = _COVIDX_FILE.match(f.name).group(1).lower()  # type: ignore[union-attr]
        split = split_name(prefix)
        folder = next((d for d in subdirs(base) if split_name(d.name) == split), base / prefix)
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            parsed = _parse_covidx_line(line)
            if parsed is None:
                records.append(
                    row(COVIDX, base, f, status=f"unmapped label: bad line {n} of {f.name}",
                        key=f"{f.name}#line{n}", raw_label=line.strip()[:200])
                )  # fmt: skip
                continue
            pid, filename, label, src = parsed
            path = folder / filename
            key = f"{folder.name}/{filename}"
            labels, status = COVIDX_LABELS.get(label.lower(), (None, f"unmapped label: {label}"))
            if key in first_file:
                status = "excluded: listed again in another label file"
                key = f"{key}#{f.name}"
            else:
                first_file[key] = f.name
                if not path.is_file():
                    status = MISSING_FILE
            records.append(
                row(
                    COVIDX,
                    base,
                    path,
                    labels,
                    status=status,
                    patient=f"{src}/{pid}" if src else pid,
                    split=split,
                    label_source=f.name,
                    raw_label=label,
                    meta={"source": src, "first_listed_in": first_file[key.split("#")[0]]},
                    key=key,
                )
            )
    return make_rows(records)


# ---------------------------------------------------------------- TBX11K

TBX11K = "tbx11k"
TBX11K_LAYOUT = "imgs/{health,sick,tb}/*.png + annotations/{xml/*.xml,json/*.json} [+ lists/*.txt]"
_TBX_FOLDERS = {"tb", "health", "sick"}
_TBX_LABELS: dict[str, tuple[dict[str, float] | None, str]] = {
    "tb": (positive_labels("TUBERCULOSIS"), STATUS_OK),
    "health": (normal_labels(), STATUS_OK),
    # "sick" = sick but not TB: abnormal, and TB known absent; which finding is unknown.
    "sick": ({"TUBERCULOSIS": 0.0, "NORMAL": 0.0}, STATUS_OK),
    "test": (None, "unlabelled: TBX11K test set"),
}


def _tbx_ok(base: Path) -> bool:
    return bool({d.name for d in subdirs(base / "imgs")} & _TBX_FOLDERS)


def _xml_boxes(path: Path) -> dict[str, Any]:
    """One image's VOC boxes; a malformed file is that image's ``boxes_error`` (its label, from
    the folder, still holds)."""
    try:
        return _parse_xml_boxes(path)
    except (ET.ParseError, ValueError) as e:
        logger.warning("tbx11k: boxes not read from %s: %s", path, e)
        return {"boxes": [], "boxes_error": f"{path.name}: {e} (expected a VOC annotation)"}


def _parse_xml_boxes(path: Path) -> dict[str, Any]:
    tree = ET.parse(path).getroot()
    size = tree.find("size")
    out: dict[str, Any] = {"boxes": []}
    if size is not None:
        out["annotation_size"] = [int(float(size.findtext(k, "0"))) for k in ("width", "height")]
    for obj in tree.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        out["boxes"].append({"label": obj.findtext("name"), "xywh": [x0, y0, x1 - x0, y1 - y0]})
    return out


COCO_EXPECTED = (
    "a COCO json: images [{id, file_name}], annotations [{image_id, category_id, bbox}], "
    "categories [{id, name}]"
)


def _json_boxes(base: Path) -> dict[str, dict[str, Any]]:
    """COCO-style TBX11K json -> ``{"tb/tb0005.png": {"boxes": [...], "annotation_size": ...}}``.

    Raises:
        LabelFileError: a file that is not such a json, naming it, where and what was expected.
    """
    out: dict[str, dict[str, Any]] = {}
    for f in sorted((base / "annotations" / "json").glob("*.json")):
        try:
            _add_coco(json.loads(f.read_bytes()), out)
        except json.JSONDecodeError as e:
            raise LabelFileError(f"{f}: line {e.lineno} column {e.colno}: {e.msg}; expected {COCO_EXPECTED}") from e  # fmt: skip
        except (UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise LabelFileError(f"{f}: {type(e).__name__} {e}; expected {COCO_EXPECTED}") from e
    return out


def _add_coco(coco: Any, out: dict[str, dict[str, Any]]) -> None:
    """Add one COCO json's images and boxes to ``out`` (keyed by ``file_name``)."""
    cats = {c["id"]: c["name"] for c in coco.get("categories", [])}
    by_id = {im["id"]: im for im in coco.get("images", [])}
    for im in by_id.values():
        size = [im.get("width"), im.get("height")]
        out.setdefault(str(im["file_name"]), {"boxes": [], "annotation_size": size})
    for a in coco.get("annotations", []):
        im = by_id.get(a["image_id"])
        if im is not None:
            box = {"label": cats.get(a["category_id"]), "xywh": [round(float(v), 1) for v in a["bbox"]]}  # fmt: skip
            out[str(im["file_name"])]["boxes"].append(box)


def _tbx_splits(base: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in sorted((base / "lists").glob("*.txt")):
        name = f.stem.lower()
        split = next((s for s in ("train", "val", "test") if s in name), None)
        if split is None or "trainval" in name:
            continue
        for line in f.read_text(errors="replace").split():
            out[line.strip()] = split
    return out


def read_tbx11k(root: Path) -> pd.DataFrame:
    """TBX11K: ``tb`` = TB, ``health`` = normal, ``sick`` = non-TB sick; boxes into ``meta``."""
    base = require_base(root, _tbx_ok, ["TBX11K"], TBX11K_LAYOUT)
    json_boxes = _json_boxes(base)
    splits = _tbx_splits(base)
    records = []
    for d in subdirs(base / "imgs"):
        labels, status = _TBX_LABELS.get(d.name, (None, f"unmapped label: {d.name}"))
        for path in list_images(d, recursive=True):
            rel = path.relative_to(base / "imgs").as_posix()
            xml = base / "annotations" / "xml" / f"{path.stem}.xml"
            meta = json_boxes.get(rel) or (_xml_boxes(xml) if xml.is_file() else None)
            records.append(
                row(
                    TBX11K,
                    base,
                    path,
                    labels,
                    status=status,
                    split=splits.get(rel),
                    label_source=f"folder:{d.name}",
                    raw_label=d.name,
                    meta=meta if meta and (meta.get("boxes") or meta.get("boxes_error")) else None,
                )
            )
    return make_rows(records)


LABELFILE_ADAPTERS: list[Adapter] = [
    Adapter(
        TBX11K, "TBX11K tuberculosis", TBX11K_LAYOUT, detector(_tbx_ok, ["TBX11K"]), read_tbx11k
    ),
    Adapter(
        COVIDX,
        "COVIDx (andyczhao/covidx-cxr2 and older)",
        COVIDX_LAYOUT,
        detector(_covidx_ok),
        read_covidx,
    ),
]
