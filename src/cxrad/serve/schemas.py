"""Serve stage: the response bodies, as pydantic models, so the OpenAPI schema documents them.

The prediction record is the one :class:`cxrad.predict.Predictor` returns; its model allows extra
keys, so fields other stages add to the record (gate, ood, triage...) pass through untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error response."""

    code: str = Field(description="stable machine-readable code, e.g. 'too_large', 'busy'")
    message: str = Field(description="what went wrong and how to fix it")


class Health(BaseModel):
    """The process is up."""

    status: str = "ok"


class Ready(BaseModel):
    """The model is loaded and requests are being taken."""

    status: str = "ready"
    model: str
    in_flight: int


class PredictRecord(BaseModel):
    """One image's prediction record: the same record ``cxrad predict`` writes.

    ``heatmaps`` maps a finding to a ``data:image/png;base64`` Grad-CAM overlay (with
    ``?heatmaps=true``); ``preview`` is the film as the model saw it (``?preview=true``), at the
    same geometry as the overlays, for clients that cannot show DICOM.
    """

    model_config = ConfigDict(extra="allow")

    status: str
    heatmaps: dict[str, Any] | None = None
    preview: str | None = None


class InputContract(BaseModel):
    """What the server accepts and how it turns it into model pixels."""

    formats: list[str]
    max_upload_bytes: int
    max_pixels: int
    size: int
    mode: str
    model_input: dict[str, Any]


class ModelInfo(BaseModel):
    """The served model: classes, operating points, input contract, model card summary."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    classes: list[str]
    activation: str
    thresholds: dict[str, float]
    operating_points: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    input: InputContract
    model_card: dict[str, Any]
