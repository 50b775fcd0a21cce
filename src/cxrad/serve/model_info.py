"""Serve stage: what ``GET /v1/model`` says about the served run."""

from __future__ import annotations

from typing import Any

from cxrad.predict import Predictor
from cxrad.serve.settings import ServeSettings

FORMATS = ["png", "jpeg", "dicom"]
INTENDED_USE = "Research use only; not a medical device; not for diagnosis or patient care."


def model_info(predictor: Predictor, settings: ServeSettings) -> dict[str, Any]:
    """Classes, thresholds and operating points, input contract and a model card summary."""
    config = predictor.config.to_dict()  # the run contract (RunConfig), as JSON
    val = config.get("val_metrics") or {}
    data = config.get("data") or {}
    return {
        "name": predictor.name,
        "classes": list(predictor.classes),
        "activation": str(config.get("activation", "sigmoid")),
        "thresholds": {
            c: float(t) for c, t in zip(predictor.classes, predictor.thresholds, strict=True)
        },
        "operating_points": config.get("operating_points") or None,
        "decision": config.get("decision"),
        "input": {
            "formats": FORMATS,
            "max_upload_bytes": settings.max_upload_bytes,
            "max_pixels": settings.max_pixels,
            "size": predictor.preprocess.size,
            "mode": predictor.preprocess.mode,
            "crop": predictor.preprocess.crop,
            "normalise": predictor.preprocess.normalise,
            "model_input": dict(config.get("input") or {}),
        },
        "model_card": {
            "intended_use": INTENDED_USE,
            "architecture": (config.get("model") or {}).get("name"),
            "task": config.get("task"),
            **predictor.config.provenance(),  # what every prediction record's `run` says
            "n_train": data.get("n_train"),
            "n_val": data.get("n_val"),
            "val_macro_auroc": val.get("macro_auroc"),
            "val_auroc": val.get("auroc"),
        },
    }
