"""Tiny synthetic copies of each public dataset's layout, so adapter tests run without the data.

Each builder writes a few 16 x 16 images (distinct pixels, so distinct sha1s) under the folder
and file names the real release uses, plus its label files in their documented format, and
returns the dataset root to hand to an adapter. Nothing is copied from ``../shared/data``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SIDE = 16


def tiny_image(path: Path, seed: int | None = None) -> Path:
    """A 16 x 16 grey film at ``path``, PNG or JPEG by suffix; pixels depend on ``seed``."""
    seed = zlib.crc32(str(path.name).encode()) if seed is None else seed
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in {".jpg", ".jpeg"} else "PNG"
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def tiny_images(base: Path, rels: Iterable[str]) -> list[Path]:
    """One :func:`tiny_image` per relative path under ``base``."""
    return [tiny_image(base / rel) for rel in rels]


def pediatric(tmp: Path) -> Path:
    """Kermany ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}/`` (person numbers restart per split)."""
    root = tmp / "kaggle-pediatric-pneumonia"
    tiny_images(
        root / "chest_xray",
        [
            "train/PNEUMONIA/person1_bacteria_1.jpeg",
            "train/PNEUMONIA/person1_bacteria_2.jpeg",
            "train/PNEUMONIA/person3_virus_15.jpeg",
            "train/NORMAL/IM-0115-0001.jpeg",
            "train/NORMAL/NORMAL2-IM-0383-0001.jpeg",
            "test/PNEUMONIA/person1_virus_6.jpeg",
            "test/PNEUMONIA/person100_bacteria_475.jpeg",
            "test/NORMAL/IM-0001-0001.jpeg",
        ],
    )
    return root


def radiography(tmp: Path) -> Path:
    """The Kaggle COVID-19 Radiography Database's older release: class folders of JPEGs."""
    root = tmp / "covid19-radiography"
    base = root / "COVID-19_Radiography_Dataset"
    tiny_images(base, ["COVID/COVID-1.jpg", "COVID/COVID-1000.jpg", "Normal/Normal-10039.jpg"])
    sheets = {  # the release's columns; its file names are upper case where the files are not
        "COVID": [("COVID-1", "https://sirm.org/category/senza-categoria/covid-19/"),
                  ("COVID-1000", "https://github.com/ieee8023/covid-chestxray-dataset")],
        "Normal": [("NORMAL-10039", "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data")],
    }  # fmt: skip
    for name, rows in sheets.items():
        table = pd.DataFrame(rows, columns=["FILE NAME", "URL"])
        table.insert(1, "FORMAT", "PNG")
        table.insert(2, "SIZE", "256*256")
        table.to_excel(base / f"{name}.metadata.xlsx", index=False)
    return root


NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
)
NIH_ROWS = [
    "00000061_012.png,Edema|Pleural_Thickening|Pneumonia,12,61,77,M,AP,3056,2544,0.139,0.139",
    "00000129_000.png,No Finding,0,129,40,F,PA,2992,2991,0.143,0.143",
    "00000284_000.png,Hernia,0,284,70,F,PA,2500,2048,0.168,0.168",
    "00004296_000.png,Atelectasis,0,4296,63,M,PA,2048,2500,0.168,0.168",
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",  # no image: not listed
]


def nih(tmp: Path) -> Path:
    """ChestX-ray14: ``images/`` + gzipped ``Data_Entry_2017_v2020.csv`` + box list."""
    root = tmp / "nih-chestxray14"
    tiny_images(root / "images", [r.split(",")[0] for r in NIH_ROWS[:4]])
    with gzip.open(root / "Data_Entry_2017_v2020.csv.gz", "wt") as f:
        f.write(NIH_HEADER + "\n".join(NIH_ROWS) + "\n")
    with gzip.open(root / "BBox_List_2017.csv.gz", "wt") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        f.write("00004296_000.png,Atelectasis,731.4,505.1,120.5,98.2\n")
    return root


TBX_XML = """<annotation>
\t<filename>{stem}</filename>
\t<size><width>2840</width><height>2827</height></size>
\t<object>
\t\t<name>ObsoletePulmonaryTuberculosis</name>
\t\t<bndbox><xmin>1446</xmin><ymin>250</ymin><xmax>2007</xmax><ymax>1017</ymax></bndbox>
\t</object>
</annotation>
"""


def tbx11k(tmp: Path) -> Path:
    """TBX11K as shipped in ../shared/data: ``imgs/tb/`` + ``annotations/xml/`` (VOC boxes)."""
    root = tmp / "tbx11k"
    for stem in ("tb0003", "tb0004"):
        tiny_image(root / "imgs" / "tb" / f"{stem}.png")
        xml = root / "annotations" / "xml" / f"{stem}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(TBX_XML.format(stem=stem))
    return root


