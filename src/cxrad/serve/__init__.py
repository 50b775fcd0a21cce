"""Serve stage (after predict, before cli): a REST API and a web page for one trained model.

``create_app(settings)`` builds the FastAPI app; ``cxrad serve`` runs it on uvicorn.
"""

from __future__ import annotations

from cxrad.serve.app import create_app
from cxrad.serve.settings import TOKEN_ENV, ServeSettings

__all__ = ["TOKEN_ENV", "ServeSettings", "create_app"]
