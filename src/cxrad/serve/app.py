"""Serve stage: ``create_app(settings)``, the FastAPI app; the model loads in its lifespan.

Example:
    >>> app = create_app(ServeSettings(model="default"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from cxrad import __version__
from cxrad.predict import Predictor
from cxrad.serve.engine import ModelService
from cxrad.serve.errors import install_error_handlers
from cxrad.serve.limits import MULTIPART_SLACK, BodyLimit
from cxrad.serve.routes import api, health, page
from cxrad.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


def _static_dir() -> str:
    from importlib import resources

    return str(resources.files("cxrad.serve").joinpath("static"))


def create_app(
    settings: ServeSettings | None = None,
    load: Callable[[ServeSettings], Predictor] | None = None,
) -> FastAPI:
    """The API and web page for one model.

    Args:
        settings: model, limits, token, CORS (default :class:`ServeSettings`).
        load: builds the predictor at startup (default ``Predictor.from_run(settings.model)``);
            tests pass a tiny model here.
    """
    settings = settings or ServeSettings()
    load = load or (
        lambda s: Predictor.from_run(
            s.model, backend=s.backend, batch_size=s.batch_size, gate=s.gate
        )
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predictor = load(settings)
        app.state.service = ModelService(predictor, settings)
        logger.info("serving %s (%d classes)", predictor.name, len(predictor.classes))
        try:
            yield
        finally:
            service, app.state.service = app.state.service, None
            service.close()

    app = FastAPI(
        title="cxrad",
        version=__version__,
        description="Chest X-ray findings, triage and heatmaps. Research use, not for diagnosis.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = None
    install_error_handlers(app)
    app.include_router(api)
    app.include_router(health)
    app.include_router(page)
    app.mount("/static", StaticFiles(directory=_static_dir()), name="static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + MULTIPART_SLACK)
    return app
