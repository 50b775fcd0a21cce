"""Stage 1, ingest: adapters for datasets whose labels are folder names.

Each layout here is ``[split/]CLASS/image``; the adapters differ in which folder names they
accept, what each name means, and what the file names say about the patient.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from cxrad.ingest.base import (
    Adapter,
    detector,
    list_images,
    norm_name,
    normal_labels,
    positive_labels,
    require_base,
    row,
    split_name,
    subdirs,
)
from cxrad.ingest.sites import add_radiography_sites
from cxrad.labels import CLASSES
from cxrad.manifest import STATUS_OK, make_rows

logger = logging.getLogger(__name__)

# folder name -> (labels, status); labels None means "leave every class NaN".
LabelFn = Callable[[str], tuple[dict[str, float] | None, str]]
# (split folder name, file path) -> (patient id or None, extra meta or None)
PatientFn = Callable[[str, Path], tuple[str | None, dict[str, Any] | None]]


def _unmapped(name: str) -> tuple[None, str]:
    return None, f"unmapped label: {name}"


def _table(mapping: dict[str, tuple[dict[str, float] | None, str]]) -> LabelFn:
    """A :data:`LabelFn` from exact folder names; anything else is an unmapped label."""
    return lambda name: mapping.get(name, _unmapped(name))


def _folder_rows(
    source: str,
    base: Path,
    split_dirs: list[tuple[Path, str | None]],
    labels_of: LabelFn,
    patient_of: PatientFn | None = None,
    recursive: bool = False,
) -> pd.DataFrame:
    """Rows for ``base/[split/]CLASS/*``: one per image, labels from the class folder name."""
    records = []
    for split_dir, split in split_dirs:
        for cls_dir in subdirs(split_dir):
            labels, status = labels_of(cls_dir.name)
            images = list_images(cls_dir, recursive=recursive, skip_dirs=("masks", "mask"))
            for path in images:
                patient, meta = patient_of(split_dir.name, path) if patient_of else (None, None)
                records.append(
                    row(
                        source,
                        base,
                        path,
                        labels,
                        status=status,
                        patient=patient,
                        split=split,
                        label_source=f"folder:{cls_dir.name}",
                        raw_label=cls_dir.name,
                        meta=meta,
                    )
                )
    return make_rows(records)


def _split_dirs(base: Path) -> list[tuple[Path, str | None]]:
    """``(folder, official split)`` for each ``train``/``test``/``val`` folder of ``base``."""
    return [(d, split_name(d.name)) for d in subdirs(base) if split_name(d.name)]


def _has_split_classes(base: Path, needed: set[str]) -> bool:
    """True if some split folder of ``base`` holds every class folder in ``needed``."""
    return any(needed <= {c.name for c in subdirs(d)} for d, _ in _split_dirs(base))


# ---------------------------------------------------------------- Kaggle pediatric

PEDIATRIC = "kaggle-pediatric"
_PED_LAYOUT = "[chest_xray/]{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg"
_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)", re.IGNORECASE)
_NORMAL_IM = re.compile(r"^((?:NORMAL\d*-)?IM-\d+)", re.IGNORECASE)


def _pediatric_ok(base: Path) -> bool:
    splits = _split_dirs(base)
    classes = [{c.name for c in subdirs(d)} for d, _ in splits]
    if not any(classes) or not all(c <= {"NORMAL", "PNEUMONIA"} for c in classes):
        return False
    if base.name == "chest_xray":
        return True
    # Not named chest_xray (a renamed copy): require the pediatric file-name scheme.
    for d, _ in _split_dirs(base):
        for p in list_images(d / "PNEUMONIA")[:20] + list_images(d / "NORMAL")[:20]:
            if _PERSON.match(p.name) or _NORMAL_IM.match(p.name):
                return True
    return False


def _pediatric_patient(split_folder: str, path: Path) -> tuple[str | None, dict[str, Any] | None]:
    # Person numbers restart in every official split folder: namespace them by that folder.
    m = _PERSON.match(path.name)
    if m:
        return f"{split_folder}/{m.group(1)}", {"subtype": m.group(2).lower()}
    m = _NORMAL_IM.match(path.name)
    if m:
        return f"{split_folder}/{m.group(1)}", None
    logger.debug("no patient in pediatric file name %s", path.name)
    return None, None


def read_pediatric(root: Path) -> pd.DataFrame:
    """Kermany pediatric pneumonia (and its tolgadincer re-split): labels from folder names."""
    base = require_base(root, _pediatric_ok, ["chest_xray"], _PED_LAYOUT)
    labels = _table(
        {
            "NORMAL": (normal_labels(), STATUS_OK),
            "PNEUMONIA": (positive_labels("PNEUMONIA"), STATUS_OK),
        }
    )
    return _folder_rows(PEDIATRIC, base, _split_dirs(base), labels, _pediatric_patient)


# ---------------------------------------------------------------- COVID-19 Radiography

RADIOGRAPHY = "covid19-radiography"
_RAD_LAYOUT = (
    "[COVID-19_Radiography_Dataset/]{COVID,Normal,Viral Pneumonia,Lung_Opacity}/[images/]*"
)
_RAD_COVID = {"COVID", "COVID-19"}
_RAD_OTHER = {"Normal", "NORMAL", "Viral Pneumonia", "Lung_Opacity"}
LUNG_OPACITY_STATUS = "excluded: Lung_Opacity is not one of the 17 classes"


def _radiography_ok(base: Path) -> bool:
    names = {d.name for d in subdirs(base)}
    return bool(names & _RAD_COVID) and bool(names & _RAD_OTHER)


def _radiography_labels(name: str) -> tuple[dict[str, float] | None, str]:
    key = norm_name(name)
    if key in ("covid", "covid19"):
        return positive_labels("COVID_19"), STATUS_OK
    if key == "normal":
        return normal_labels(), STATUS_OK
    if key == "viralpneumonia":
        # These come from the 2018 pediatric set: pneumonia, and certainly not COVID-19.
        return positive_labels("PNEUMONIA", absent=["COVID_19"]), STATUS_OK
    if key == "lungopacity":
        return None, LUNG_OPACITY_STATUS
    return _unmapped(name)


def read_radiography(root: Path) -> pd.DataFrame:
    """COVID-19 Radiography Database: class folders, optional ``images/``; ``masks/`` ignored."""
    base = require_base(root, _radiography_ok, _RAD_WRAPPERS, _RAD_LAYOUT)
    rows = _folder_rows(RADIOGRAPHY, base, [(base, None)], _radiography_labels, recursive=True)
    return add_radiography_sites(base, rows)


# ---------------------------------------------------------------- Tuberculosis Chest X-ray DB

TB_RADIOGRAPHY = "tb-radiography"
_TB_LAYOUT = "[TB_Chest_Radiography_Database/]{Normal,Tuberculosis}/*.png"


def _tb_ok(base: Path) -> bool:
    names = {norm_name(d.name) for d in subdirs(base)}
    return {"normal", "tuberculosis"} <= names


def _tb_labels(name: str) -> tuple[dict[str, float] | None, str]:
    key = norm_name(name)
    if key == "tuberculosis":
        return positive_labels("TUBERCULOSIS"), STATUS_OK
    if key == "normal":
        return normal_labels(), STATUS_OK
    return _unmapped(name)


def read_tb_radiography(root: Path) -> pd.DataFrame:
    """Tuberculosis Chest X-ray Database (tawsifurrahman): ``Normal/`` and ``Tuberculosis/``."""
    base = require_base(root, _tb_ok, ["TB_Chest_Radiography_Database"], _TB_LAYOUT)
    return _folder_rows(TB_RADIOGRAPHY, base, [(base, None)], _tb_labels, recursive=True)


# ---------------------------------------------------------------- prashant268

PRASHANT = "prashant268"
_PRASHANT_LAYOUT = "[Data/]{train,test}/{COVID19,NORMAL,PNEUMONIA}/*"


def _prashant_ok(base: Path) -> bool:
    return _has_split_classes(base, {"COVID19"})


def read_prashant(root: Path) -> pd.DataFrame:
    """prashant268 chest-xray-covid19-pneumonia: three mutually exclusive class folders."""
    base = require_base(root, _prashant_ok, ["Data"], _PRASHANT_LAYOUT)
    labels = _table(
        {
            "COVID19": (positive_labels("COVID_19"), STATUS_OK),
            "NORMAL": (normal_labels(), STATUS_OK),
            "PNEUMONIA": (positive_labels("PNEUMONIA", absent=["COVID_19"]), STATUS_OK),
        }
    )
    return _folder_rows(PRASHANT, base, _split_dirs(base), labels)


# ---------------------------------------------------------------- khoongweihao

KHOONG = "khoongweihao"
_KHOONG_LAYOUT = "xray_dataset_covid19/{train,test}/{NORMAL,PNEUMONIA}/* (PNEUMONIA = COVID-19)"


def _khoong_ok(base: Path) -> bool:
    return base.name == "xray_dataset_covid19" and _has_split_classes(base, {"PNEUMONIA"})


def read_khoong(root: Path) -> pd.DataFrame:
    """khoongweihao covid19-xray-dataset-train-test-sets: its ``PNEUMONIA`` folder is COVID-19."""
    base = require_base(root, _khoong_ok, ["xray_dataset_covid19"], _KHOONG_LAYOUT)
    labels = _table(
        {
            "NORMAL": (normal_labels(), STATUS_OK),
            "PNEUMONIA": (positive_labels("COVID_19"), STATUS_OK),
        }
    )
    return _folder_rows(KHOONG, base, _split_dirs(base), labels)


# ---------------------------------------------------------------- nabeelsajid917

NABEEL = "nabeelsajid917"
_NABEEL_LAYOUT = "dataset/{covid,normal}/*"


def _nabeel_ok(base: Path) -> bool:
    return base.name.lower() == "dataset" and {"covid", "normal"} <= {d.name for d in subdirs(base)}


def read_nabeel(root: Path) -> pd.DataFrame:
    """nabeelsajid917 covid-19-x-ray-10000-images: ``dataset/{covid,normal}``."""
    base = require_base(root, _nabeel_ok, ["dataset"], _NABEEL_LAYOUT)
    labels = _table(
        {
            "covid": (positive_labels("COVID_19"), STATUS_OK),
            "normal": (normal_labels(), STATUS_OK),
        }
    )
    return _folder_rows(NABEEL, base, [(base, None)], labels)


# ---------------------------------------------------------------- Montgomery / Shenzhen

MONTGOMERY = "montgomery-shenzhen"
_MS_LAYOUT = "[Lung Segmentation/]CXR_png/*_{0,1}.png + ClinicalReadings/*.txt"
_MS_NAME = re.compile(r"^(.+)_([01])$")


def _ms_ok(base: Path) -> bool:
    return (base / "CXR_png").is_dir()


def read_montgomery(root: Path) -> pd.DataFrame:
    """Montgomery/Shenzhen TB sets: ``_1`` = TB, ``_0`` = normal; readings kept as text only."""
    base = require_base(root, _ms_ok, _MS_WRAPPERS, _MS_LAYOUT)
    records = []
    for path in list_images(base / "CXR_png"):
        m = _MS_NAME.match(path.stem)
        reading_file = base / "ClinicalReadings" / f"{path.stem}.txt"
        meta: dict[str, Any] = {}
        if reading_file.is_file():
            meta["reading"] = reading_file.read_text(errors="replace").strip()
        if path.name.upper().startswith("MCU"):
            meta["hospital"] = "Montgomery"
        elif path.name.upper().startswith("CHN"):
            meta["hospital"] = "Shenzhen"
        if m is None:
            records.append(
                row(MONTGOMERY, base, path, status="unmapped label: no _0/_1 suffix", meta=meta)
            )
            continue
        tb = m.group(2) == "1"
        records.append(
            row(
                MONTGOMERY,
                base,
                path,
                positive_labels("TUBERCULOSIS") if tb else normal_labels(),
                patient=m.group(1),
                label_source="file name suffix",
                raw_label=m.group(2),
                meta=meta,
            )
        )
    return make_rows(records)


# ---------------------------------------------------------------- generic class folders

GENERIC = "class-folders"
_GENERIC_LAYOUT = "ROOT/[{train,val,test}/]<CLASS>/* (CLASS = one of the 17 classes or an alias)"

CLASS_ALIASES: dict[str, str] = {
    **{norm_name(c): c for c in CLASSES},
    "covid": "COVID_19",
    "covid19": "COVID_19",
    "sarscov2": "COVID_19",
    "tb": "TUBERCULOSIS",
    "healthy": "NORMAL",
    "health": "NORMAL",
    "nofinding": "NORMAL",
    "viralpneumonia": "PNEUMONIA",
    "bacterialpneumonia": "PNEUMONIA",
    "pleuraleffusion": "EFFUSION",
    "pleuralthickening": "PLEURAL_THICKENING",
}
"""Normalised folder name (see :func:`norm_name`) -> class, for the generic adapter."""


def class_of(name: str) -> str | None:
    """The class a folder name means (case, punctuation and a plural ``s`` ignored), or None."""
    key = norm_name(name)
    return CLASS_ALIASES.get(key) or (CLASS_ALIASES.get(key[:-1]) if key.endswith("s") else None)


def _generic_labels(name: str) -> tuple[dict[str, float] | None, str]:
    cls = class_of(name)
    if cls is None:
        return _unmapped(name)
    return (normal_labels() if cls == "NORMAL" else positive_labels(cls)), STATUS_OK


def _generic_ok(base: Path) -> bool:
    if any(class_of(d.name) for d in subdirs(base)):
        return True
    return any(class_of(c.name) for d, _ in _split_dirs(base) for c in subdirs(d))


def read_generic(root: Path) -> pd.DataFrame:
    """A user's own ``ROOT/[split/]<CLASS>/*``; unknown class folders become unmapped rows."""
    base = require_base(root, _generic_ok, [], _GENERIC_LAYOUT)
    splits = _split_dirs(base)
    if splits and not any(class_of(d.name) for d in subdirs(base)):
        return _folder_rows(GENERIC, base, splits, _generic_labels, recursive=True)
    return _folder_rows(GENERIC, base, [(base, None)], _generic_labels, recursive=True)


def _adapter(name: str, description: str, layout: str, ok, wrappers, read) -> Adapter:  # type: ignore[no-untyped-def]
    return Adapter(name, description, layout, detector(ok, wrappers), read)


_RAD_WRAPPERS = ["COVID-19_Radiography_Dataset", "COVID-19 Radiography Database"]
_MS_WRAPPERS = ["Lung Segmentation", "data/Lung Segmentation", "data"]

# Most specific first: khoongweihao and prashant268 hold pediatric-named NORMAL files.
FOLDER_ADAPTERS: list[Adapter] = [
    _adapter(KHOONG, "khoongweihao/covid19-xray-dataset-train-test-sets", _KHOONG_LAYOUT,
             _khoong_ok, ["xray_dataset_covid19"], read_khoong),
    _adapter(PRASHANT, "prashant268/chest-xray-covid19-pneumonia", _PRASHANT_LAYOUT,
             _prashant_ok, ["Data"], read_prashant),
    _adapter(PEDIATRIC, "Kermany pediatric pneumonia (paultimothymooney; tolgadincer re-split)",
             _PED_LAYOUT, _pediatric_ok, ["chest_xray"], read_pediatric),
    _adapter(NABEEL, "nabeelsajid917/covid-19-x-ray-10000-images", _NABEEL_LAYOUT,
             _nabeel_ok, ["dataset"], read_nabeel),
    _adapter(RADIOGRAPHY, "COVID-19 Radiography Database (tawsifurrahman)", _RAD_LAYOUT,
             _radiography_ok, _RAD_WRAPPERS, read_radiography),
    _adapter(TB_RADIOGRAPHY, "Tuberculosis Chest X-ray Database (tawsifurrahman)", _TB_LAYOUT,
             _tb_ok, ["TB_Chest_Radiography_Database"], read_tb_radiography),
    _adapter(MONTGOMERY, "Montgomery/Shenzhen (nikhilpandey360/chest-xray-masks-and-labels)",
             _MS_LAYOUT, _ms_ok, _MS_WRAPPERS, read_montgomery),
]  # fmt: skip

GENERIC_ADAPTER = _adapter(
    GENERIC,
    "any ROOT/<CLASS>/* tree (your own data)",
    _GENERIC_LAYOUT,
    _generic_ok,
    [],
    read_generic,
)
