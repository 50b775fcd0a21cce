"""Stage 9, predict: :class:`Predictor`, any chest X-ray in, findings (and heatmaps) out.

Images go through the same ``cxrad.preprocess.prepare`` as the training cache, with the
preprocessing the run recorded, so a model sees at prediction exactly what it saw in
training. The run's :class:`~cxrad.models.DecisionStep` turns logits into the record's
decisions. Files stream through in batches: memory stays constant however many there are, and
a file that cannot be read becomes a record with ``status = "error"``, a ``code`` and a
``reason`` instead of stopping the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cxrad.errors import CxradError, ImageReadError, PredictError
from cxrad.gate import GateResult, InputGate
from cxrad.labels import NORMAL
from cxrad.models import Classifier, DecisionStep, RunConfig, load_run, resolve_run
from cxrad.models.oneclass import is_one_class
from cxrad.models.ood import GaussianOOD, load_ood, ood_records
from cxrad.options import suggest
from cxrad.predict.anomaly import anomaly_heatmaps
from cxrad.predict.backends import OnnxBackend, TorchBackend
from cxrad.predict.heatmap import grad_cam, write_heatmaps
from cxrad.predict.inputs import (
    InputFile,
    array_to_unit,
    check_output_dir,
    find_inputs,
    unique_stem,
)
from cxrad.preprocess import prepare
from cxrad.progress import Progress

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
NON_FINITE = (
    "non-finite output: the model produced NaN or Infinity for this image; its weights may be "
    "damaged (retrain, or check model.safetensors)"
)
THRESHOLD_MODES = ("val", "fixed")
Item = str | os.PathLike[str] | np.ndarray | Image.Image


def _check(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PredictError(
            f"unknown {name} {value!r}; expected one of {', '.join(choices)}.{suggest(value, choices)}"
        )


class Predictor:
    """Findings, a triage decision and Grad-CAM heatmaps for chest X-rays.

    Args:
        model: the trained classifier (also used for Grad-CAM with the ONNX backend); None for
            a predictor built from an ``.onnx`` file alone (no heatmaps then).
        config: the run's :class:`~cxrad.models.RunConfig` (an old-style dict is accepted).
        backend: ``"torch"`` (eager) or ``"onnx"`` (ONNX Runtime, needs ``onnx_path``).
        device: torch device for the torch backend and Grad-CAM.
        batch_size: images per forward pass in :meth:`predict_many`.
        onnx_path: the exported model for the ONNX backend.
        threshold_mode: ``"val"`` uses each class's operating point from the run; ``"fixed"``
            uses ``threshold`` for every class.
        threshold: the cut-off in ``"fixed"`` mode.
        workers: threads decoding files while the model runs.
        gate: the input gate run on every image before the model (``True``: the shipped
            :meth:`InputGate.default`); a rejected image gets ``status = "rejected"``, the
            gate's reason ``code`` and no findings. Off (None) by default in the library;
            ``cxrad predict`` turns it on unless ``--no-gate``.
        ood: the run's out-of-distribution statistics (:func:`~cxrad.models.ood.load_ood`);
            None gives every record ``"ood": None``.

    Example:
        >>> p = Predictor.from_run("default")  # doctest: +SKIP
        >>> p.predict("chest.png")["findings"]  # doctest: +SKIP
        [{'class': 'EFFUSION', 'probability': 0.91, 'threshold': 0.62}]
    """

    def __init__(
        self,
        model: Classifier | None,
        config: RunConfig | dict[str, Any],
        backend: str = "torch",
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        onnx_path: str | Path | None = None,
        threshold_mode: str = "val",
        threshold: float = 0.5,
        workers: int = 2,
        gate: InputGate | bool | None = None,
        ood: GaussianOOD | None = None,
    ) -> None:
        _check("backend", backend, BACKENDS)
        _check("threshold mode", threshold_mode, THRESHOLD_MODES)
        if batch_size < 1:
            raise PredictError(f"batch size must be at least 1, got {batch_size}")
        if not isinstance(config, RunConfig):
            contract = {"input": model.spec.contract()} if model is not None else {}
            config = RunConfig.from_dict({**contract, **config})
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(device).eval() if model is not None else None
        self.batch_size = int(batch_size)
        self.workers = max(1, int(workers))
        self.classes: list[str] = list(self.config.classes)
        self.name: str = self.config.name
        self.preprocess = self.config.preprocess.cache_config()
        fixed = [float(threshold)] * len(self.classes) if threshold_mode == "fixed" else None
        self.step = DecisionStep(self.config, thresholds=fixed)
        self.thresholds = self.step.thresholds
        if backend == "onnx":
            if onnx_path is None:
                raise PredictError("the onnx backend needs an exported model; run `cxrad export`")
            self.engine: TorchBackend | OnnxBackend = OnnxBackend(onnx_path)
        elif self.model is None:
            raise PredictError("the torch backend needs the model; use Predictor.from_run")
        else:
            self.engine = TorchBackend(self.model, self.device)
        self.backend = backend
        self.gate = InputGate.default() if gate is True else (gate or None)
        self.ood = ood

    @classmethod
    def from_run(
        cls,
        run: str | Path = "default",
        backend: str = "torch",
        device: str = "cpu",
        batch_size: int = 16,
        **kwargs: Any,
    ) -> Predictor:
        """Load a run folder (or ``"default"``, the shipped model) for prediction.

        With ``backend="onnx"`` the run's ``model.onnx`` is used when it matches the weights;
        otherwise the model is exported first (into the run, or a cache folder when the run
        is read-only; see :func:`cxrad.predict.export.ensure_onnx`). The decisions then come
        from the config embedded in the ``.onnx`` file, which is the run's.
        """
        _check("backend", backend, BACKENDS)
        path = resolve_run(run)
        model, config = load_run(path, device=device)
        kwargs.setdefault("ood", load_ood(path, config))
        onnx_path = None
        if backend == "onnx":
            from cxrad.predict.export import ensure_onnx, onnx_run_config

            onnx_path = ensure_onnx(path)
            config = onnx_run_config(onnx_path)
        return cls(model, config, backend, device, batch_size, onnx_path=onnx_path, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, batch_size: int = 16, **kwargs: Any) -> Predictor:
        """A predictor from an exported ``.onnx`` file alone: its metadata holds the run config.

        Heatmaps need the torch model, so this predictor has none.
        """
        from cxrad.predict.export import onnx_run_config

        config = onnx_run_config(Path(path))
        return cls(None, config, "onnx", "cpu", batch_size, onnx_path=path, **kwargs)

    # -- preparing -------------------------------------------------------------------------

    def prepare(self, item: Item) -> np.ndarray:
        """The ``(S, S)`` uint8 image the model sees, from a path, an array or a PIL image.

        Arrays may be 2-D grey of any dtype or ``H×W×3``/``H×W×4`` colour. ``uint8`` and float
        arrays in [0, 1] keep their values; other integer or float ranges (raw 12/16-bit
        detector values, say) are scaled from their own minimum and maximum.

        Raises:
            DecodeError: the file cannot be read as an image.
            PredictError: an array or object of a kind that is not an image.
        """
        if isinstance(item, np.ndarray):
            return prepare(array_to_unit(item), self.preprocess)
        if isinstance(item, (Image.Image, str, os.PathLike)):
            return prepare(item, self.preprocess)
        raise PredictError(
            f"cannot predict on a {type(item).__name__}; pass a path, an array or a PIL image"
        )

    # -- predicting ------------------------------------------------------------------------

    def _records(
        self, paths: list[str], images: list[np.ndarray]
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        x = np.stack(images)[:, None].astype(np.float32) / 255.0
        logits = np.asarray(self.engine(x))
        decided = self.step.records(self.step(logits))
        oods = ood_records(self.ood, self.model, x, self.device) or [None] * len(paths)
        recs = []
        for path, row, d, o in zip(paths, logits, decided, oods, strict=True):
            if not np.isfinite(row).all():  # damaged weights or input: never an "ok" record
                recs.append(self._error(path, NON_FINITE, code="non_finite_output"))
            else:
                recs.append({**self._head(path, "ok"), **d, "ood": o})
        return recs, x

    def _head(
        self, path: str, status: str, code: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        return {
            "image": path,
            "path": path,  # alias of "image", kept for callers written before the record seam
            "status": status,
            "code": code,
            "reason": reason,
            "gate": None,
            "ood": None,
            "run": self.config.provenance(),  # a fresh dict: each record owns its copy
        }

    def _error(self, path: str, reason: str, code: str = "unreadable") -> dict[str, Any]:
        return {
            **self._head(path, "error", code, reason),
            "normal": None,
            "triage": None,
            "findings": [],
            "probabilities": {},
            "positive": [],
            "abnormal_score": None,
        }

    def explain(self, item: Item, classes: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Grad-CAM maps ``(S, S)`` for ``classes`` (default: the positive findings).

        The maps are at the model's input geometry: the prepared image :meth:`prepare` returns.
        """
        model = self._torch_model()
        image = self.prepare(item)
        x = torch.from_numpy(image[None, None].astype(np.float32) / 255.0).to(self.device)
        if classes is None:
            (rec,), _ = self._records(["<array>"], [image])
            classes = rec["positive"]
        idx = [self._class_index(c) for c in classes if c != NORMAL]
        (maps,) = grad_cam(model, x, [idx])
        return {self.classes[i]: m for i, m in maps.items()}

    def _torch_model(self) -> Classifier:
        if self.model is None:
            raise PredictError(
                "heatmaps need the torch model; this predictor was built from an .onnx file "
                "alone, load the run with Predictor.from_run instead"
            )
        return self.model

    def _class_index(self, cls: str) -> int:
        if cls not in self.classes:
            raise PredictError(
                f"class {cls!r} is not an output of this model; it has {', '.join(self.classes)}"
                f".{suggest(cls, self.classes)}"
            )
        return self.classes.index(cls)

    def predict(self, item: Item, heatmaps_dir: str | Path | None = None) -> dict[str, Any]:
        """One record for one image: a path, a 2-D/colour array or a PIL image.

        Unlike :meth:`predict_many`, an unreadable file raises (``DecodeError``).
        """
        path = str(item) if isinstance(item, (str, os.PathLike)) else "<array>"
        loaded = self._gated(item)
        if isinstance(loaded, GateResult):
            return self._rejected(path, loaded)
        image = loaded.image
        (rec,), x = self._records([path], [image])
        rec["gate"] = loaded.gate
        if heatmaps_dir is not None:
            stem = Path(item).stem if isinstance(item, (str, os.PathLike)) else "array"
            self._heatmaps([rec], x, [image], [Path(heatmaps_dir) / stem])
        return rec

    def _heatmaps(
        self, recs: list[dict[str, Any]], x: np.ndarray, images: list[np.ndarray], stems: list[Path]
    ) -> None:
        if is_one_class(self.config):
            return anomaly_heatmaps(self.model, recs, x, images, stems, self.device)
        write_heatmaps(self._torch_model(), recs, x, images, stems, self.classes, self.device)

    def _gated(self, item: Item) -> _Passed | GateResult:
        """Model pixels and the gate's record, or the gate's verdict when it rejects."""
        if self.gate is None:
            return _Passed(self.prepare(item), None)
        if isinstance(item, (str, os.PathLike)):
            verdict, pixels = self.gate.check_file(item)
        else:
            arr = array_to_unit(item) if isinstance(item, np.ndarray) else item
            verdict, pixels = self.gate.check_image(arr)
        if not verdict.passed:
            return verdict
        return _Passed(prepare(pixels, self.preprocess), verdict.to_record())

    def _rejected(self, path: str, verdict: GateResult) -> dict[str, Any]:
        rec = self._error(path, verdict.reason or "", code=verdict.code or "rejected")
        return {**rec, "status": "rejected", "gate": verdict.to_record()}

    def _load(self, f: InputFile) -> _Passed | GateResult | tuple[str, str]:
        """The prepared image, the gate's rejection, or ``(code, reason)`` when unusable."""
        if f.skipped:
            return "skipped", f"skipped: {f.path}: {f.skipped}"
        try:
            return self._gated(f.path)
        except ImageReadError as e:
            return e.code, str(e)
        except CxradError as e:
            return str(getattr(e, "code", None) or "unreadable"), str(e)
        except Exception as e:  # a 100,000-file run must survive any one bad file
            logger.debug("unexpected failure reading %s", f.path, exc_info=True)
            return "unreadable", f"{type(e).__name__}: {e}"

    def predict_many(
        self,
        sources: Iterable[str | os.PathLike[str] | InputFile],
        heatmaps_dir: str | Path | None = None,
        progress: Progress | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream one record per image, in input order, a batch at a time.

        Args:
            sources: files, folders (searched recursively) and glob patterns, as for
                :func:`~cxrad.predict.inputs.find_inputs`; or already expanded ``InputFile``s.
            heatmaps_dir: when given, Grad-CAM overlays (``.png``) and raw maps (``.npy``) for
                each positive finding (NORMAL excepted) are written here as
                ``<relative path>/<stem>__<CLASS>.png``, and their paths go in each record's
                ``heatmaps``. Input folders are never written to.
            progress: called as ``progress(done, total)`` after each batch.

        Raises:
            PredictError: a source matches no image (before anything is read).
        """
        sources = list(sources)
        hdir = Path(heatmaps_dir) if heatmaps_dir is not None else None
        if sources and all(isinstance(s, InputFile) for s in sources):
            files: list[InputFile] = sources  # type: ignore[assignment]
        else:
            raw = [s.path if isinstance(s, InputFile) else s for s in sources]
            if hdir is not None:
                check_output_dir(hdir, raw)
            files = find_inputs(raw)
        total = len(files)
        used: set[Path] = set()
        done = 0
        if progress:
            progress(0, total)
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, total, self.batch_size):
                batch = files[start : start + self.batch_size]
                loaded = list(pool.map(self._load, batch))
                ok = [i for i, v in enumerate(loaded) if isinstance(v, _Passed)]
                out: list[dict[str, Any]] = [
                    self._error(str(f.path), v[1], v[0])
                    if isinstance(v, tuple)
                    else self._rejected(str(f.path), v)
                    if isinstance(v, GateResult)
                    else {}
                    for f, v in zip(batch, loaded, strict=True)
                ]
                if ok:
                    images = [loaded[i].image for i in ok]  # type: ignore[union-attr]
                    recs, x = self._records([str(batch[i].path) for i in ok], images)  # type: ignore[arg-type]
                    if hdir is not None:
                        stems = [unique_stem(hdir, batch[i], used) for i in ok]
                        self._heatmaps(recs, x, images, stems)  # type: ignore[arg-type]
                    for i, r in zip(ok, recs, strict=True):
                        r["gate"] = loaded[i].gate  # type: ignore[union-attr]
                        out[i] = r
                for r in out:
                    if r["status"] != "ok":
                        logger.debug("%s: %s", r["image"], r["reason"])
                        if hdir is not None:
                            r["heatmaps"] = {}
                    yield r
                done += len(batch)
                if progress:
                    progress(done, total)


@dataclass(frozen=True)
class _Passed:
    """An image ready for the model, and the gate's record (None when no gate ran)."""

    image: np.ndarray
    gate: dict[str, Any] | None
