"""Test helpers shared by every stage: a complete tiny WORK folder built without real data.

``make_tiny_work(tmp_path)`` writes synthetic X-ray-like PNGs whose class is visible, a valid
manifest with ``dup_group`` and ``split``, and a preprocessed cache, in well under 2 s.

Classes (each image has exactly one, but some other columns are NaN = unannotated):

- NORMAL: a plain chest-like image (two dark lung fields in a bright body, noise);
- PNEUMONIA: the same plus a bright blob at a random spot inside one lung;
- EFFUSION: the same plus a bright band across the bottom of both lungs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cxrad.manifest import make_rows, write_manifest
from cxrad.preprocess import PreprocessConfig, preprocess_work

TINY_CLASSES = ("NORMAL", "PNEUMONIA", "EFFUSION")
IMAGE_SIDE = 64


def synthetic_xray(kind: str, rng: np.random.Generator, side: int = IMAGE_SIDE) -> np.ndarray:
    """A ``side x side`` uint8 chest-like image; ``kind`` is one of :data:`TINY_CLASSES`."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    img = np.full((side, side), 0.55, np.float32)
    for cx in (0.3, 0.7):  # two dark lung fields
        lung = ((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.32) ** 2 < 1
        img[lung] = 0.2
    if kind == "PNEUMONIA":
        cx = rng.choice([0.3, 0.7]) + rng.uniform(-0.06, 0.06)
        cy = rng.uniform(0.3, 0.65)
        blob = ((xx - cx) ** 2 + (yy - cy) ** 2) < 0.09**2
        img[blob] = 0.85
    elif kind == "EFFUSION":
        band = (yy > 0.68) & (yy < 0.8) & (np.abs(xx - 0.5) < 0.38)
        img[band] = 0.8
    elif kind != "NORMAL":
        raise ValueError(f"unknown tiny class {kind!r}; expected one of {TINY_CLASSES}")
    img += rng.normal(0, 0.04, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _split_of(i: int, n: int) -> str:
    """~60/20/20 by position within a class; at least one of each when n >= 3."""
    n_train = max(1, round(0.6 * n))
    n_val = max(1, round(0.2 * n))
    if n_train + n_val >= n:
        n_train = n - 2
    return "train" if i < n_train else "val" if i < n_train + n_val else "test"


def make_tiny_work(
    tmp_path: Path,
    n_per_class: int = 12,
    size: int = 32,
    seed: int = 0,
    preprocess: bool = True,
) -> Path:
    """Build ``tmp_path / "work"``: images, manifest (with splits) and the cache for ``size``.

    Labels: the image's class is 1, the other two tiny classes are 0, except every 4th image,
    where one other class is NaN (not annotated). The other 14 classes are NaN throughout.
    Every split holds every class. Patient ids are distinct.

    Args:
        tmp_path: pytest's ``tmp_path`` (or any empty folder).
        n_per_class: images per class (>= 3).
        size: the cache's image side (``PreprocessConfig(size=size)``).
        seed: controls pixels (blob positions, noise).
        preprocess: also build the cache (``WORK/cache/<key>``).

    Returns:
        The work folder.
    """
    if n_per_class < 3:
        raise ValueError("n_per_class must be >= 3 so that every split holds every class")
    rng = np.random.default_rng(seed)
    work = Path(tmp_path) / "work"
    images = Path(tmp_path) / "tiny-images"
    images.mkdir(parents=True, exist_ok=True)
    records, splits = [], []
    k = 0
    for cls in TINY_CLASSES:
        for i in range(n_per_class):
            pixels = synthetic_xray(cls, rng)
            path = images / cls / f"img{k:04d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(path, compress_level=1)
            labels = {c: float(c == cls) for c in TINY_CLASSES}
            if k % 4 == 3:
                other = [c for c in TINY_CLASSES if c != cls][k % 2]
                labels[other] = float("nan")
            records.append(
                {
                    "image_id": f"tiny/{cls}/img{k:04d}.png",
                    "path": str(path.resolve()),
                    "source": "tiny",
                    "patient_id": f"tiny:p{k:04d}",
                    "view": "PA",
                    **labels,
                    "label_source": f"folder:{cls}",
                    "raw_label": cls,
                    "meta": "{}",
                    "sha1": hashlib.sha1(path.read_bytes()).hexdigest(),
                    "status": "ok",
                }
            )
            splits.append(_split_of(i, n_per_class))
            k += 1
    df = make_rows(records)
    df["dup_group"] = pd.array(np.arange(len(df)), dtype="Int64")
    df["split"] = pd.array(splits, dtype="string")
    write_manifest(df, work)
    if preprocess:
        preprocess_work(work, PreprocessConfig(size=size), workers=1)
    return work


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    **extra: object,
) -> Path:
    """Write an uncompressed single-frame DICOM with the given pixel values and attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@contextlib.contextmanager
def read_only_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``folder``, made read-only for the block; as root (where chmod binds nobody) it is faked.

    The fake denies what a read-only folder denies: ``os.access`` for writing it, and
    ``mkdir`` of anything inside it (``PermissionError``, errno 13), so the refusal paths run in
    CI, which runs as root, and not only on a developer's machine.
    """
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            _fake_read_only(folder.resolve(), monkeypatch)
        yield folder
    finally:
        folder.chmod(0o755)


def _fake_read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    access, mkdir = os.access, Path.mkdir

    def denied(path: object) -> bool:
        return Path(str(path)).resolve() == folder

    def fake_access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        return not (denied(path) and mode & os.W_OK) and access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    def fake_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if folder in Path(self).resolve().parents:
            raise PermissionError(13, "Permission denied", str(self))
        mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", fake_access)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)