def tbx11k_json(tmp: Path) -> Path:
    """The torchxrayvision TBX11K test tree: ``imgs/{tb,health,sick}`` + COCO json."""
    root = tmp / "TBX11K"
    tiny_images(root / "imgs", ["tb/tb0005.png", "tb/tb0007.png", "health/h0001.png"])
    tiny_image(root / "imgs/sick/s0001.png", seed=1)
    box = {"iscrowd": 0, "area": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "width": 512, "height": 512}
    coco = {
        "categories": [
            {"id": 1, "name": "ActiveTuberculosis", "supercategory": "Tuberculosis"},
            {"id": 2, "name": "ObsoletePulmonaryTuberculosis", "supercategory": "Tuberculosis"},
        ],
        "images": [
            {"id": 1, "file_name": "tb/tb0005.png", "width": 512, "height": 512},
            {"id": 2, "file_name": "tb/tb0007.png", "width": 512, "height": 512},
            {"id": 601, "file_name": "health/h0001.png", "width": 512, "height": 512},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, **box},
            {"id": 2, "image_id": 2, "category_id": 2, **box},
            {"id": 3, "image_id": 2, "category_id": 2, **box},
        ],
    }
    js = root / "annotations" / "json" / "TBX11K_train.json"
    js.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(coco))
    return tmp


IEEE_HEADER = "patientid,offset,sex,age,finding,view,modality,date,location,folder,filename,doi,url,license,clinical_notes,other_notes,\n"  # fmt: skip
IEEE_ROWS = [
    (
        "3",
        "Pneumonia/Viral/SARS",
        "AP",
        "X-ray",
        "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg",
    ),
    ("4", "No Finding", "PA", "X-ray", "F051E018-DAD1-4506-AD43-BE4CA29E960B.jpeg"),
    ("5", "todo", "PA", "X-ray", "08ed451c576ee00935ee178ec85c57_jumbo-1.jpeg"),
    ("6", "Pneumonia/Fungal/Pneumocystis", "L", "X-ray", "pneumocystis-pneumonia-2-L.png"),
    (
        "7",
        "COVID-19, ARDS",
        "AP Supine",
        "X-ray",
        "covid-19-pneumonia-rapidly-progressive-admission.jpg",
    ),
    ("8", "COVID-19", "Axial", "CT", "5083A6B7-8983-472E-A427-570A3E03DDEE.jpeg"),
    ("9", "COVID-19", "PA", "X-ray", "000001-24.jpg"),
    ("9", "COVID-19", "PA", "X-ray", "000001-24.jpg"),  # a repeated line: row 8 (0-based 7)
    ("10", "COVID-19", "PA", "X-ray", "gone.jpg"),  # listed, never shipped
]


def ieee8023(tmp: Path) -> Path:
    """ieee8023/covid-chestxray-dataset: ``metadata.csv`` (with ``folder``) + ``images/``."""
    root = tmp / "ieee8023-covid-chestxray"
    lines = [IEEE_HEADER]
    for pid, finding, view, modality, name in IEEE_ROWS:
        lines.append(f'{pid},0,M,50,"{finding}",{view},{modality},2020,,images,{name},,,,,,\n')
        if name != "gone.jpg":
            tiny_image(root / "images" / name)
    (root / "metadata.csv").write_text("".join(lines))
    return root


def cxnet(tmp: Path) -> Path:
    """COVID-CXNet: BOM-headed ``metadata.csv`` + ``chest_xray_images/covid19/``."""
    root = tmp / "covid-cxnet"
    header = "\ufefffilename,patient_id,sex,age,view,label,pcr_test,location,url\n"
    rows = [
        "264.jpg,11,male,47,,COVID-19,positive,Spain,https://twitter.com/ChestImaging/status/1",
        "265.jpg,11,male,47,PA,COVID-19,positive,Spain,https://twitter.com/ChestImaging/status/1",
        "770.png,12,female,60,L,COVID-19,,Italy,https://www.sirm.org/x",
        "771.png,13,female,61,PA,Pneumonia,,Italy,https://www.sirm.org/y",
        "gone.jpg,14,male,30,PA,COVID-19,,Iran,",
    ]
    (root / "chest_xray_images" / "covid19").mkdir(parents=True)
    (root / "metadata.csv").write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    tiny_images(root / "chest_xray_images" / "covid19", ["264.jpg", "265.jpg", "771.png"])
    tiny_image(root / "chest_xray_images" / "covid19" / "770.png")  # a PNG named .png
    return root
