"""Serve stage (after predict, before cli): the server's settings, one frozen dataclass the CLI and tests build."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TOKEN_ENV = "CXRAD_TOKEN"
"""Environment variable read for the bearer token when ``--token`` is not given."""


@dataclass(frozen=True)
class ServeSettings:
    """What the API serves and the limits it enforces.

    Attributes:
        model: run folder, or ``"default"`` (the shipped model); loaded once at startup.
        host: interface to bind (``127.0.0.1``: this machine only).
        port: TCP port.
        workers: uvicorn worker processes (each loads its own copy of the model).
        token: when set, ``/v1/*`` needs ``Authorization: Bearer <token>``.
        cors_origins: origins allowed by CORS; empty (the default) means CORS is off.
        max_upload_bytes: larger uploads are answered with 413.
        max_pixels: images with more pixels (width x height) are answered with 422.
        timeout_s: a request whose model work takes longer is answered with 504.
        concurrency: model calls that run at once (threads).
        queue: requests that may wait for a free slot; beyond that, 503 with ``Retry-After``.
        retry_after_s: the ``Retry-After`` value sent with 503.
        batch_size: images per forward pass (one upload is one image).
        backend: ``"torch"`` or ``"onnx"`` (ONNX Runtime for the forward pass; Grad-CAM
            always uses the torch model).
        gate: run the input gate before the model (a rejected upload is a 200 record with
            ``status: "rejected"`` and its reason); ``--no-gate`` turns it off.
    """

    model: str = "default"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    token: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    max_upload_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 8192 * 8192
    timeout_s: float = 30.0
    concurrency: int = 2
    queue: int = 8
    retry_after_s: int = 1
    batch_size: int = 1
    backend: str = "torch"
    gate: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.queue < 0 or self.workers < 1:
            raise ValueError("concurrency and workers must be >= 1 and queue >= 0")
        if self.max_upload_bytes < 1 or self.max_pixels < 1 or self.timeout_s <= 0:
            raise ValueError("max_upload_bytes, max_pixels and timeout_s must be positive")

    @staticmethod
    def token_from_env() -> str | None:
        """The token in ``$CXRAD_TOKEN``, or None when unset or empty."""
        return os.environ.get(TOKEN_ENV) or None
