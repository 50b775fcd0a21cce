"""Serve stage: the HTTP routes: ``/v1/predict``, ``/v1/model``, health checks, the web page."""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import HTMLResponse

from cxrad.serve.engine import ModelService
from cxrad.serve.errors import ApiError
from cxrad.serve.model_info import model_info
from cxrad.serve.schemas import ErrorBody, Health, ModelInfo, PredictRecord, Ready

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (401, 413, 422, 500, 503, 504)
}


def service(request: Request) -> ModelService:
    """The loaded model; 503 until the lifespan has loaded it."""
    svc = getattr(request.app.state, "service", None)
    if svc is None:
        raise ApiError(503, "not_ready", "the model is still loading; retry shortly")
    return svc


def check_token(request: Request) -> None:
    """With a token configured, ``Authorization: Bearer <token>`` must match it."""
    token = request.app.state.settings.token
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token):
        raise ApiError(
            401,
            "unauthorized",
            "this server needs a bearer token: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )


api = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Depends(check_token)], responses=ERRORS)
health = APIRouter(tags=["health"])
page = APIRouter(include_in_schema=False)


@api.post("/predict", response_model=PredictRecord, response_model_exclude_none=False)
async def predict(
    svc: Annotated[ModelService, Depends(service)],
    file: Annotated[UploadFile, File(description="a PNG, JPEG or DICOM chest X-ray")],
    heatmaps: Annotated[
        bool, Query(description="add a Grad-CAM overlay (base64 PNG) per positive finding")
    ] = False,
    preview: Annotated[
        bool, Query(description="add the film as the model saw it (base64 PNG)")
    ] = False,
) -> dict[str, Any]:
    """Findings, triage and (optionally) heatmaps for one uploaded chest X-ray."""
    limit = svc.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"the upload is over this server's limit of {limit} bytes")
    if not data:
        raise ApiError(422, "empty_file", "the uploaded file is empty")
    return await svc.predict(data, file.filename, heatmaps=heatmaps, preview=preview)


@api.get("/model", response_model=ModelInfo)
async def model(svc: Annotated[ModelService, Depends(service)]) -> dict[str, Any]:
    """The served model: classes, operating points, input contract, model card summary."""
    return model_info(svc.predictor, svc.settings)


@health.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about the model)."""
    return {"status": "ok"}


@health.get("/readyz", response_model=Ready, responses={503: {"model": ErrorBody}})
async def readyz(svc: Annotated[ModelService, Depends(service)]) -> dict[str, Any]:
    """The model is loaded: 200, else 503 ``not_ready``."""
    return {"status": "ready", "model": svc.predictor.name, "in_flight": svc.in_flight}


@page.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    """The web page (static files from the package, nothing fetched from the internet)."""
    html = resources.files("cxrad.serve").joinpath("static/index.html").read_text("utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})
