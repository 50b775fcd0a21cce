"""Data for the input gate: which films play which role, split by patient (train/val/test).

Used by ``scripts/train_gate.py`` (train + val parts) and ``benchmarks/bench_gate.py`` (test
parts only). Every item is a dict with ``label`` (a gate class, or ``"chest_any"`` for a chest
film whose view is unknown: frontal *or* lateral), ``split``, ``source``, ``kind`` and either
``path`` or ``pixels`` (synthetic images).

Sources and roles:
- cxrad manifest (``cxrad ingest ../shared/data`` + ``cxrad split --keep-official``): the ``ok``
  rows are frontal chest films; their ``split`` column is used as is.
- ieee8023 rows ingest excluded as CT (-> ``other_modality``) or lateral view (-> ``lateral``):
  the split of the patient's ok films when there are any, else a patient hash 60/20/20.
- UNIFESP body parts: patient hash 60/20/20; code 3 alone = chest, view from
  ``scripts/unifesp_chest_views.csv`` (labelled by eye, see the card); other codes = not_chest;
  chest + another code = ``chest_any`` in training, left out of measurement.
- synthetic non-radiographs: scikit-image sample photos (split by photo) and documents,
  screenshots and charts drawn here (split by seed; test ones use other fonts).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HERE = Path(__file__).resolve().parent
FONTS = Path("/usr/share/fonts/truetype")


def hash_split(key: str, seed: int = 0) -> str:
    """60/20/20 train/val/test from a stable hash of ``key`` (a patient id)."""
    h = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 60 else "val" if h < 80 else "test"


def manifest_items(work: Path) -> list[dict]:
    """Frontal chest films (ok rows) and the excluded ieee8023 CT and lateral rows."""
    df = pd.read_parquet(work / "manifest.parquet")
    ok = df[df["status"] == "ok"]
    items = [
        {
            "path": p,
            "label": "frontal",
            "split": s,
            "source": src,
            "kind": "frontal",
            "patient": pid,
        }
        for p, s, src, pid in zip(
            ok["path"], ok["split"], ok["source"], ok["patient_id"], strict=True
        )
    ]
    split_of = dict(
        zip(ok["patient_id"].dropna(), ok.loc[ok["patient_id"].notna(), "split"], strict=True)
    )
    roles = {
        "excluded: CT": ("other_modality", "ct"),
        "excluded: lateral view": ("lateral", "lateral"),
    }
    ex = df[(df["source"] == "ieee8023") & df["status"].isin(list(roles))]
    for p, st, pid in zip(ex["path"], ex["status"], ex["patient_id"], strict=True):
        if not Path(p).is_file():
            continue
        label, kind = roles[st]
        split = split_of.get(pid) or hash_split(str(pid))
        items.append(
            {
                "path": p,
                "label": label,
                "split": split,
                "source": "ieee8023",
                "kind": kind,
                "patient": pid,
            }
        )
    return items


def unifesp_items(root: Path = SHARED / "unifesp-bodypart" / "x_ray") -> list[dict]:
    """UNIFESP radiographs: chest by view label, other body parts as not_chest."""
    with open(HERE / "unifesp_chest_views.csv") as f:
        views = {r["SOPInstanceUID"]: r["view"] for r in csv.DictReader(f)}
    items = []
    with open(root / "train_df.csv") as f:
        for r in csv.DictReader(f):
            codes = r["Target"].split()
            if "3" in codes and len(codes) == 1:
                view = views.get(r["SOPInstanceUID"], "unsure")
                label = {"frontal": "frontal", "lateral": "lateral"}.get(view, "chest_any")
                kind = f"chest_{view}"
            elif "3" in codes:
                label, kind = "chest_any", "chest_mixed"
            else:
                label, kind = "not_chest", f"part_{'+'.join(codes)}"
            items.append(
                {
                    "path": str(root / r["image_path"].removeprefix("./")),
                    "label": label,
                    "split": hash_split("unifesp:" + r["PatientID"]),
                    "source": "unifesp",
                    "kind": kind,
                    "patient": "unifesp:" + r["PatientID"],
                }
            )
    return items


def pydicom_items(root: Path = SHARED / "fixtures" / "pydicom-data") -> list[dict]:
    """Decodable CT/MR/US/NM DICOM pixels as other_modality (train only; tags catch them)."""
    return [
        {
            "path": str(p),
            "label": "other_modality",
            "split": "train",
            "source": "pydicom",
            "kind": "dicom",
            "patient": p.stem,
        }
        for p in sorted(root.glob("*.dcm"))
        if p.stem.split("_")[0]
        in {
            "693",
            "MR2",
            "eCT",
            "JPEG2000",
            "MR-SIEMENS-DICOM-WithOverlays",
            "emri",
            "gdcm-US-ALOKA-16",
            "OBXXXX1A",
            "US1",
            "explicit",
        }
    ]


# --- synthetic non-radiographs --------------------------------------------------------------

SKIMAGE_TEST = (
    "astronaut",
    "coffee",
    "coins",
    "page",
    "rocket",
    "clock_motion",
    "motorcycle_right",
)


def skimage_photos() -> dict[str, np.ndarray]:
    """The sample photos scikit-image ships (no download), as grey uint8."""
    import skimage.data as d

    out = {}
    for p in sorted(Path(d.data_dir).glob("*")):
        if p.suffix.lower() not in (".png", ".jpg", ".gif"):
            continue
        with Image.open(p) as im:
            out[p.stem] = np.asarray(im.convert("L"))
    faces = np.load(Path(d.data_dir) / "lfw_subset.npy")
    for i in range(0, len(faces), 10):
        out[f"lfw{i}"] = (faces[i] * 255).astype(np.uint8)
    return out


def _fonts(split: str) -> list[Path]:
    fam = "liberation" if split == "test" else "dejavu"
    return sorted((FONTS / fam).glob("*.ttf"))


def _words(rng: np.random.Generator, n: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz     0123456789.,:"
    return "".join(rng.choice(list(letters), n))


def draw_document(rng: np.random.Generator, split: str) -> np.ndarray:
    """A page of text, a table or a form: black on light, in a random font and size."""
    w, h = int(rng.integers(300, 900)), int(rng.integers(300, 1100))
    bg = int(rng.integers(200, 256))
    im = Image.new("L", (w, h), bg)
    d = ImageDraw.Draw(im)
    font = ImageFont.truetype(str(rng.choice(_fonts(split))), int(rng.integers(10, 28)))
    y = int(rng.integers(5, 40))
    while y < h - 20:
        if rng.random() < 0.15:
            d.line(
                [(10, y), (w - 10, y)],
                fill=int(rng.integers(0, 120)),
                width=int(rng.integers(1, 3)),
            )
        else:
            d.text(
                (int(rng.integers(5, 40)), y),
                _words(rng, int(rng.integers(10, 80))),
                fill=int(rng.integers(0, 90)),
                font=font,
            )
        y += int(font.size * rng.uniform(1.2, 2.2))
    return np.asarray(im)


def draw_screenshot(rng: np.random.Generator, split: str) -> np.ndarray:
    """A window-like image: title bar, panels, buttons, text (light or dark theme)."""
    w, h = int(rng.integers(400, 1200)), int(rng.integers(300, 900))
    dark = rng.random() < 0.4
    im = Image.new("L", (w, h), int(rng.integers(20, 60) if dark else rng.integers(200, 250)))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w, int(rng.integers(20, 40))], fill=int(rng.integers(60, 200)))
    font = ImageFont.truetype(str(rng.choice(_fonts(split))), int(rng.integers(10, 20)))
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(40, h - 30))
        x1, y1 = x0 + int(rng.integers(40, w // 2)), y0 + int(rng.integers(15, h // 3))
        d.rectangle(
            [x0, y0, x1, y1], fill=int(rng.integers(0, 256)), outline=int(rng.integers(0, 256))
        )
        d.text(
            (x0 + 4, y0 + 2),
            _words(rng, int(rng.integers(5, 30))),
            fill=255 if dark else 0,
            font=font,
        )
    return np.asarray(im)


def draw_chart(rng: np.random.Generator, split: str) -> np.ndarray:
    """A bar or line chart with axes, as a figure in a paper or slide."""
    w, h = int(rng.integers(300, 800)), int(rng.integers(250, 600))
    im = Image.new("L", (w, h), int(rng.integers(220, 256)))
    d = ImageDraw.Draw(im)
    d.line([(40, 10), (40, h - 30), (w - 10, h - 30)], fill=0, width=2)
    n = int(rng.integers(4, 20))
    vals = rng.uniform(0.1, 1.0, n)
    step = (w - 60) / n
    if rng.random() < 0.5:
        for i, v in enumerate(vals):
            x = 45 + i * step
            d.rectangle(
                [x, h - 30 - v * (h - 50), x + step * 0.7, h - 31], fill=int(rng.integers(0, 180))
            )
    else:
        pts = [(45 + i * step, h - 30 - v * (h - 50)) for i, v in enumerate(vals)]
        d.line(pts, fill=int(rng.integers(0, 120)), width=int(rng.integers(1, 4)))
    font = ImageFont.truetype(str(rng.choice(_fonts(split))), 12)
    d.text((50, 5), _words(rng, 20), fill=0, font=font)
    return np.asarray(im)


def photo_crop(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """A random crop (50-100 %) of a photo, possibly mirrored and re-contrasted."""
    h, w = photo.shape
    ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    a = photo[y : y + ch, x : x + cw].astype(np.float32)
    if rng.random() < 0.5:
        a = a[:, ::-1]
    a = np.clip((a - a.mean()) * rng.uniform(0.7, 1.3) + a.mean() + rng.uniform(-20, 20), 0, 255)
    if min(a.shape) < 64:
        a = np.asarray(
            Image.fromarray(a.astype(np.uint8)).resize(
                (max(64, a.shape[1] * 3), max(64, a.shape[0] * 3))
            )
        )
    return np.ascontiguousarray(a.astype(np.uint8))


def synthetic_items(split: str, n: int, seed: int) -> list[dict]:
    """``n`` synthetic non-radiographs for ``split``: photo crops, documents, screenshots, charts."""
    rng = np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2}[split]])
    photos = {k: v for k, v in skimage_photos().items() if (k in SKIMAGE_TEST) == (split == "test")}
    names = sorted(photos)
    makers = ("photo", "document", "screenshot", "chart")
    items = []
    for i in range(n):
        kind = makers[i % len(makers)]
        if kind == "photo":
            name = names[int(rng.integers(len(names)))]
            px = photo_crop(rng, photos[name])
        else:
            px = {"document": draw_document, "screenshot": draw_screenshot, "chart": draw_chart}[
                kind
            ](rng, split)
        if rng.random() < 0.3:  # JPEG artefacts, as a saved screenshot would have
            buf = io.BytesIO()
            Image.fromarray(px).save(buf, "JPEG", quality=int(rng.integers(40, 95)))
            px = np.asarray(Image.open(buf).convert("L"))
        items.append(
            {
                "pixels": px,
                "label": "not_radiograph",
                "split": split,
                "source": "synthetic",
                "kind": kind,
                "patient": None,
            }
        )
    return items


def all_items(work: Path) -> list[dict]:
    """Every real item (manifest + ieee8023 excluded + UNIFESP + pydicom-data)."""
    return manifest_items(work) + unifesp_items() + pydicom_items()


def summary(items: list[dict]) -> str:
    """Counts by split, source and label, for the log."""
    df = pd.DataFrame([{k: it[k] for k in ("split", "source", "label")} for it in items])
    return json.dumps(
        df.groupby(["split", "source", "label"]).size().rename("n").reset_index().to_dict("records")
    )
