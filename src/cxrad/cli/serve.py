"""Stage 10, cli: ``cxrad serve``, the REST API and web page on uvicorn."""

from __future__ import annotations

import typer

from cxrad.cli.app import app, err_console


@app.command()
def serve(
    model: str = typer.Option(
        "default", "--model", "-m", help="run folder from `cxrad train`, or 'default' (shipped)"
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="interface to bind; 0.0.0.0 exposes it to the network"
    ),
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="TCP port"),
    workers: int = typer.Option(
        1, "--workers", "-w", min=1, help="worker processes (each loads its own model copy)"
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="CXRAD_TOKEN",
        show_envvar=True,
        help="require 'Authorization: Bearer TOKEN' on /v1/* (also read from $CXRAD_TOKEN)",
    ),
    cors_origin: list[str] = typer.Option(
        [],
        "--cors-origin",
        help="allow this browser origin through CORS (repeatable; off by default)",
    ),
    max_upload_mb: float = typer.Option(
        32.0, "--max-upload-mb", min=0.001, help="larger uploads get 413"
    ),
    max_pixels: int = typer.Option(
        8192 * 8192, "--max-pixels", min=1, help="images with more pixels get 422"
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", min=0.001, help="seconds of model work before a request gets 504"
    ),
    concurrency: int = typer.Option(
        2, "--concurrency", min=1, help="model calls that run at once per worker"
    ),
    gate: bool = typer.Option(
        True, "--gate/--no-gate", help="run the input gate before the model (default: on)"
    ),
    backend: str = typer.Option(
        "torch",
        "--backend",
        help="torch (eager) or onnx (ONNX Runtime, steadier on a busy CPU; Grad-CAM uses torch)",
    ),
    queue: int = typer.Option(
        8, "--queue", min=0, help="requests that may wait per worker; beyond that 503 + Retry-After"
    ),
) -> None:
    """Serve a model over HTTP: POST /v1/predict, GET /v1/model, /healthz, /readyz, and a web page at /.

    Open http://HOST:PORT/ in a browser, or read the API at http://HOST:PORT/docs. Research use only, not for diagnosis.
    """
    import uvicorn

    from cxrad.errors import PredictError
    from cxrad.models import resolve_run
    from cxrad.predict import BACKENDS
    from cxrad.serve import ServeSettings

    if backend not in BACKENDS:
        raise PredictError(f"unknown --backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    resolve_run(model)  # fail fast, with the fix, before uvicorn starts
    settings = ServeSettings(
        model=model,
        host=host,
        port=port,
        workers=workers,
        token=token or None,
        cors_origins=tuple(cors_origin),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        timeout_s=timeout,
        concurrency=concurrency,
        queue=queue,
        backend=backend,
        gate=gate,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        err_console.print(
            f"[yellow]warning:[/] serving on {host} without --token: anyone who can reach it can use it",
            highlight=False,
        )
    err_console.print(f"cxrad serve: http://{host}:{port}/ (model {model})", highlight=False)
    if workers == 1:
        from cxrad.serve import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
        return
    # Several workers import the app by name, so the settings travel through the environment.
    import os

    from cxrad.serve.factory import SETTINGS_ENV, dump_settings

    os.environ[SETTINGS_ENV] = dump_settings(settings)
    uvicorn.run(
        "cxrad.serve.factory:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
