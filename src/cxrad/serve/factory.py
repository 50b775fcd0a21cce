"""Serve stage: build the app from settings in an environment variable (uvicorn ``--workers``).

Uvicorn's worker processes import the app by name, so ``cxrad serve --workers N`` passes its
settings as JSON in ``$CXRAD_SERVE_SETTINGS`` and each worker calls :func:`app_from_env`.
"""

from __future__ import annotations

import dataclasses
import json
import os

from fastapi import FastAPI

from cxrad.serve.app import create_app
from cxrad.serve.settings import ServeSettings

SETTINGS_ENV = "CXRAD_SERVE_SETTINGS"


def dump_settings(settings: ServeSettings) -> str:
    """Settings as JSON."""
    return json.dumps(dataclasses.asdict(settings))


def load_settings(text: str) -> ServeSettings:
    """Settings back from :func:`dump_settings`."""
    raw = json.loads(text)
    raw["cors_origins"] = tuple(raw.get("cors_origins") or ())
    return ServeSettings(**raw)


def app_from_env() -> FastAPI:
    """The app for the settings in ``$CXRAD_SERVE_SETTINGS`` (defaults when unset)."""
    text = os.environ.get(SETTINGS_ENV)
    return create_app(load_settings(text) if text else ServeSettings())
