"""Serve stage: the model behind the API, run in a bounded thread pool with a private temp folder.

One :class:`ModelService` per process holds the loaded :class:`~cxrad.predict.Predictor`.
Requests are admitted up to ``concurrency + queue`` at once; beyond that they get 503 and a
``Retry-After``, so a burst cannot pile up unbounded work. Each upload is written to its own
``tempfile.TemporaryDirectory`` (never a name the client chose) and deleted when the work ends,
even when the client has already been answered with a timeout.

Grad-CAM registers hooks on the shared model, so a heatmap request must not overlap any other
forward pass on it; :class:`ReadWriteLock` lets plain predictions run side by side and gives
heatmap requests the model to themselves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import tempfile
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxrad.errors import CxradError, DecodeError
from cxrad.image.formats import HEAD_BYTES, looks_like_dicom
from cxrad.predict import IMAGE_EXTENSIONS, Predictor
from cxrad.serve.errors import ApiError
from cxrad.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

_PATH_KEYS = ("path", "image")


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def png_data_url(pixels: np.ndarray) -> str:
    """A grey or RGB ``uint8`` array as a ``data:image/png;base64,...`` URL."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header, without decoding pixels; None if unknown.

    Kept to one function so it can switch to ``cxrad.image.read_image`` metadata later.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
        if looks_like_dicom(head, path.name):  # the reader's one DICOM test
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            return (cols, rows) if rows and cols else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError:
        return (2**31, 2**31)
    except Exception:  # the decoder proper gives the reason
        return None


def error_code(e: CxradError) -> str:
    """A stable code for a failed upload: the error's own ``code`` (every read failure has one:
    :class:`~cxrad.errors.ImageReadError`), else ``unreadable`` for a decode error and
    ``cannot_predict`` for the rest (a model without a Grad-CAM layer, say)."""
    code = getattr(e, "code", None)
    if isinstance(code, str) and code:
        return code
    return "unreadable" if isinstance(e, DecodeError) else "cannot_predict"


def _scrub(value: Any, secret: str, public: str) -> Any:
    """``value`` with every occurrence of the temp folder's path replaced by the upload's name."""
    if isinstance(value, str):
        return value.replace(secret, public)
    if isinstance(value, dict):
        return {k: _scrub(v, secret, public) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secret, public) for v in value]
    return value


def public_name(filename: str | None) -> str:
    """The client's file name as shown back to it: the last path part, printable, short."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:200]
    return name or "upload"


class ModelService:
    """The loaded model, its limits and the pool its work runs in."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor = predictor
        self.settings = settings
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="cxrad-serve")
        self._admitted = 0
        self._count_lock = threading.Lock()
        self._model_lock = ReadWriteLock()

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished (running or waiting for a thread)."""
        return self._admitted

    def close(self) -> None:
        """Stop taking work; running work finishes first."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _admit(self) -> None:
        limit = self.settings.concurrency + self.settings.queue
        with self._count_lock:
            if self._admitted >= limit:
                raise ApiError(
                    503,
                    "busy",
                    f"the server is busy ({limit} requests in flight); retry in "
                    f"{self.settings.retry_after_s} s",
                    {"Retry-After": str(self.settings.retry_after_s)},
                )
            self._admitted += 1

    def _release(self, _f: Future[Any] | None = None) -> None:
        with self._count_lock:
            self._admitted -= 1

    async def predict(
        self, data: bytes, filename: str | None, heatmaps: bool = False, preview: bool = False
    ) -> dict[str, Any]:
        """The prediction record for one uploaded file, within the timeout.

        Raises:
            ApiError: 503 when the queue is full, 504 on timeout, 422 for an unreadable image
                or one over the pixel cap.
        """
        self._admit()
        try:
            fut = self._pool.submit(self._work, data, filename, heatmaps, preview)
        except RuntimeError as e:  # the pool is shutting down
            self._release()
            raise ApiError(503, "unavailable", "the server is shutting down") from e
        fut.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.settings.timeout_s)
        except asyncio.TimeoutError as e:  # TimeoutError itself from Python 3.11
            raise ApiError(
                504, "timeout", f"prediction took longer than {self.settings.timeout_s:g} s"
            ) from e

    def _work(
        self, data: bytes, filename: str | None, heatmaps: bool, preview: bool
    ) -> dict[str, Any]:
        name = public_name(filename)
        suffix = Path(name).suffix.lower()
        # The file on disk has a fixed name: only a known image suffix is kept from the client's
        # name (extension-less DICOM still works: it is recognised by content).
        upload = "upload" + (suffix if suffix in IMAGE_EXTENSIONS else "")
        with tempfile.TemporaryDirectory(prefix="cxrad-serve-") as tmp:
            src = Path(tmp) / upload
            src.write_bytes(data)
            self._check_pixels(src)
            try:
                rec = self._predict(src, Path(tmp) / "heatmaps" if heatmaps else None)
                if heatmaps:
                    rec["heatmaps"] = self._embed(rec.get("heatmaps") or {})
                if preview:
                    rec["preview"] = png_data_url(self.predictor.prepare(src))
            except CxradError as e:
                raise ApiError(422, error_code(e), _scrub(str(e), str(src), name)) from e
            rec = _scrub(_scrub(rec, str(src), name), tmp, "")
        for key in _PATH_KEYS:
            if key in rec:
                rec[key] = name
        return rec

    def _predict(self, src: Path, heatmaps_dir: Path | None) -> dict[str, Any]:
        if heatmaps_dir is None:
            with self._model_lock.read():
                return self.predictor.predict(src)
        with self._model_lock.write():
            return self.predictor.predict(src, heatmaps_dir=heatmaps_dir)

    def _check_pixels(self, src: Path) -> None:
        size = image_size(src)
        if size is not None and size[0] * size[1] > self.settings.max_pixels:
            w, h = size
            raise ApiError(
                422,
                "too_many_pixels",
                f"the image is {w}x{h} = {w * h} pixels, over this server's cap of "
                f"{self.settings.max_pixels}; downsample it first",
            )

    @staticmethod
    def _embed(maps: dict[str, Any]) -> dict[str, str]:
        """Heatmap PNG paths (inside the temp folder) as base64 data URLs."""
        out = {}
        for cls, path in maps.items():
            data = Path(path).read_bytes()
            out[cls] = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return out
