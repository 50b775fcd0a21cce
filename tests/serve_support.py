"""Support for the serve tests: a tiny run, synthetic films as upload bytes, a live server."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import torch
import uvicorn
from PIL import Image

from cxrad.models import create_model, save_run
from cxrad.serve import ServeSettings, create_app
from helpers import make_dicom, synthetic_xray

CLASSES = ["EFFUSION", "NORMAL", "PNEUMONIA"]
SIZE = 128  # the seed FCN's smallest input
# EFFUSION is always positive (threshold 0), the others never: heatmaps are predictable.
THRESHOLDS = {"EFFUSION": 0.0, "NORMAL": 1.0, "PNEUMONIA": 1.0}


def dicom_without_pixels(tmp: Path) -> bytes:
    """A DICOM header with no pixel data (as a structured report is): not an image."""
    ds = pydicom.dcmread(make_dicom(tmp / "sr.dcm", np.zeros((4, 4), np.uint16), 12))
    del ds.PixelData
    ds.save_as(tmp / "sr.dcm")
    return (tmp / "sr.dcm").read_bytes()


def make_run(path: Path) -> Path:
    """A tiny untrained seed-FCN run (about 1 MB, loads in milliseconds)."""
    torch.manual_seed(0)
    model = create_model("seed-fcn", num_classes=len(CLASSES))
    config = {
        "model": {"name": "seed-fcn", "kwargs": {}},
        "classes": CLASSES,
        "preprocess": {"size": SIZE, "mode": "letterbox"},
        "thresholds": THRESHOLDS,
        "val_metrics": {"macro_auroc": 0.5},
    }
    return save_run(path, model, config)


def film(kind: str = "PNEUMONIA", seed: int = 0, side: int = 96) -> np.ndarray:
    """A synthetic chest-like ``uint8`` film."""
    return synthetic_xray(kind, np.random.default_rng(seed), side=side)


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """Image bytes as a client would upload them."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(settings: ServeSettings) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 in a background thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300  # a busy shared CPU can take minutes to load a model
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
